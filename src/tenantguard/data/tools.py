"""Agents, the tenant's tool policy, and approvals, in the tenant's transaction.

An agent and the tenant's policy each hold tool grants (`tools.capabilities.parse_grants`
checks them: the agent's layer cannot pre-approve). A run freezes `freeze(agent, tenant,
registry)` when it starts (`data.runs.create_run`). An approval is a pending call of a tool
that needs one, bound to the call's hash; a person decides it; an allowed call spends it, once
(`spend`, a compare-and-set), so it cannot be replayed.

Threat stopped: a run acting beyond what its agent and its tenant granted; an approval reused
for another call, or spent twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.db.pool import Connection
from tenantguard.errors import Conflict, NotFound
from tenantguard.tools.capabilities import RunCapabilities, ToolGrant, freeze, parse_grants
from tenantguard.tools.registry import ToolRegistry


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    tools: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Approval:
    id: UUID
    run_id: UUID
    tool: str
    call_hash: str
    arguments: dict[str, Any]
    status: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None


_APPROVAL_COLUMNS = (
    "id, run_id, tool, call_hash, arguments, status, requested_at, decided_by, decided_at"
)


def put_agent(
    conn: Connection, ctx: TenantContext, name: str, tools: Mapping[str, Any], *, now: datetime
) -> Agent:
    parse_grants(tools, layer="agent")  # refused if invalid
    row = conn.execute(
        "INSERT INTO tenantguard.agents (tenant_id, name, tools, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, name) DO UPDATE SET"
        " tools = EXCLUDED.tools, updated_at = EXCLUDED.updated_at"
        " RETURNING name, tools, created_at, updated_at",
        (ctx.tenant_id, name, Jsonb(dict(tools)), now, now),
    ).fetchone()
    assert row is not None  # noqa: S101 (an upsert returns its row)
    record_action(
        conn,
        ctx,
        action="agent.put",
        target_type="agent",
        target_id=name,
        now=now,
        payload={"tools": sorted(tools)},
    )
    return Agent(*row)


def get_agent(conn: Connection, tenant_id: UUID, name: str) -> Agent:
    row = conn.execute(
        "SELECT name, tools, created_at, updated_at FROM tenantguard.agents"
        " WHERE tenant_id = %s AND name = %s",
        (tenant_id, name),
    ).fetchone()
    if row is None:
        raise NotFound()
    return Agent(*row)


def list_agents(conn: Connection, tenant_id: UUID) -> list[Agent]:
    rows = conn.execute(
        "SELECT name, tools, created_at, updated_at FROM tenantguard.agents"
        " WHERE tenant_id = %s ORDER BY name",
        (tenant_id,),
    ).fetchall()
    return [Agent(*r) for r in rows]


def put_tool_policy(
    conn: Connection, ctx: TenantContext, tools: Mapping[str, Any], *, now: datetime
) -> int:
    parse_grants(tools, layer="tenant")
    row = conn.execute(
        "INSERT INTO tenantguard.tool_policies (tenant_id, tools, version, updated_at)"
        " VALUES (%s, %s, 1, %s) ON CONFLICT (tenant_id) DO UPDATE SET tools = EXCLUDED.tools,"
        " version = tenantguard.tool_policies.version + 1, updated_at = EXCLUDED.updated_at"
        " RETURNING version",
        (ctx.tenant_id, Jsonb(dict(tools)), now),
    ).fetchone()
    version = int(row[0]) if row else 0
    record_action(
        conn,
        ctx,
        action="tool_policy.put",
        target_type="tenant",
        target_id=str(ctx.tenant_id),
        now=now,
        payload={"version": version, "tools": sorted(tools)},
    )
    return version


def tool_policy(conn: Connection, tenant_id: UUID) -> tuple[dict[str, Any], int]:
    """The tenant's tool grants (none until it sets some: no tool is granted by default)."""
    row = conn.execute(
        "SELECT tools, version FROM tenantguard.tool_policies WHERE tenant_id = %s",
        (tenant_id,),
    ).fetchone()
    return (dict(row[0]), int(row[1])) if row else ({}, 0)


def capabilities_for(
    conn: Connection, tenant_id: UUID, agent: str, registry: ToolRegistry
) -> RunCapabilities:
    """What a run of `agent` may do, frozen now: an agent that is not configured has no
    tools (a run may still be started for it: it records events, it calls nothing)."""
    try:
        agent_grants: tuple[ToolGrant, ...] = parse_grants(
            get_agent(conn, tenant_id, agent).tools, layer="agent"
        )
    except NotFound:
        agent_grants = ()
    tenant_grants = parse_grants(tool_policy(conn, tenant_id)[0], layer="tenant")
    return freeze(agent_grants, tenant_grants, registry)


def request_approval(
    conn: Connection,
    ctx: TenantContext,
    *,
    run_id: UUID,
    tool: str,
    call_hash: str,
    arguments: Mapping[str, Any],
    now: datetime,
    on_new: Callable[[Approval], object] | None = None,
) -> Approval:
    """The pending approval of this exact call: the one already waiting, or a new one (then
    `on_new` is called with it, in this transaction: its webhook event)."""
    row = conn.execute(
        f"SELECT {_APPROVAL_COLUMNS} FROM tenantguard.approvals WHERE tenant_id = %s"
        " AND run_id = %s AND call_hash = %s AND status = 'pending'",
        (ctx.tenant_id, run_id, call_hash),
    ).fetchone()
    if row is not None:
        return Approval(*row)
    row = conn.execute(
        "INSERT INTO tenantguard.approvals (tenant_id, id, run_id, tool, call_hash, arguments,"
        f" status, requested_at) VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s)"
        f" RETURNING {_APPROVAL_COLUMNS}",
        (ctx.tenant_id, uuid4(), run_id, tool, call_hash, Jsonb(dict(arguments)), now),
    ).fetchone()
    assert row is not None  # noqa: S101 (an insert returns its row)
    approval = Approval(*row)
    record_action(
        conn,
        ctx,
        action="approval.request",
        target_type="approval",
        target_id=str(approval.id),
        now=now,
        payload={"run_id": str(run_id), "tool": tool, "call_hash": call_hash},
    )
    if on_new is not None:
        on_new(approval)
    return approval


def get_approval(conn: Connection, tenant_id: UUID, approval_id: UUID) -> Approval:
    row = conn.execute(
        f"SELECT {_APPROVAL_COLUMNS} FROM tenantguard.approvals WHERE tenant_id = %s AND id = %s",
        (tenant_id, approval_id),
    ).fetchone()
    if row is None:
        raise NotFound()
    return Approval(*row)


def list_approvals(conn: Connection, ctx: TenantContext, *, status: str | None) -> list[Approval]:
    """The tenant's approvals; for a credential bound to an agent, those of its runs only."""
    rows = conn.execute(
        f"SELECT {_APPROVAL_COLUMNS} FROM tenantguard.approvals AS a WHERE a.tenant_id = %s"
        " AND (%s::text IS NULL OR a.status = %s)"
        " AND (%s::text IS NULL OR EXISTS (SELECT 1 FROM tenantguard.runs AS r"
        "      WHERE r.tenant_id = a.tenant_id AND r.id = a.run_id AND r.agent = %s))"
        " ORDER BY a.requested_at, a.id LIMIT 500",
        (ctx.tenant_id, status, status, ctx.agent, ctx.agent),
    ).fetchall()
    return [Approval(*r) for r in rows]


def decide_approval(
    conn: Connection, ctx: TenantContext, approval_id: UUID, *, approve: bool, now: datetime
) -> Approval:
    """A person's decision on a pending approval; a decided one cannot be decided again."""
    row = conn.execute(
        "UPDATE tenantguard.approvals SET status = %s, decided_by = %s, decided_at = %s"
        f" WHERE tenant_id = %s AND id = %s AND status = 'pending' RETURNING {_APPROVAL_COLUMNS}",
        (
            "approved" if approve else "denied",
            f"{ctx.principal.type}:{ctx.principal.id}",
            now,
            ctx.tenant_id,
            approval_id,
        ),
    ).fetchone()
    if row is None:
        get_approval(conn, ctx.tenant_id, approval_id)  # NotFound if it is not there at all
        raise Conflict("The approval was already decided.")
    approval = Approval(*row)
    record_action(
        conn,
        ctx,
        action="approval.approve" if approve else "approval.deny",
        target_type="approval",
        target_id=str(approval.id),
        now=now,
        payload={"run_id": str(approval.run_id), "tool": approval.tool},
    )
    return approval


def approved_calls(conn: Connection, tenant_id: UUID, run_id: UUID) -> frozenset[str]:
    rows = conn.execute(
        "SELECT call_hash FROM tenantguard.approvals WHERE tenant_id = %s AND run_id = %s"
        " AND status = 'approved'",
        (tenant_id, run_id),
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def spend(
    conn: Connection, tenant_id: UUID, run_id: UUID, call_hash: str, *, now: datetime
) -> bool:
    """Spend one approval of this call (compare and set): True once, then False."""
    row = conn.execute(
        "UPDATE tenantguard.approvals SET status = 'spent', spent_at = %s WHERE (tenant_id, id) ="
        " (SELECT tenant_id, id FROM tenantguard.approvals WHERE tenant_id = %s AND run_id = %s"
        " AND call_hash = %s AND status = 'approved' ORDER BY decided_at LIMIT 1"
        " FOR UPDATE SKIP LOCKED) RETURNING id",
        (now, tenant_id, run_id, call_hash),
    ).fetchone()
    return row is not None
