"""Cross-tenant operator access: the only way across tenants, and only with the tenant's opt-in.

A tenant's administrators turn operator access on or off; it is off until they decide. An
operator (the platform realm) reaches a tenant's data only through `operator_read` and
`operator_delete`, which in ONE transaction of that tenant: check the opt-in (locking the row
against a concurrent change, so turning it off takes effect for every read that starts after),
append the `operator.read` event (who, what, why, when) to the tenant's own chain, then read or
change. The data leaves only after that transaction committed: no audit row, no read. Without
the opt-in the attempt is refused with a motivated problem and recorded as denied.

Break-glass is a read with `break_glass=True`: it needs the opt-in like any other, a longer
reason, and lands in its own audit slice (`operator.break_glass_read`), in the tenant's chain
and also in the platform's, so that emergencies are counted apart on both sides.

Threat stopped: vendor staff browsing customer data unseen, or against the customer's choice.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from tenantguard.audit.chain import AuditEvent, Outcome
from tenantguard.audit.store import EVENT_COLUMNS, AuditRecord, append, event_of, record_action
from tenantguard.clock import Clock
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import OperatorAccessDenied, RequestInvalid

T = TypeVar("T")
MIN_BREAK_GLASS_REASON = 20
OPERATOR_ACTIONS = ("operator.read", "operator.break_glass_read", "operator.delete")


@dataclass(frozen=True, slots=True)
class AccessSetting:
    enabled: bool
    changed_at: datetime | None
    changed_by: str | None


def setting(conn: Connection, tenant_id: UUID, *, lock: bool = False) -> AccessSetting:
    row = conn.execute(
        "SELECT enabled, changed_at, changed_by FROM tenantguard.operator_access"
        " WHERE tenant_id = %s" + (" FOR SHARE" if lock else ""),
        (tenant_id,),
    ).fetchone()
    if row is None:
        return AccessSetting(False, None, None)  # off until the tenant decides
    return AccessSetting(bool(row[0]), row[1], str(row[2]))


def operator_events(conn: Connection, tenant_id: UUID, *, limit: int = 500) -> list[AuditEvent]:
    """The tenant's audit events of operator activity, newest first."""
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM tenantguard.audit_events WHERE tenant_id = %s"
        " AND action = ANY(%s) ORDER BY seq DESC LIMIT %s",
        (tenant_id, list(OPERATOR_ACTIONS), limit),
    ).fetchall()
    return [event_of(r) for r in rows]


def set_enabled(conn: Connection, ctx: TenantContext, enabled: bool, *, now: datetime) -> None:
    """The tenant's decision; effective for every operator request that starts after it."""
    actor = f"{ctx.principal.type}:{ctx.principal.id}"
    conn.execute(
        "INSERT INTO tenantguard.operator_access (tenant_id, enabled, changed_at, changed_by)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET enabled ="
        " EXCLUDED.enabled, changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by",
        (ctx.tenant_id, enabled, now, actor),
    )
    record_action(
        conn,
        ctx,
        action="operator_access.enable" if enabled else "operator_access.disable",
        target_type="tenant",
        target_id=str(ctx.tenant_id),
        now=now,
    )


class OperatorAccess:
    """Operators' reads and deletions of a tenant's data, each audited where it happens."""

    def __init__(self, db: Database, *, clock: Clock) -> None:
        self._db, self._clock = db, clock

    def _as_operator(self, operator: TenantContext, tenant_id: UUID) -> TenantContext:
        if operator.tenant_id != PLATFORM_TENANT_ID or operator.principal.type != "user":
            raise OperatorAccessDenied()  # only operators' sessions come here (routes check)
        return TenantContext(
            tenant_id,
            Principal("operator", operator.principal.id),
            frozenset(),
            operator.request_id,
        )

    def _platform_record(
        self, ctx: TenantContext, action: str, outcome: Outcome, payload: dict[str, Any]
    ) -> None:
        with self._db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            append(
                tx,
                tenant_id=PLATFORM_TENANT_ID,
                request_id=ctx.request_id,
                now=self._clock.now(),
                record=AuditRecord(
                    action=action,
                    outcome=outcome,
                    actor=ctx.principal,
                    reason="" if outcome == "success" else "operator_access_off",
                    target_type="tenant",
                    target_id=str(ctx.tenant_id),
                    payload=payload,
                ),
            )

    def _exists(self, tenant_id: UUID) -> bool:
        with self._db.system_transaction() as tx:
            row = tx.execute(
                "SELECT 1 FROM tenantguard.tenant_ids() WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        return row is not None and tenant_id != PLATFORM_TENANT_ID

    def _refuse(
        self, ctx: TenantContext, action: str, what: str, payload: dict[str, Any], *, known: bool
    ) -> OperatorAccessDenied:
        """Record a refusal (in the tenant's chain if the tenant exists, and in the platform's
        for an unknown tenant or a break-glass attempt) and return the one 403 to raise."""
        if known:
            with self._db.tenant_transaction(ctx.tenant_id) as tx:
                record_action(
                    tx,
                    ctx,
                    action=action,
                    outcome="denied",
                    reason="operator_access_off",
                    target_type="tenant_data",
                    target_id=what,
                    now=self._clock.now(),
                    payload=payload,
                )
        if not known or payload.get("break_glass"):
            self._platform_record(ctx, action, "denied", payload)
        return OperatorAccessDenied()

    def read(
        self,
        operator: TenantContext,
        tenant_id: UUID,
        *,
        what: str,
        reason: str,
        read: Callable[[Connection], T],
        break_glass: bool = False,
    ) -> T:
        """Run `read` in the tenant's transaction after the opt-in check and the audit event;
        its result is returned only once both committed (and, for break-glass, once the
        platform's own record of it committed too)."""
        reason = _reason(reason, minimum=MIN_BREAK_GLASS_REASON if break_glass else 1)
        ctx = self._as_operator(operator, tenant_id)
        action = "operator.break_glass_read" if break_glass else "operator.read"
        payload: dict[str, Any] = {"why": reason, "what": what, "break_glass": break_glass}
        if not self._exists(tenant_id):  # the same 403 as a tenant that did not opt in
            raise self._refuse(ctx, action, what, payload, known=False)
        with self._db.tenant_transaction(tenant_id) as tx:
            allowed = setting(tx, tenant_id, lock=True).enabled
            if allowed:
                record_action(
                    tx,
                    ctx,
                    action=action,
                    target_type="tenant_data",
                    target_id=what,
                    now=self._clock.now(),
                    payload=payload,
                )
                result = read(tx)
        if not allowed:
            raise self._refuse(ctx, action, what, payload, known=True)
        if break_glass:  # after the read committed: the platform counts only what happened
            self._platform_record(ctx, action, "success", payload)
        return result

    def delete(
        self,
        operator: TenantContext,
        tenant_id: UUID,
        *,
        what: str,
        reason: str,
        change: Callable[[Connection, TenantContext], None],
    ) -> None:
        """A destructive operation: refused, with the reason, unless the tenant opted in."""
        reason = _reason(reason, minimum=1)
        ctx = self._as_operator(operator, tenant_id)
        payload: dict[str, Any] = {"why": reason, "what": what}
        if not self._exists(tenant_id):
            raise self._refuse(ctx, "operator.delete", what, payload, known=False)
        with self._db.tenant_transaction(tenant_id) as tx:
            allowed = setting(tx, tenant_id, lock=True).enabled
            if allowed:
                change(tx, ctx)
                record_action(
                    tx,
                    ctx,
                    action="operator.delete",
                    target_type="tenant_data",
                    target_id=what,
                    now=self._clock.now(),
                    payload=payload,
                )
        if not allowed:
            raise self._refuse(ctx, "operator.delete", what, payload, known=True)


def _reason(reason: str, *, minimum: int) -> str:
    """The operator's reason as the tenant will read it: NFC, one line, visible characters
    only (no control or format characters: zero-width spaces, terminal escapes)."""
    text = " ".join(unicodedata.normalize("NFC", reason).split())
    invisible = any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") for c in text)
    visible = sum(1 for c in text if not c.isspace())
    if invisible or visible < minimum or len(text) > 500:
        raise RequestInvalid(
            f"Say why, in {minimum} to 500 visible characters: the tenant reads it in its audit."
        )
    return text
