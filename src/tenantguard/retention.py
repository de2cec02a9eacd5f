"""Retention: how long each kind of a tenant's data is kept, and the expiry job that deletes
what is older.

    kind                 kept by default   what expires
    memory_versions      365 days          versions older than it (never an entry's current
                                           one), and entries deleted longer ago, whole
    run_events           365 days          run events older than it (never a run's newest:
                                           events are numbered after it)
    artifacts            forever           artifacts older than it (row, then sealed bytes)
    webhook_deliveries   30 days           finished deliveries (and their attempt logs)
    webhook_receipts     30 days           inbound webhooks kept after verification
    audit                forever           never expired by the job: the audit log is kept
                                           whole (its floor is the longest of all; see the
                                           README's limits)

Each tenant sets its own (`PUT /api/admin/retention`, days from 1 to 36,500, or null for
"until deleted"). The job also clears, for every tenant, what has expired by itself: kept
idempotency answers, OIDC and SAML sign-in states and magic links a day past their expiry,
SAML assertion ids a day past theirs (replay detection needs them only until then), and quota
windows that have ended. It works tenant by tenant in the tenant's own context, in batches of
`batch` rows per transaction (a long backlog never holds one long transaction), and audits
what it deleted (`retention.expired`, counts per kind) when it deleted anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from uuid import UUID

import structlog

from tenantguard.artifacts.stores import ObjectStore, object_key
from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import Principal, TenantContext
from tenantguard.data.tenants import tenant_ids
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import RequestInvalid

_log = structlog.get_logger("tenantguard.retention")
_JOB = Principal("system", "retention")
DEFAULTS: Mapping[str, int | None] = MappingProxyType(
    {
        "memory_versions": 365,
        "run_events": 365,
        "artifacts": None,
        "webhook_deliveries": 30,
        "webhook_receipts": 30,
    }
)
KINDS = tuple(DEFAULTS)
MAX_DAYS = 36_500
SIGN_IN_GRACE = timedelta(days=1)  # expired sign-in states kept a day, for investigations


class RetentionPolicyInvalid(RequestInvalid):
    code = "retention_policy_invalid"
    title = "Retention policy invalid"
    default_detail = "A retention policy names known kinds, each kept 1 to 36500 days or null."


def check_policy(policy: Mapping[str, object]) -> dict[str, int | None]:
    """A tenant's policy as given: known kinds, whole days in bounds, or null (kept)."""
    checked: dict[str, int | None] = {}
    for kind, days in policy.items():
        if kind not in DEFAULTS:
            raise RetentionPolicyInvalid(
                f"Unknown kind {kind!r}; the kinds are {', '.join(KINDS)}."
            )
        if days is not None and (
            not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS
        ):
            raise RetentionPolicyInvalid()
        checked[kind] = days
    return checked


def effective(stored: Mapping[str, int | None]) -> dict[str, int | None]:
    """Every kind's retention: the tenant's where it set one, the default elsewhere."""
    return {kind: stored.get(kind, default) for kind, default in DEFAULTS.items()}


def read_policy(tx: Connection, tenant_id: UUID) -> dict[str, int | None]:
    rows = tx.execute(
        "SELECT kind, days FROM tenantguard.retention_policies WHERE tenant_id = %s", (tenant_id,)
    ).fetchall()
    return {str(k): (None if d is None else int(d)) for k, d in rows}


def write_policy(
    tx: Connection, ctx: TenantContext, policy: Mapping[str, object], *, now: datetime
) -> dict[str, int | None]:
    """Replace the tenant's own settings with `policy` (kinds left out: back to the default)."""
    checked = check_policy(policy)
    tx.execute("DELETE FROM tenantguard.retention_policies WHERE tenant_id = %s", (ctx.tenant_id,))
    for kind, days in checked.items():
        tx.execute(
            "INSERT INTO tenantguard.retention_policies (tenant_id, kind, days, updated_at)"
            " VALUES (%s, %s, %s, %s)",
            (ctx.tenant_id, kind, days, now),
        )
    record_action(
        tx,
        ctx,
        action="retention.policy_set",
        target_type="retention_policy",
        target_id=str(ctx.tenant_id),
        now=now,
        payload={"policy": {k: checked[k] for k in sorted(checked)}},
    )
    return effective(checked)


# Deletions, each of at most `batch` rows, each in the tenant's context: (name, SQL). The SQL
# takes (tenant_id, cutoff, batch) and returns the rows it deleted.
_BATCHED: dict[str, str] = {
    "memory_versions": (
        "DELETE FROM tenantguard.memory_versions WHERE ctid IN (SELECT v.ctid"
        " FROM tenantguard.memory_versions v JOIN tenantguard.memory_entries e"
        " ON e.tenant_id = v.tenant_id AND e.id = v.entry_id WHERE v.tenant_id = %(t)s"
        " AND v.changed_at < %(cutoff)s AND v.version < e.version AND e.deleted_at IS NULL"
        " LIMIT %(batch)s) RETURNING 1"
    ),
    "run_events": (  # never a run's newest event: the next one is numbered after it
        "DELETE FROM tenantguard.run_events WHERE ctid IN (SELECT e.ctid FROM"
        " tenantguard.run_events e WHERE e.tenant_id = %(t)s AND e.created_at < %(cutoff)s"
        " AND e.seq < (SELECT max(n.seq) FROM tenantguard.run_events n"
        "  WHERE n.tenant_id = e.tenant_id AND n.run_id = e.run_id) LIMIT %(batch)s) RETURNING 1"
    ),
    "webhook_receipts": (
        "DELETE FROM tenantguard.webhook_receipts WHERE ctid IN (SELECT ctid FROM"
        " tenantguard.webhook_receipts WHERE tenant_id = %(t)s AND received_at < %(cutoff)s"
        " LIMIT %(batch)s) RETURNING 1"
    ),
}


@dataclass
class Expiry:
    db: Database
    store: ObjectStore
    clock: Clock
    batch: int = 500
    last: dict[UUID, dict[str, int]] = field(default_factory=dict)  # per tenant, the last run

    def run(self) -> dict[str, int]:
        """One pass over every tenant; the totals deleted, per kind."""
        totals: dict[str, int] = {}
        for tenant_id in tenant_ids(self.db):
            try:
                done = self.run_tenant(tenant_id)
            except Exception:  # noqa: BLE001 (one tenant's failure never starves the others)
                _log.exception("retention.tenant_failed", tenant_id=str(tenant_id))
                continue
            for kind, n in done.items():
                totals[kind] = totals.get(kind, 0) + n
        return totals

    def run_tenant(self, tenant_id: UUID) -> dict[str, int]:
        now = self.clock.now()
        with self.db.tenant_transaction(tenant_id) as tx:
            policy = effective(read_policy(tx, tenant_id))
        deleted: dict[str, int] = {}
        for kind, days in policy.items():
            if days is not None:
                n = self._expire(tenant_id, kind, now - timedelta(days=days))
                if n:
                    deleted[kind] = n
        for kind, n in self._housekeeping(tenant_id, now).items():
            if n:
                deleted[kind] = n
        if deleted:
            ctx = TenantContext(tenant_id, _JOB, frozenset(), "retention")
            with self.db.tenant_transaction(tenant_id) as tx:
                record_action(
                    tx,
                    ctx,
                    action="retention.expired",
                    target_type="tenant",
                    target_id=str(tenant_id),
                    now=now,
                    payload={"deleted": deleted, "policy": policy},
                )
            _log.info("retention.expired", tenant_id=str(tenant_id), deleted=deleted)
        self.last[tenant_id] = deleted
        return deleted

    def _repeat(self, tenant_id: UUID, sql: str, params: dict[str, object]) -> int:
        total = 0
        while True:
            with self.db.tenant_transaction(tenant_id) as tx:
                n = len(tx.execute(sql, {**params, "t": tenant_id, "batch": self.batch}).fetchall())
            total += n
            if n < self.batch:
                return total

    def _expire(self, tenant_id: UUID, kind: str, cutoff: datetime) -> int:
        if kind in _BATCHED:
            n = self._repeat(tenant_id, _BATCHED[kind], {"cutoff": cutoff})
            if kind == "memory_versions":
                n += self._deleted_entries(tenant_id, cutoff)
            return n
        if kind == "webhook_deliveries":
            return self._deliveries(tenant_id, cutoff)
        if kind == "artifacts":
            return self._artifacts(tenant_id, cutoff)
        raise AssertionError(kind)  # pragma: no cover - KINDS and the branches agree

    def _deleted_entries(self, tenant_id: UUID, cutoff: datetime) -> int:
        """Entries deleted before the cutoff, with every version of them."""
        return self._with_children(
            tenant_id, cutoff, ("memory_entries", "deleted_at"), ("memory_versions", "entry_id")
        )

    def _deliveries(self, tenant_id: UUID, cutoff: datetime) -> int:
        """Deliveries finished before the cutoff, with their attempt logs."""
        return self._with_children(
            tenant_id,
            cutoff,
            ("webhook_deliveries", "finished_at"),
            ("webhook_attempts", "delivery_id"),
        )

    def _with_children(
        self,
        tenant_id: UUID,
        cutoff: datetime,
        parent: tuple[str, str],
        child: tuple[str, str],
    ) -> int:
        """Rows of `parent` (table, time column) older than the cutoff, each batch with the
        rows of `child` (table, column naming the parent's id) in the same transaction."""
        (table, column), (child_table, child_key) = parent, child
        # The names are the constants above, never input.
        select = (
            f"SELECT id FROM tenantguard.{table} WHERE tenant_id = %s AND {column} < %s LIMIT %s"
        )
        total = 0
        while True:
            with self.db.tenant_transaction(tenant_id) as tx:
                ids = [r[0] for r in tx.execute(select, (tenant_id, cutoff, self.batch))]
                if ids:
                    tx.execute(
                        f"DELETE FROM tenantguard.{child_table} WHERE tenant_id = %s"
                        f" AND {child_key} = ANY (%s)",
                        (tenant_id, ids),
                    )
                    tx.execute(
                        f"DELETE FROM tenantguard.{table} WHERE tenant_id = %s AND id = ANY (%s)",
                        (tenant_id, ids),
                    )
            total += len(ids)
            if len(ids) < self.batch:
                return total

    def _artifacts(self, tenant_id: UUID, cutoff: datetime) -> int:
        """The sealed bytes first, then the rows: a failure in between leaves a row whose bytes
        are gone (its download is a 404), which the next pass deletes; never bytes no row
        points to."""
        total = 0
        while True:
            with self.db.tenant_transaction(tenant_id) as tx:
                ids = [
                    r[0]
                    for r in tx.execute(
                        "SELECT id FROM tenantguard.artifacts WHERE tenant_id = %s"
                        " AND created_at < %s ORDER BY created_at, id LIMIT %s",
                        (tenant_id, cutoff, self.batch),
                    ).fetchall()
                ]
            for artifact_id in ids:
                self.store.delete(object_key(tenant_id, artifact_id))
            if ids:
                with self.db.tenant_transaction(tenant_id) as tx:
                    tx.execute(
                        "DELETE FROM tenantguard.artifacts WHERE tenant_id = %s AND id = ANY (%s)",
                        (tenant_id, ids),
                    )
            total += len(ids)
            if len(ids) < self.batch:
                return total

    def _housekeeping(self, tenant_id: UUID, now: datetime) -> dict[str, int]:
        """What expired by itself: counts per table."""
        stale = now - SIGN_IN_GRACE
        statements = {  # name: (table, the time column, expired at or before)
            "idempotency_keys": ("idempotency_keys", "expires_at", now),
            "quota_windows": ("quota_state", "expires_at", now),
            # Kept a day past their expiry: an assertion is accepted a little after it (leeway).
            "saml_assertions": ("saml_assertions", "expires_at", stale),
            "saml_logins": ("saml_logins", "expires_at", stale),
            "oidc_logins": ("oidc_logins", "expires_at", stale),
            "magic_links": ("magic_links", "expires_at", stale),
        }
        counts: dict[str, int] = {}
        for name, (table, column, at) in statements.items():
            sql = (  # names from the constant above, never from input
                f"DELETE FROM tenantguard.{table} WHERE ctid IN (SELECT ctid FROM"
                f" tenantguard.{table} WHERE tenant_id = %(t)s AND {column} <= %(at)s"
                " LIMIT %(batch)s) RETURNING 1"
            )
            counts[name] = self._repeat(tenant_id, sql, {"at": at})
        return counts
