"""`/api/admin/quotas`: the tenant's limits (rates, quotas, run budgets), the platform's that
hold on top of them, and how much of each tenant-wide limit is in use. Setting them is a
sensitive action (a person with a fresh second factor, or a key that holds it). These routes
are counted against the platform's limits only: a tenant's own limits, however strict, never
lock its admins out of lifting them."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.context import TenantContext
from tenantguard.data import quotas as store
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import Runtime, runtime
from tenantguard.quotas.core import Limit, Subject, checks_for, micros, used

router = APIRouter(prefix="/api/admin/quotas", tags=["quotas"])
Read = Annotated[TenantContext, Depends(Authorize("quotas:read"))]
Manage = Annotated[TenantContext, Depends(Authorize("quotas:manage"))]


class QuotaPolicy(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "limits": [
                        {"metric": "tool_calls", "scope": "agent", "per": "day", "limit": 500},
                        {"metric": "tool_calls", "scope": "run", "per": "run", "limit": 50},
                        {"metric": "tokens", "scope": "tenant", "per": "month", "limit": 10**7},
                    ]
                }
            ]
        },
    )
    limits: list[dict[str, Any]] = Field(max_length=100)


class UsageOut(BaseModel):
    metric: str
    scope: str
    per: str
    limit: int
    used: int
    source: str  # "platform" or "tenant"


class QuotasOut(BaseModel):
    limits: list[dict[str, Any]]
    version: int
    platform: list[dict[str, Any]]
    usage: list[UsageOut]  # every tenant-wide limit, now


def _out(rt: Runtime, tenant_id: UUID, own: tuple[Limit, ...], version: int) -> QuotasOut:
    now = micros(rt.clock.now())
    tenant_wide = [("platform", lim) for lim in rt.meter.platform if lim.scope == "tenant"]
    tenant_wide += [("tenant", lim) for lim in own if lim.scope == "tenant"]
    checks = [
        (source, checks_for([limit], limit.metric, Subject(credential="-"), now)[0])
        for source, limit in tenant_wide
    ]
    states = rt.meter.store.usage(tenant_id, [c.key for _, c in checks])
    return QuotasOut(
        limits=[limit.as_json() for limit in own],
        version=version,
        platform=[limit.as_json() for limit in rt.meter.platform],
        usage=[
            UsageOut(
                metric=c.limit.metric,
                scope=c.limit.scope,
                per=c.limit.per,
                limit=c.limit.limit,
                used=used(c, states.get(c.key), now),
                source=source,
            )
            for source, c in checks
        ],
    )


@router.get("")
def get_quotas(ctx: Read, request: Request) -> QuotasOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        own, version = store.get_policy(tx, ctx.tenant_id)
    return _out(rt, ctx.tenant_id, own, version)


@router.put("")
def put_quotas(body: QuotaPolicy, ctx: Manage, request: Request) -> QuotasOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        version = store.put_policy(tx, ctx, body.model_dump(), now=rt.clock.now())
        own, _ = store.get_policy(tx, ctx.tenant_id)
    rt.meter.forget(ctx.tenant_id)
    return _out(rt, ctx.tenant_id, own, version)
