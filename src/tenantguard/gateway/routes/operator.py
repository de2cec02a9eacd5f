"""The platform realm: how the vendor's operators sign in, and what they may do there.

Operators are people of the platform realm, members of no tenant; they are added from the host
(`tenantguard operators add`), never through the API. They sign in by magic link at their own
routes and must prove a second factor before anything but enrolling one (always, whatever any
policy says). Their sessions, tokens and revocation are the tenants' machinery, in the platform
realm; the realm check of every route keeps their tokens off tenant routes and tenant
credentials off these.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.routes.identity import TokensOut, sign_in_answer
from tenantguard.gateway.runtime import request_id, runtime
from tenantguard.identity import users

router = APIRouter(tags=["operators"])
OperatorsRead = Annotated[TenantContext, Depends(Authorize("platform:operators:read"))]


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
    started = time.monotonic()
    try:
        rt.magic_links.request(
            tenant_id=PLATFORM_TENANT_ID,
            email=body.email,
            request_id=request_id(request),
            platform=True,
        )
    finally:
        time.sleep(max(0.0, rt.magic_link_floor - (time.monotonic() - started)))
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
