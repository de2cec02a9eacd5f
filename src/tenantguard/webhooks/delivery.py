"""The outbound webhook worker: due deliveries claimed, signed, sent through the egress guard,
and their outcome recorded. The adapter around `schedule` (when to retry) and `signing`.

One pass (`Deliverer.run`) asks which tenants have a delivery due (ids only), then, for each,
in the tenant's own context:

1. **claims** up to `batch` due deliveries (`FOR UPDATE SKIP LOCKED`, so two workers never take
   the same one) by setting a lease, and reads what sending needs (the endpoint's URL and live
   secrets, the body, the tenant's egress policy); the claim commits before anything is sent:
   no transaction is held while a receiver answers;
2. **sends** each one: `webhook-id` (the same on every attempt), `webhook-timestamp` (now),
   `webhook-signature` (every live secret: both during a rotation's overlap), the body as
   queued; only through the egress guard under the tenant's egress policy (the URL is the
   tenant's input, and its name is resolved and checked now), redirects not followed, a 2xx
   within `timeout` seconds is delivered;
3. **records** the attempt in the delivery log, and the delivery as delivered, failed for good
   (after the schedule's last attempt, or when its endpoint is gone), or due again after the
   schedule's jittered delay; a final outcome is audited.

A worker that dies between sending and recording leaves a lease that runs out: the delivery
is sent again with the same `webhook-id`, which receivers deduplicate (at least once). The
lease is the claim's fence: a worker that wakes after its lease was taken over records
nothing, so a re-run never writes an attempt or an outcome twice.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from uuid import UUID

import httpx
import structlog

from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import egress as egress_store
from tenantguard.data import webhook_endpoints
from tenantguard.db.pool import Database
from tenantguard.egress.check import EgressDenied, EgressPolicy
from tenantguard.egress.transport import egress_client
from tenantguard.errors import TenantGuardError
from tenantguard.webhooks.schedule import Backoff
from tenantguard.webhooks.signing import signature_header

_log = structlog.get_logger("tenantguard.webhooks")
_WORKER = Principal("system", "webhook-deliveries")
MAX_RESPONSE_BYTES = 65_536  # a receiver's answer is read, bounded, and dropped


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker holds the lease of, with what sending it needs."""

    tenant_id: UUID
    id: UUID
    message_id: str
    event_type: str
    attempt: int  # the number this attempt will have
    url: str | None  # None: the endpoint is gone
    keys: tuple[bytes, ...]
    body: bytes
    policy: EgressPolicy
    lease_until: datetime  # the claim's fence: a record under a newer claim's lease is void


@dataclass(frozen=True, slots=True)
class Outcome:
    started_at: datetime
    status_code: int | None
    error: str  # "" when delivered
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class Deliverer:
    db: Database
    keyring: Keyring
    clock: Clock
    egress: EgressPolicy  # the platform's base; each tenant's narrows it
    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.SystemRandom)
    batch: int = 20
    lease: timedelta = timedelta(seconds=120)
    timeout: float = 10.0

    def run(self) -> int:
        """One pass over every tenant with a delivery due; the number of attempts made."""
        with self.db.system_transaction() as tx:
            rows = tx.execute(
                "SELECT tenant_id FROM tenantguard.webhook_due_tenants(%s)", (self.clock.now(),)
            ).fetchall()
        made = 0
        for (tenant_id,) in rows:
            try:
                made += self.run_tenant(tenant_id)
            except Exception:  # noqa: BLE001 (one tenant's failure never starves the others)
                _log.exception("webhook.pass_failed", tenant_id=str(tenant_id))
        return made

    def run_tenant(self, tenant_id: UUID) -> int:
        """Send what is due of one tenant's; the number of attempts made. A delivery whose
        lease would run out before its send could time out is left alone: another worker may
        take it once the lease ends, and must be the only one to send it."""
        made = 0
        for delivery in self.claim(tenant_id):
            if self.clock.now() + timedelta(seconds=self.timeout + 1) >= delivery.lease_until:
                _log.info("webhook.lease_short", delivery_id=str(delivery.id))
                continue
            self.record(delivery, self.send(delivery))
            made += 1
        return made

    def claim(self, tenant_id: UUID) -> list[Claimed]:
        now = self.clock.now()
        ctx = TenantContext(tenant_id, _WORKER, frozenset(), "webhook-deliveries")
        claimed: list[Claimed] = []
        with self.db.tenant_transaction(tenant_id) as tx:
            rows = tx.execute(
                "SELECT d.id, d.endpoint_id, d.event_type, d.body, d.attempts, e.url,"
                " e.deleted_at IS NOT NULL FROM tenantguard.webhook_deliveries d"
                " JOIN tenantguard.webhook_endpoints e ON e.tenant_id = d.tenant_id"
                " AND e.id = d.endpoint_id WHERE d.tenant_id = %s AND d.status = 'pending'"
                " AND d.next_attempt_at <= %s AND (d.lease_until IS NULL OR d.lease_until <= %s)"
                " ORDER BY d.next_attempt_at, d.id LIMIT %s FOR UPDATE OF d SKIP LOCKED",
                (tenant_id, now, now, self.batch),
            ).fetchall()
            if not rows:
                return []
            lease_until = now + self.lease
            tx.execute(
                "UPDATE tenantguard.webhook_deliveries SET lease_until = %s WHERE tenant_id = %s"
                " AND id = ANY (%s)",
                (lease_until, tenant_id, [r[0] for r in rows]),
            )
            policy = egress_store.policy_for(tx, tenant_id, self.egress)
            keys: dict[UUID, tuple[bytes, ...]] = {}
            for delivery_id, endpoint_id, event_type, sealed, attempts, url, gone in rows:
                if endpoint_id not in keys and not gone:
                    found = webhook_endpoints.signing_keys(
                        tx, ctx, self.keyring, endpoint_id, now=now
                    )
                    keys[endpoint_id] = tuple(found)
                body = webhook_endpoints.DELIVERY_BODY.open(
                    self.keyring, tx, tenant_id, (delivery_id,), bytes(sealed)
                )
                claimed.append(
                    Claimed(
                        tenant_id,
                        delivery_id,
                        f"msg_{delivery_id.hex}",
                        event_type,
                        int(attempts) + 1,
                        None if gone else str(url),
                        keys.get(endpoint_id, ()),
                        body,
                        policy,
                        lease_until,
                    )
                )
        return claimed

    def send(self, claimed: Claimed) -> Outcome:
        started = self.clock.now()
        clock = time.monotonic()
        if claimed.url is None:
            return Outcome(started, None, "endpoint_deleted", 0)
        stamp = int(started.timestamp())
        headers = {
            "webhook-id": claimed.message_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature_header(
                list(claimed.keys), claimed.message_id, stamp, claimed.body
            ),
            "content-type": "application/json",
            "user-agent": "tenantguard-webhooks",
        }
        bounded = replace(
            claimed.policy, timeout_seconds=self.timeout, max_response_bytes=MAX_RESPONSE_BYTES
        )
        status: int | None = None
        error = ""
        try:
            with egress_client(bounded, follow_redirects=False) as client:
                response = client.post(claimed.url, content=claimed.body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"status:{status}"
        except EgressDenied as refused:
            error = f"egress:{refused.rule}"
        except (httpx.HTTPError, TenantGuardError) as exc:
            error = f"unreachable:{type(exc).__name__}"[:200]
        elapsed = int((time.monotonic() - clock) * 1000)
        return Outcome(started, status, error, elapsed)

    def record(self, claimed: Claimed, outcome: Outcome) -> None:
        now = self.clock.now()
        ctx = TenantContext(claimed.tenant_id, _WORKER, frozenset(), "webhook-deliveries")
        delay = None if claimed.url is None else self.backoff.delay(claimed.attempt, self.rng)
        if outcome.delivered:
            status, next_at = "delivered", None
        elif delay is None:
            status, next_at = "failed", None
        else:
            status, next_at = "pending", now + timedelta(seconds=delay)
        with self.db.tenant_transaction(claimed.tenant_id) as tx:
            # Only under this claim's own lease: a worker that outlived its lease (another took
            # the delivery since) records nothing, so no attempt or outcome is written twice.
            held = tx.execute(
                "UPDATE tenantguard.webhook_deliveries SET status = %s, attempts = %s,"
                " next_attempt_at = %s, lease_until = NULL, finished_at = %s"
                " WHERE tenant_id = %s AND id = %s AND status = 'pending' AND lease_until = %s"
                " RETURNING id",
                (
                    status,
                    claimed.attempt,
                    next_at,
                    None if status == "pending" else now,
                    claimed.tenant_id,
                    claimed.id,
                    claimed.lease_until,
                ),
            ).fetchone()
            if held is None:
                _log.warning(
                    "webhook.lease_lost",
                    tenant_id=str(claimed.tenant_id),
                    delivery_id=str(claimed.id),
                    attempt=claimed.attempt,
                )
                return
            tx.execute(
                "INSERT INTO tenantguard.webhook_attempts (tenant_id, delivery_id, attempt,"
                " started_at, status_code, error, duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",  # logged already: the outcome still advances
                (
                    claimed.tenant_id,
                    claimed.id,
                    claimed.attempt,
                    outcome.started_at,
                    outcome.status_code,
                    outcome.error,
                    outcome.duration_ms,
                ),
            )
            if status != "pending":
                record_action(
                    tx,
                    ctx,
                    action=f"webhook.{status}",
                    target_type="webhook_delivery",
                    target_id=str(claimed.id),
                    now=now,
                    outcome="success" if status == "delivered" else "failure",
                    reason=outcome.error,
                    payload={"event_type": claimed.event_type, "attempts": claimed.attempt},
                )
        _log.info(
            "webhook.attempt",
            tenant_id=str(claimed.tenant_id),
            delivery_id=str(claimed.id),
            attempt=claimed.attempt,
            status=status,
            error=outcome.error,
        )
