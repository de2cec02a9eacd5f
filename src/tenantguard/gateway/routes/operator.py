"""The platform realm: how the vendor's operators sign in, and what they may do there.

Operators are people of the platform realm, members of no tenant; they are added from the host
(`tenantguard operators add`), never through the API. They sign in by magic link at their own
routes and must prove a second factor before anything but enrolling one (always, whatever any
policy says). Their sessions, tokens and revocation are the tenants' machinery, in the platform
realm; the realm check of every route keeps their tokens off tenant routes and tenant
credentials off these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.data import memory
from tenantguard.data.pagination import MAX_PAGE
from tenantguard.db.pool import Connection
from tenantguard.errors import RequestInvalid
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.routes.identity import TokensOut, after_floor, sign_in_answer
from tenantguard.gateway.runtime import request_id, runtime
from tenantguard.identity import users

router = APIRouter(tags=["operators"])
OperatorsRead = Annotated[TenantContext, Depends(Authorize("platform:operators:read"))]
DataRead = Annotated[TenantContext, Depends(Authorize("platform:tenant_data:read"))]
DataDelete = Annotated[TenantContext, Depends(Authorize("platform:tenant_data:delete"))]
Purge = Annotated[TenantContext, Depends(Authorize("platform:tenants:purge"))]


class PurgeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"confirm": "00000000-0000-0000-0000-00000000abcd"}]},
    )
    confirm: UUID  # the tenant's id again: a purge cannot be undone


class PurgeOut(BaseModel):
    tenant_id: UUID
    verified: bool  # the check found nothing of the tenant left
    already_done: bool  # purged before: nothing to do
    rows: dict[str, int]  # deleted by this run, per table
    objects: int
    keys_destroyed: int


class OperatorMagicLink(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"email": "ops@vendor.example"}]}
    )
    email: str = Field(min_length=1, max_length=320)


class OperatorRedeem(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"token": "tg_ml_0000000000000000000000000000000000000000"}]
        },
    )
    token: str = Field(min_length=1, max_length=128)


class OperatorOut(BaseModel):
    id: UUID
    email: str
    created_at: datetime


@router.post("/api/operator/auth/magic-link", status_code=202)
def operator_magic_link(body: OperatorMagicLink, request: Request) -> dict[str, str]:
    """Always 202, after the same minimum time, whether or not the address is an operator's."""
    rt = runtime(request)
    after_floor(
        rt,
        lambda: rt.magic_links.request(
            tenant_id=PLATFORM_TENANT_ID,
            email=body.email,
            request_id=request_id(request),
            platform=True,
        ),
    )
    return {"status": "If the address belongs to an operator, a sign-in link is on its way."}


@router.post("/api/operator/auth/magic-link/redeem")
def operator_redeem(body: OperatorRedeem, request: Request, response: Response) -> TokensOut:
    rt = runtime(request)
    rid = request_id(request)
    return sign_in_answer(
        rt,
        rid,
        response,
        "auth.magic_link.redeem",
        lambda: rt.magic_links.redeem(
            tenant_id=PLATFORM_TENANT_ID, token=body.token, request_id=rid, platform=True
        ),
    )


@router.get("/api/operator/operators")
def list_operators(ctx: OperatorsRead, request: Request) -> list[OperatorOut]:
    """The platform's operators (who can ask a tenant for access, in the operator routes)."""
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = users.list_users(tx, ctx.tenant_id)
    return [OperatorOut(id=u.id, email=u.email, created_at=u.created_at) for u in found]


class OperatorReadIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"reason": "ticket 4711: the customer asked why a memory is missing"}]
        },
    )
    reason: str = Field(min_length=1, max_length=500, description="The tenant reads this.")
    break_glass: bool = False


class OperatorDeleteIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"id": "00000000-0000-4000-8000-000000000002", "reason": "ticket 4712: erasure"}
            ]
        },
    )
    id: UUID
    reason: str = Field(min_length=1, max_length=500, description="The tenant reads this.")


class TenantMemoryOut(BaseModel):
    id: UUID
    key: str
    content: str
    version: int
    updated_at: datetime


@router.post("/api/operator/tenants/{tenant}/memory/read")
def operator_read_memory(
    tenant: UUID, body: OperatorReadIn, ctx: DataRead, request: Request
) -> list[TenantMemoryOut]:
    """Read a tenant's memory entries: only while it has opted in; audited in its own chain
    first, in the same transaction (no audit row, no read)."""
    rt = runtime(request)

    def read(tx: Connection) -> list[TenantMemoryOut]:
        entries, _ = memory.list_entries(tx, tenant, limit=MAX_PAGE)
        return [
            TenantMemoryOut(
                id=e.id, key=e.key, content=e.content, version=e.version, updated_at=e.updated_at
            )
            for e in entries
        ]

    return rt.operator_access.read(
        ctx, tenant, what="memory", reason=body.reason, break_glass=body.break_glass, read=read
    )


@router.post("/api/operator/tenants/{tenant}/memory/delete", status_code=204)
def operator_delete_memory(
    tenant: UUID, body: OperatorDeleteIn, ctx: DataDelete, request: Request
) -> Response:
    """Delete (softly, restorable by the tenant) one memory entry of a tenant: refused with
    the reason unless the tenant opted in."""
    rt = runtime(request)
    rt.operator_access.delete(
        ctx,
        tenant,
        what=f"memory:{body.id}",
        reason=body.reason,
        change=lambda tx, as_operator: memory.delete(tx, as_operator, body.id, now=rt.clock.now()),
    )
    return Response(status_code=204)


@router.post("/api/operator/tenants/{tenant}/purge")
def purge_tenant(tenant: UUID, body: PurgeRequest, ctx: Purge, request: Request) -> PurgeOut:
    """Purge a tenant (or complete an interrupted purge): its credentials revoked, its keys
    destroyed, its artifacts, files and rows deleted, then checked; a tombstone stays in the
    platform's audit chain. Needs a fresh second factor and the tenant's id twice. Not gated
    by the tenant's operator-access opt-in: a purge is what a departing customer asks for."""
    if body.confirm != tenant:
        raise RequestInvalid("confirm must repeat the tenant's id.")
    report = runtime(request).purger.purge(ctx, tenant)
    return PurgeOut(
        tenant_id=report.tenant_id,
        verified=report.verified,
        already_done=report.already_done,
        rows=report.rows,
        objects=report.objects,
        keys_destroyed=report.keys_destroyed,
    )
