"""Tools: the catalogue (`/api/tools`), agents (`/api/agents/{name}`), the tenant's tool policy
(`/api/admin/tool-policy`), the policy gate for a run's calls (`POST /api/runs/{id}/tool-calls`)
and approvals (`/api/approvals`). See `tools.gate` for the rules of a decision.

Every decision is audited (`tool.call`, the rule as its reason, the call's hash, never the
arguments) in its own committed transaction, a denial included: the caller gets a typed
`capability_denied` problem naming the rule. Approvals are decided by people only: an API key
(which is what an agent runtime holds) cannot approve anything, whatever its capabilities.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.audit.store import record_action
from tenantguard.context import AGENT_NAME, TenantContext
from tenantguard.data import egress as egress_store
from tenantguard.data import runs, webhook_endpoints
from tenantguard.data import tools as store
from tenantguard.db.pool import Connection
from tenantguard.egress.check import EgressDenied
from tenantguard.errors import BudgetExhausted, CapabilityDenied, RateLimited, TenantGuardError
from tenantguard.gateway.auth import Authorize, subject_of
from tenantguard.gateway.runtime import Runtime, runtime
from tenantguard.quotas.core import Metric
from tenantguard.tools.builtin import ToolContext
from tenantguard.tools.capabilities import RunCapabilities, parse_grants
from tenantguard.tools.gate import decide
from tenantguard.tools.workspace import Workspace, workspace_root

router = APIRouter(tags=["tools"])
Read = Annotated[TenantContext, Depends(Authorize("tools:read"))]
ManageAgents = Annotated[TenantContext, Depends(Authorize("agents:manage"))]
ManagePolicy = Annotated[TenantContext, Depends(Authorize("tool_policy:manage"))]
ManageEgress = Annotated[TenantContext, Depends(Authorize("egress_policy:manage"))]
Call = Annotated[TenantContext, Depends(Authorize("tools:call"))]
Decide = Annotated[TenantContext, Depends(Authorize("approvals:decide"))]
AgentName = Annotated[str, Field(pattern=f"^{AGENT_NAME}$")]


class ToolCallDenied(CapabilityDenied):
    """A tool call refused by the gate; `rule` names the rule (`tools.gate.RULES`)."""

    def __init__(self, rule: str, paths: tuple[str, ...] = ()) -> None:
        where = f" at {', '.join(paths)}" if paths else ""
        super().__init__("tools:call", f"The tool call was refused: {rule}{where}.")
        self.rule = rule


class ToolOut(BaseModel):
    name: str
    description: str
    capabilities: list[str]
    arguments: dict[str, Any]
    needs_approval: bool


class Grants(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"tools": {"memory_read": {}, "memory_delete": {}}}]},
    )
    tools: dict[str, dict[str, Any]] = Field(max_length=200)


class AgentOut(BaseModel):
    name: str
    tools: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PolicyOut(BaseModel):
    tools: dict[str, Any]
    version: int


class EgressLists(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"allow_hosts": ["*.acme.example"], "deny_hosts": ["old.acme.example"]}]
        },
    )
    allow_hosts: list[str] = Field(default_factory=list, max_length=500)
    deny_hosts: list[str] = Field(default_factory=list, max_length=500)


class GrantOut(BaseModel):
    id: UUID
    network: str
    ports: list[int]
    reason: str
    granted_by: str
    granted_at: datetime
    revoked_at: datetime | None


class EgressOut(BaseModel):
    allow_hosts: list[str]  # empty: any public host
    deny_hosts: list[str]
    version: int
    grants: list[GrantOut]  # private networks granted by the platform's operator


class ToolCall(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"tool": "memory_read", "arguments": {"id": "00000000-0000-4000-8000-000000000000"}}
            ]
        },
    )
    tool: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallOut(BaseModel):
    outcome: Literal["allowed", "pending_approval"]
    rule: str
    call_hash: str
    output: dict[str, Any] | None = None  # the tool's result, data for the model
    untrusted: bool = True  # tool output is never instructions to the gate
    approval_id: UUID | None = None


class ApprovalOut(BaseModel):
    id: UUID
    run_id: UUID
    tool: str
    call_hash: str
    arguments: dict[str, Any]
    status: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None

    @classmethod
    def of(cls, a: store.Approval) -> ApprovalOut:
        return cls(**{f: getattr(a, f) for f in cls.model_fields})


@router.get("/api/tools")
def list_tools(_ctx: Read, request: Request) -> list[ToolOut]:
    return [
        ToolOut(
            name=s.name,
            description=s.description,
            capabilities=sorted(s.capabilities),
            arguments=dict(s.arguments),
            needs_approval=s.needs_approval,
        )
        for s in runtime(request).tools.specs()
    ]


@router.get("/api/agents")
def list_agents(ctx: Read, request: Request) -> list[AgentOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [AgentOut(**asdict(a)) for a in store.list_agents(tx, ctx.tenant_id)]


@router.get("/api/agents/{name}")
def get_agent(name: AgentName, ctx: Read, request: Request) -> AgentOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return AgentOut(**asdict(store.get_agent(tx, ctx.tenant_id, name)))


@router.put("/api/agents/{name}")
def put_agent(name: AgentName, body: Grants, ctx: ManageAgents, request: Request) -> AgentOut:
    """An agent's tool grants: what its runs may be given (the tenant's policy narrows it)."""
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        agent = store.put_agent(tx, ctx, name, body.tools, now=rt.clock.now())
    return AgentOut(**asdict(agent))


@router.get("/api/admin/tool-policy")
def get_tool_policy(ctx: Read, request: Request) -> PolicyOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        tools, version = store.tool_policy(tx, ctx.tenant_id)
    return PolicyOut(tools=tools, version=version)


@router.put("/api/admin/tool-policy")
def put_tool_policy(body: Grants, ctx: ManagePolicy, request: Request) -> PolicyOut:
    """The tenant's tool grants: no run of any agent may exceed them. Applies to runs started
    afterwards, and narrows running ones at once (never widens them)."""
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        version = store.put_tool_policy(tx, ctx, body.tools, now=rt.clock.now())
    return PolicyOut(tools=body.tools, version=version)


@router.get("/api/admin/egress-policy")
def get_egress_policy(ctx: Read, request: Request) -> EgressOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return _egress_out(tx, ctx.tenant_id)


@router.put("/api/admin/egress-policy")
def put_egress_policy(body: EgressLists, ctx: ManageEgress, request: Request) -> EgressOut:
    """The hosts the tenant's outbound calls may reach (an allow list: only those) and may
    not (a deny list, which wins). They narrow the egress guard; they cannot widen it."""
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        egress_store.put_policy(
            tx, ctx, allow_hosts=body.allow_hosts, deny_hosts=body.deny_hosts, now=rt.clock.now()
        )
        return _egress_out(tx, ctx.tenant_id)


def _egress_out(tx: Connection, tenant_id: UUID) -> EgressOut:
    allow, deny, version = egress_store.get_policy(tx, tenant_id)
    grants = [GrantOut(**asdict(g)) for g in egress_store.list_grants(tx, tenant_id)]
    return EgressOut(allow_hosts=allow, deny_hosts=deny, version=version, grants=grants)


@router.post("/api/runs/{run_id}/tool-calls")
def call_tool(
    run_id: UUID, body: ToolCall, ctx: Call, request: Request, response: Response
) -> ToolCallOut:
    rt = runtime(request)
    now = rt.clock.now()
    refused: TenantGuardError | None = None
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        run = runs.get_run(tx, ctx, run_id, lock=True)
        # Frozen means never wider; the tenant's policy as it is now narrows it further.
        current, _ = store.tool_policy(tx, ctx.tenant_id)
        frozen = RunCapabilities.from_json(run.capabilities or {}).narrowed(
            parse_grants(current, layer="tenant")
        )
        decision = decide(
            frozen,
            rt.tools,
            run_id=run_id,
            tool=body.tool,
            arguments=body.arguments,
            approved=store.approved_calls(tx, ctx.tenant_id, run_id),
        )
        if run.status == "stopped":
            decision = replace(decision, outcome="deny", rule="run_stopped", paths=())
            refused = runs.RunStopped()
        elif decision.outcome == "allow":
            # Counted before an approval is spent: a refused call keeps its approval.
            spec = rt.tools.get(body.tool)
            messaging = spec is not None and "messaging" in spec.capabilities
            messages = len(body.arguments.get("to", ())) if messaging else 0
            refused = _charge(rt, tx, ctx, run, now=now, messages=messages)
            if refused is not None:
                decision = replace(decision, outcome="deny", rule=refused.code, paths=())
        if decision.rule == "approved" and not store.spend(
            tx, ctx.tenant_id, run_id, decision.call_hash, now=now
        ):
            decision = type(decision)("approval", "needs_approval", decision.call_hash)
        _audit(
            tx,
            ctx,
            run_id,
            body.tool,
            call_hash=decision.call_hash,
            now=now,
            outcome=decision.outcome,
            rule=decision.rule,
        )
        approval = None
        # Read only for a call that will run (a refused or pending one returns below).
        allowed = decision.outcome == "allow"
        egress = egress_store.policy_for(tx, ctx.tenant_id, rt.egress) if allowed else rt.egress
        if decision.outcome == "approval":
            approval = store.request_approval(
                tx,
                ctx,
                run_id=run_id,
                tool=body.tool,
                call_hash=decision.call_hash,
                arguments=body.arguments,
                now=now,
                on_new=lambda made: _announce(rt, tx, ctx, "approval.requested", made, now=now),
            )
    if refused is not None:  # audited (and a run out of budget stopped), committed
        raise refused
    # The decision (and a spent approval) is committed before the tool runs: a tool that
    # fails cannot take its audit event with it.
    if approval is not None:
        response.status_code = 202
        return ToolCallOut(
            outcome="pending_approval",
            rule=decision.rule,
            call_hash=decision.call_hash,
            approval_id=approval.id,
        )
    if decision.outcome != "allow":
        raise ToolCallDenied(decision.rule, decision.paths)
    builtin = rt.executors[body.tool]
    try:
        if builtin.in_transaction:
            with rt.db.tenant_transaction(ctx.tenant_id) as tx:
                output = builtin.execute(ToolContext(ctx, now, tx, egress), body.arguments)
        else:  # no database connection is held while a remote server answers
            workspace = Workspace(
                workspace_root(rt.data_root, ctx.tenant_id),
                max_bytes=rt.workspace_max_bytes,
                max_entries=rt.workspace_max_entries,
            )
            outside = ToolContext(ctx, now, None, egress, rt.mailer, rt.mail_from, workspace)
            output = builtin.execute(outside, body.arguments)
    except EgressDenied as blocked:
        _record_failure(
            rt, ctx, run_id, body.tool, call_hash=decision.call_hash, now=now, why=blocked.rule
        )
        raise
    except TenantGuardError as failed:
        _record_failure(
            rt, ctx, run_id, body.tool, call_hash=decision.call_hash, now=now, why=failed.code
        )
        raise
    return ToolCallOut(
        outcome="allowed", rule=decision.rule, call_hash=decision.call_hash, output=output
    )


def _charge(
    rt: Runtime,
    tx: Connection,
    ctx: TenantContext,
    run: runs.Run,
    *,
    now: datetime,
    messages: int = 0,
) -> RateLimited | None:
    """Count one tool call (and, for a messaging tool, one message per recipient) against
    the tenant's, the agent's, the credential's and the run's limits, in the call's own
    transaction. A run whose budget this call used up, or whose budget refused it, is
    stopped. Messages are counted first: a call refused by its tool-call limit has then
    counted its messages too (never the other way round: nothing is sent uncounted)."""
    subject = subject_of(ctx, agent=run.agent, run=str(run.id))
    metrics: list[tuple[Metric, int]] = [("messages", messages)] if messages else []
    exhausted: list[str] = []
    for metric, cost in [*metrics, ("tool_calls", 1)]:
        try:
            verdict = rt.meter.charge(ctx.tenant_id, metric, subject, cost=cost, conn=tx)
        except BudgetExhausted as used_up:
            runs.stop_run(tx, ctx, run.id, reason=f"budget_exhausted:{metric}", now=now)
            return used_up
        except RateLimited as limited:
            if exhausted:  # the messages already counted used a run budget up: it stops
                runs.stop_run(tx, ctx, run.id, reason=f"budget_exhausted:{exhausted[0]}", now=now)
            return limited
        if verdict.run_budget_used_up:
            exhausted.append(metric)
    if exhausted:
        runs.stop_run(tx, ctx, run.id, reason=f"budget_exhausted:{exhausted[0]}", now=now)
    return None


def _audit(
    tx: Connection,
    ctx: TenantContext,
    run_id: UUID,
    tool: str,
    *,
    call_hash: str,
    now: datetime,
    outcome: str,
    rule: str,
) -> None:
    record_action(
        tx,
        ctx,
        action="tool.call",
        target_type="run",
        target_id=str(run_id),
        now=now,
        outcome="success" if outcome != "deny" else "denied",
        reason=rule,
        payload={"tool": tool[:64], "call_hash": call_hash},
    )


def _record_failure(
    rt: Runtime,
    ctx: TenantContext,
    run_id: UUID,
    tool: str,
    *,
    call_hash: str,
    now: datetime,
    why: str,
) -> None:
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        record_action(
            tx,
            ctx,
            action="tool.egress" if why in EgressDenied.rules else "tool.failed",
            target_type="run",
            target_id=str(run_id),
            now=now,
            outcome="denied" if why in EgressDenied.rules else "failure",
            reason=why,
            payload={"tool": tool, "call_hash": call_hash},
        )


@router.get("/api/approvals")
def list_approvals(
    ctx: Read,
    request: Request,
    status: Annotated[Literal["pending", "approved", "denied", "spent"] | None, Query()] = None,
) -> list[ApprovalOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [ApprovalOut.of(a) for a in store.list_approvals(tx, ctx, status=status)]


def _decide(
    approval_id: UUID, ctx: TenantContext, request: Request, *, approve: bool
) -> ApprovalOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        store.get_approval(tx, ctx.tenant_id, approval_id)  # another tenant's: 404, as missing
        if ctx.principal.type != "user":
            raise CapabilityDenied(
                "approvals:decide", "Approvals are decided by people, never by an API key."
            )
        now = rt.clock.now()
        decided = store.decide_approval(tx, ctx, approval_id, approve=approve, now=now)
        _announce(rt, tx, ctx, "approval.decided", decided, now=now)
    return ApprovalOut.of(decided)


def _announce(
    rt: Runtime,
    tx: Connection,
    ctx: TenantContext,
    event_type: str,
    approval: store.Approval,
    *,
    now: datetime,
) -> None:
    """The approval's webhook event, queued in the transaction that made or decided it."""
    data: dict[str, object] = {
        "approval_id": str(approval.id),
        "run_id": str(approval.run_id),
        "tool": approval.tool,
        "call_hash": approval.call_hash,
        "status": approval.status,
    }
    if approval.decided_by is not None:
        data["decided_by"] = approval.decided_by
    webhook_endpoints.emit(tx, ctx, rt.keyring, event_type, data, now=now)


@router.post("/api/approvals/{approval_id}/approve")
def approve(approval_id: UUID, ctx: Decide, request: Request) -> ApprovalOut:
    """A person (with a fresh second factor) lets exactly this call happen, once."""
    return _decide(approval_id, ctx, request, approve=True)


@router.post("/api/approvals/{approval_id}/deny")
def deny(approval_id: UUID, ctx: Decide, request: Request) -> ApprovalOut:
    return _decide(approval_id, ctx, request, approve=False)
