"""`/api/admin/retention`: how long each kind of the tenant's data is kept (days, or null:
until deleted), what the defaults are, and what the last expiry pass deleted. Setting it is a
sensitive action (a shorter retention deletes data)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from tenantguard import retention
from tenantguard.context import TenantContext
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(prefix="/api/admin/retention", tags=["retention"])
Read = Annotated[TenantContext, Depends(Authorize("retention:read"))]
Manage = Annotated[TenantContext, Depends(Authorize("retention:manage"))]


class RetentionPut(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"days": {"run_events": 90, "artifacts": 365}}]},
    )
    # Kinds left out go back to their defaults; null keeps that kind until it is deleted.
    days: dict[str, int | None] = Field(max_length=len(retention.KINDS))


class RetentionOut(BaseModel):
    days: dict[str, int | None]  # what holds now, per kind
    own: dict[str, int | None]  # what the tenant set (the rest are defaults)
    defaults: dict[str, int | None]
    audit: str  # the audit log's retention


_AUDIT = "kept whole: never expired by the retention job"


@router.get("")
def get_retention(ctx: Read, request: Request) -> RetentionOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        own = retention.read_policy(tx, ctx.tenant_id)
    return RetentionOut(
        days=retention.effective(own), own=own, defaults=dict(retention.DEFAULTS), audit=_AUDIT
    )


@router.put("")
def put_retention(body: RetentionPut, ctx: Manage, request: Request) -> RetentionOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        days = retention.write_policy(tx, ctx, body.days, now=rt.clock.now())
        own = retention.read_policy(tx, ctx.tenant_id)
    return RetentionOut(days=days, own=own, defaults=dict(retention.DEFAULTS), audit=_AUDIT)
