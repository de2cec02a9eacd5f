"""Appending and reading audit events in PostgreSQL, inside the caller's tenant transaction.

`append` runs in the same transaction as the change it records: both commit or neither does,
and a failed audit write fails the action (`AuditUnavailable`). Appends of one tenant are
serialised by a transaction-scoped advisory lock so that `seq` has no gaps and the chain no
forks. Call `append` as the last write of a transaction: the lock is then held only for the
insert and the commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg

from tenantguard.audit.chain import (
    FORMAT_VERSION,
    GENESIS,
    AuditEvent,
    ChainVerdict,
    Outcome,
    canonical_json,
    encode_event,
    hash_event,
    link,
    verify_chain,
)
from tenantguard.authz import POLICY_VERSION
from tenantguard.context import Principal, TenantContext
from tenantguard.db.pool import ACTIVE_SCREEN, Connection
from tenantguard.errors import AuditUnavailable
from tenantguard.pii.channels import default_audit_screen
from tenantguard.redaction import redact_value

EVENT_COLUMNS = (
    "tenant_id, seq, id, occurred_at, actor_type, actor_id, action, target_type, target_id,"
    " outcome, reason, request_id, payload, event_hash, chain_hash, format, policy_version,"
    " source"
)
_COLUMNS = EVENT_COLUMNS


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What a control wants recorded; `append` adds the tenant, sequence, time and hashes."""

    action: str
    outcome: Outcome
    actor: Principal
    target_type: str = ""
    target_id: str = ""
    reason: str = ""
    payload: Mapping[str, Any] | None = None
    policy_version: str = POLICY_VERSION  # the authorisation matrix in force, by default


def append(
    conn: Connection, *, tenant_id: UUID, record: AuditRecord, request_id: str, now: datetime
) -> AuditEvent:
    """Append `record` to `tenant_id`'s chain in `conn`'s transaction. Fails closed."""
    try:
        # Secrets first (keys, tokens: always masked), then personal data by the tenant's
        # policy for the audit channel (pii.channels): what is hashed is what was screened.
        screen = ACTIVE_SCREEN.get() or default_audit_screen
        texts, screened = screen(
            conn,
            tenant_id,
            {
                "reason": record.reason,
                "target_id": record.target_id,
                "actor_id": record.actor.id,
                "request_id": request_id,
            },
            redact_value(dict(record.payload or {})),
        )
        payload = canonical_json(screened)
        # The lock (with which service writes: the connection's application_name) and the
        # head, pipelined in one round trip. The server runs them in order, and the head's
        # statement takes its snapshot when it starts, after the lock is held: it sees the
        # last committed append.
        with conn.pipeline():
            locking = conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0)),"
                " current_setting('application_name')",
                (f"tenantguard.audit:{tenant_id}",),
            )
            heading = conn.execute(
                "SELECT seq, chain_hash FROM tenantguard.audit_events WHERE tenant_id = %s"
                " ORDER BY seq DESC LIMIT 1",
                (tenant_id,),
            )
        locked, head = locking.fetchone(), heading.fetchone()
        source = str(locked[1]) if locked is not None else ""
        seq, previous = (int(head[0]) + 1, bytes(head[1])) if head else (0, GENESIS)
        fields: dict[str, Any] = {
            "tenant_id": tenant_id,
            "seq": seq,
            "id": uuid4(),
            "occurred_at": now,
            "actor_type": record.actor.type,
            "actor_id": texts["actor_id"],
            "action": record.action,
            "target_type": record.target_type,
            "target_id": texts["target_id"],
            "outcome": record.outcome,
            "reason": texts["reason"],
            "request_id": texts["request_id"],
            "payload": payload,
            "format": FORMAT_VERSION,
            "policy_version": record.policy_version,
            "source": source,
        }
        event_hash = hash_event(encode_event(**fields))
        event = AuditEvent(**fields, event_hash=event_hash, chain_hash=link(previous, event_hash))
        conn.execute(
            f"INSERT INTO tenantguard.audit_events ({_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            _row(event),
        )
    except (psycopg.Error, TypeError, ValueError) as exc:
        raise AuditUnavailable() from exc
    return event


def record_action(
    conn: Connection,
    ctx: TenantContext,
    *,
    action: str,
    target_type: str,
    target_id: str,
    now: datetime,
    payload: Mapping[str, Any] | None = None,
    outcome: Outcome = "success",
    reason: str = "",
) -> AuditEvent:
    """`append` for an action taken by `ctx`'s principal in `ctx`'s tenant."""
    return append(
        conn,
        tenant_id=ctx.tenant_id,
        request_id=ctx.request_id,
        now=now,
        record=AuditRecord(
            action=action,
            outcome=outcome,
            actor=ctx.principal,
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            payload=payload,
        ),
    )


def _row(event: AuditEvent) -> tuple[object, ...]:
    return (
        event.tenant_id,
        event.seq,
        event.id,
        event.occurred_at,
        event.actor_type,
        event.actor_id,
        event.action,
        event.target_type,
        event.target_id,
        event.outcome,
        event.reason,
        event.request_id,
        event.payload,
        event.event_hash,
        event.chain_hash,
        event.format,
        event.policy_version,
        event.source,
    )


def event_of(row: tuple[Any, ...]) -> AuditEvent:
    """An event from a row of `EVENT_COLUMNS`."""
    values = list(row)
    values[13], values[14] = bytes(values[13]), bytes(values[14])
    return AuditEvent(*values)


def list_events(
    conn: Connection, *, tenant_id: UUID, after_seq: int = -1, limit: int = 100
) -> list[AuditEvent]:
    """The tenant's events after `after_seq`, in order (RLS refuses any other tenant's)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.audit_events WHERE tenant_id = %s AND seq > %s"
        " ORDER BY seq LIMIT %s",
        (tenant_id, after_seq, limit),
    ).fetchall()
    return [event_of(r) for r in rows]


def iter_events(conn: Connection, *, tenant_id: UUID, batch: int = 1000) -> Iterator[AuditEvent]:
    """Every event of `tenant_id`, in `seq` order, in batches."""
    after = -1
    while True:
        events = list_events(conn, tenant_id=tenant_id, after_seq=after, limit=batch)
        yield from events
        if len(events) < batch:
            return
        after = events[-1].seq


def verify_tenant(conn: Connection, *, tenant_id: UUID) -> ChainVerdict:
    """Recompute and check the whole chain of `tenant_id`."""
    return verify_chain(iter_events(conn, tenant_id=tenant_id))
