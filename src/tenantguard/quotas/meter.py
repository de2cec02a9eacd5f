"""The one way the gateway counts: `Meter.charge` applies the platform's limits and the
tenant's own to a consumption, through the configured store, and turns a refusal into the
typed problem (429 with `Retry-After`; a run's budget: `BudgetExhausted`).

A tenant's policy is read from the database and kept for `POLICY_TTL` seconds (a change in
this process applies at once; in another replica within the TTL). An unreadable stored policy
refuses (fails closed), it is never read as "no limits".
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from uuid import UUID

from tenantguard.clock import Clock
from tenantguard.data.quotas import get_policy
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import BudgetExhausted, QuotaExceeded, RateLimited
from tenantguard.quotas.core import (
    Check,
    Limit,
    Metric,
    QuotaPolicyInvalid,
    Subject,
    Verdict,
    checks_for,
    micros,
)
from tenantguard.quotas.stores import QuotaStore, QuotaStoreUnavailable

POLICY_TTL = 5.0
_MAX_CACHED = 10_000


def refusal(verdict: Verdict) -> RateLimited:
    """The problem a refused verdict answers with: which kind of limit, and when to retry."""
    check = verdict.refused_by
    assert check is not None  # noqa: S101 (only refused verdicts get here)
    limit = check.limit
    what = f"{limit.metric.replace('_', ' ')} per {limit.per} for the {limit.scope}"
    wait = None if verdict.retry_after is None else math.ceil(verdict.retry_after / 1_000_000)
    if limit.per == "run":
        return BudgetExhausted(f"The run's budget of {limit.metric.replace('_', ' ')} is used up.")
    if wait is None:
        return QuotaExceeded(f"This costs more than the whole limit of {what}.")
    if limit.is_rate:
        return RateLimited(f"The limit of {what} is reached; retry later.", retry_after=wait)
    return QuotaExceeded(f"The quota of {what} is used up.", retry_after=wait)


class Meter:
    def __init__(
        self,
        store: QuotaStore,
        platform: tuple[Limit, ...],
        *,
        db: Database,
        clock: Clock,
        read_policy: Callable[[Connection, UUID], tuple[Limit, ...]] | None = None,
    ) -> None:
        self.store = store
        self.platform = platform
        self._db = db
        self._clock = clock
        self._read = read_policy or read_tenant_policy
        self._lock = threading.Lock()
        self._cache: OrderedDict[UUID, tuple[float, tuple[Limit, ...]]] = OrderedDict()

    def limits(self, tenant_id: UUID, conn: Connection | None = None) -> tuple[Limit, ...]:
        """The tenant's own limits (read in `conn`, the caller's transaction, if given)."""
        now = time.monotonic()
        with self._lock:
            held = self._cache.get(tenant_id)
            if held is not None and held[0] > now:
                return held[1]
        if conn is not None:
            own = self._read(conn, tenant_id)
        else:
            with self._db.tenant_transaction(tenant_id) as tx:
                own = self._read(tx, tenant_id)
        with self._lock:
            self._cache[tenant_id] = (now + POLICY_TTL, own)
            self._cache.move_to_end(tenant_id)
            while len(self._cache) > _MAX_CACHED:
                self._cache.popitem(last=False)
        return own

    def forget(self, tenant_id: UUID) -> None:
        """The tenant's policy changed: read it afresh next time."""
        with self._lock:
            self._cache.pop(tenant_id, None)

    def checks(
        self, tenant_id: UUID, metric: Metric, subject: Subject, conn: Connection | None = None
    ) -> tuple[Check, ...]:
        """The checks a consumption of `metric` by `subject` would pass now."""
        now = micros(self._clock.now())
        return self._checks(tenant_id, metric, subject, now=now, conn=conn, own_limits=True)

    def _checks(
        self,
        tenant_id: UUID,
        metric: Metric,
        subject: Subject,
        *,
        now: int,
        conn: Connection | None,
        own_limits: bool,
    ) -> tuple[Check, ...]:
        own = self.limits(tenant_id, conn) if own_limits else ()
        return checks_for((*self.platform, *own), metric, subject, now)

    def charge(
        self,
        tenant_id: UUID,
        metric: Metric,
        subject: Subject,
        *,
        cost: int = 1,
        force: bool = False,
        conn: Connection | None = None,
        own_limits: bool = True,
    ) -> Verdict:
        """Count `cost` units; raise the typed 429 if a limit refuses (nothing is charged
        then). A forced charge always counts and returns the budgets it exhausted. `conn`:
        the caller's transaction of the tenant (see `QuotaStore.consume`). Without
        `own_limits`, only the platform's limits apply (a tenant's own limits never lock it
        out of changing them)."""
        now = micros(self._clock.now())
        checks = self._checks(tenant_id, metric, subject, now=now, conn=conn, own_limits=own_limits)
        verdict = self.store.consume(tenant_id, checks, cost=cost, now=now, force=force, conn=conn)
        if not verdict.allowed:
            raise refusal(verdict)
        return verdict


def read_tenant_policy(conn: Connection, tenant_id: UUID) -> tuple[Limit, ...]:
    """The tenant's own limits; a stored policy that no longer parses refuses everything of
    the tenant's (503) rather than reading as no limits."""
    try:
        return get_policy(conn, tenant_id)[0]
    except QuotaPolicyInvalid as unreadable:
        raise QuotaStoreUnavailable("The tenant's quota policy cannot be read.") from unreadable
