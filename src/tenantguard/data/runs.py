"""Agent runs and their ordered events.

A run's events are numbered 1, 2, ... within the run (the run row is locked while one is
appended, so numbers have no gaps or duplicates); ids are random. Event data stays out of the
audit: events carry ids, types and sequence numbers only.

Every read and write takes the acting `TenantContext`: a credential bound to an agent
(`ctx.agent`) sees and touches that agent's runs only, here and nowhere else, so no route can
forget the scope. Another agent's run is `NotFound`, like another tenant's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.data.pagination import MAX_PAGE, decode_cursor, encode_cursor
from tenantguard.db.pool import Connection
from tenantguard.errors import CapabilityDenied, Conflict, NotFound

_RUN_COLUMNS = "id, agent, status, input, created_at, updated_at, capabilities, stopped_reason"


class RunStopped(Conflict):
    code = "run_stopped"
    title = "Run stopped"
    default_detail = "The run is stopped (its budget is exhausted): it can do nothing more."


_EVENT_COLUMNS = "id, run_id, seq, type, data, created_at"


@dataclass(frozen=True, slots=True)
class Run:
    id: UUID
    agent: str
    status: str
    input: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    capabilities: dict[str, Any] | None = None  # frozen at creation (tools.capabilities)
    stopped_reason: str | None = None  # why a stopped run stopped ("budget_exhausted:...")


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: UUID
    run_id: UUID
    seq: int
    type: str
    data: dict[str, Any]
    created_at: datetime


def _run(row: tuple[Any, ...] | None) -> Run:
    if row is None:
        raise NotFound()
    return Run(*row)


def create_run(
    conn: Connection,
    ctx: TenantContext,
    *,
    agent: str,
    input: dict[str, Any],
    now: datetime,
    capabilities: dict[str, Any] | None = None,
) -> Run:
    """A new run; `capabilities` (`RunCapabilities.as_json`) are frozen with it, never
    changed afterwards (no statement here or elsewhere updates them)."""
    if ctx.agent is not None and agent != ctx.agent:
        raise CapabilityDenied(
            "agent_binding", "This credential is bound to another agent: it starts its runs only."
        )
    run = _run(
        conn.execute(
            "INSERT INTO tenantguard.runs (tenant_id, id, agent, status, input, created_at,"
            " updated_at, capabilities) VALUES (%s, %s, %s, 'created', %s, %s, %s, %s)"
            f" RETURNING {_RUN_COLUMNS}",
            (
                ctx.tenant_id,
                uuid4(),
                agent,
                Jsonb(input),
                now,
                now,
                Jsonb(capabilities or {}),
            ),
        ).fetchone()
    )
    record_action(
        conn,
        ctx,
        action="run.create",
        target_type="run",
        target_id=str(run.id),
        now=now,
        payload={"agent": agent, "tools": sorted(capabilities or {})},
    )
    return run


def get_run(conn: Connection, ctx: TenantContext, run_id: UUID, *, lock: bool = False) -> Run:
    return _run(
        conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM tenantguard.runs WHERE tenant_id = %s AND id = %s"
            " AND (%s::text IS NULL OR agent = %s)" + (" FOR UPDATE" if lock else ""),
            (ctx.tenant_id, run_id, ctx.agent, ctx.agent),
        ).fetchone()
    )


def stop_run(
    conn: Connection, ctx: TenantContext, run_id: UUID, *, reason: str, now: datetime
) -> None:
    """Stop a run for good (once: a stopped run stays as it stopped), audited."""
    row = conn.execute(
        "UPDATE tenantguard.runs SET status = 'stopped', stopped_reason = %s, updated_at = %s"
        " WHERE tenant_id = %s AND id = %s AND status <> 'stopped' RETURNING id",
        (reason[:200], now, ctx.tenant_id, run_id),
    ).fetchone()
    if row is not None:
        record_action(
            conn,
            ctx,
            action="run.stop",
            target_type="run",
            target_id=str(run_id),
            now=now,
            reason=reason[:200],
        )


def list_runs(
    conn: Connection, ctx: TenantContext, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Run], str | None]:
    after = decode_cursor(cursor)
    limit = max(1, min(limit, MAX_PAGE))
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM tenantguard.runs WHERE tenant_id = %s"
        " AND (%s::text IS NULL OR agent = %s)"
        " AND (%s::timestamptz IS NULL OR (created_at, id) > (%s::timestamptz, %s::uuid))"
        " ORDER BY created_at, id LIMIT %s",
        (
            ctx.tenant_id,
            ctx.agent,
            ctx.agent,
            *((after[0], after[0], after[1]) if after else (None, None, None)),
            limit + 1,
        ),
    ).fetchall()
    runs = [_run(r) for r in rows[:limit]]
    more = len(rows) > limit
    return runs, encode_cursor(runs[-1].created_at, runs[-1].id) if more else None


def append_event(
    conn: Connection,
    ctx: TenantContext,
    run_id: UUID,
    *,
    type: str,
    data: dict[str, Any],
    now: datetime,
) -> RunEvent:
    if get_run(conn, ctx, run_id, lock=True).status == "stopped":
        raise RunStopped()
    row = conn.execute(
        "INSERT INTO tenantguard.run_events (tenant_id, run_id, seq, id, type, data, created_at)"
        " SELECT %s, %s, coalesce(max(seq), 0) + 1, %s, %s, %s, %s FROM tenantguard.run_events"
        f" WHERE tenant_id = %s AND run_id = %s RETURNING {_EVENT_COLUMNS}",
        (ctx.tenant_id, run_id, uuid4(), type, Jsonb(data), now, ctx.tenant_id, run_id),
    ).fetchone()
    if row is None:  # pragma: no cover - INSERT ... SELECT of an aggregate yields one row
        raise NotFound()
    event = RunEvent(*row)
    record_action(
        conn,
        ctx,
        action="run.event.append",
        target_type="run_event",
        target_id=str(event.id),
        now=now,
        payload={"run_id": str(run_id), "seq": event.seq, "type": type},
    )
    return event


def list_events(
    conn: Connection, ctx: TenantContext, run_id: UUID, *, after_seq: int = 0, limit: int = 100
) -> list[RunEvent]:
    get_run(conn, ctx, run_id)
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM tenantguard.run_events"
        " WHERE tenant_id = %s AND run_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (ctx.tenant_id, run_id, after_seq, max(1, min(limit, MAX_PAGE))),
    ).fetchall()
    return [RunEvent(*r) for r in rows]
