"""The tenant's side of operator access: turning it on or off (`PUT /api/admin/operator-access`,
a step-up action) and seeing every operator read of its data (`GET /api/admin/me/operator-reads`,
from its own audit chain)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from tenantguard.audit.chain import AuditEvent
from tenantguard.context import TenantContext
from tenantguard.data import operator_access
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(tags=["operator access"])
Manage = Annotated[TenantContext, Depends(Authorize("operator_access:manage"))]
Read = Annotated[TenantContext, Depends(Authorize("audit:read"))]


class OperatorAccessIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": True}]})
    enabled: bool


class OperatorAccessOut(BaseModel):
    enabled: bool
    changed_at: datetime | None
    changed_by: str | None


class OperatorReadOut(BaseModel):
    seq: int
    at: datetime
    operator: str
    action: str
    outcome: str
    what: str
    why: str
    break_glass: bool

    @classmethod
    def of(cls, event: AuditEvent) -> OperatorReadOut:
        payload = json.loads(event.payload)
        return cls(
            seq=event.seq,
            at=event.occurred_at,
            operator=event.actor_id,
            action=event.action,
            outcome=event.outcome,
            what=event.target_id,
            why=str(payload.get("why", "")),
            break_glass=event.action == "operator.break_glass_read"
            or bool(payload.get("break_glass", False)),
        )


@router.get("/api/admin/operator-access")
def get_operator_access(ctx: Read, request: Request) -> OperatorAccessOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = operator_access.setting(tx, ctx.tenant_id)
    return OperatorAccessOut(
        enabled=found.enabled, changed_at=found.changed_at, changed_by=found.changed_by
    )


@router.put("/api/admin/operator-access")
def put_operator_access(body: OperatorAccessIn, ctx: Manage, request: Request) -> OperatorAccessOut:
    """Let the platform's operators read this tenant's data (each read audited here), or stop
    them: effective for the next operator request."""
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        operator_access.set_enabled(tx, ctx, body.enabled, now=rt.clock.now())
        found = operator_access.setting(tx, ctx.tenant_id)
    return OperatorAccessOut(
        enabled=found.enabled, changed_at=found.changed_at, changed_by=found.changed_by
    )


@router.get("/api/admin/me/operator-reads")
def operator_reads(ctx: Read, request: Request) -> list[OperatorReadOut]:
    """Every operator read (and refused attempt, and deletion) of this tenant's data, newest
    first, from the tenant's own audit chain."""
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        found = operator_access.operator_events(tx, ctx.tenant_id)
    return [OperatorReadOut.of(e) for e in found]
