"""`/api/api-keys`: a tenant's API keys. Secrets are shown once, in the creating response."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.context import AGENT_NAME, TenantContext
from tenantguard.gateway.auth import Authorize, denials_audited
from tenantguard.gateway.runtime import runtime
from tenantguard.identity import keystore

router = APIRouter(prefix="/api/api-keys", tags=["api keys"])
MAX_GRACE_SECONDS = 86_400


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "ci", "capabilities": ["memory:read"], "expires_in_seconds": 3600},
                {
                    "name": "triage-bot",
                    "capabilities": ["runs:write", "tools:call"],
                    "agent": "support-triage",
                },
            ]
        },
    )
    name: str = Field(min_length=1, max_length=200)
    capabilities: list[str] = Field(min_length=1, max_length=50)
    expires_in_seconds: int | None = Field(default=None, ge=60, le=366 * 86_400)
    agent: str | None = Field(
        default=None,
        pattern=f"^{AGENT_NAME}$",
        description="Bind the key to this agent: it acts only in that agent's runs.",
    )


class ApiKeyRotate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"grace_seconds": 0}]}
    )
    grace_seconds: int = Field(default=0, ge=0, le=MAX_GRACE_SECONDS)


class ApiKeyOut(BaseModel):
    id: UUID
    name: str
    display_prefix: str
    capabilities: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: UUID | None
    agent: str | None

    @classmethod
    def of(cls, info: keystore.ApiKeyInfo) -> ApiKeyOut:
        return cls(
            id=info.id,
            name=info.name,
            display_prefix=info.display_prefix,
            capabilities=list(info.capabilities),
            created_at=info.created_at,
            expires_at=info.expires_at,
            revoked_at=info.revoked_at,
            last_used_at=info.last_used_at,
            rotated_from=info.rotated_from,
            agent=info.agent,
        )


class ApiKeyIssued(ApiKeyOut):
    secret: str = Field(description="The key itself. Shown once; store it now.")


def _issued(issued: keystore.IssuedKey) -> ApiKeyIssued:
    return ApiKeyIssued(**ApiKeyOut.of(issued.info).model_dump(), secret=issued.secret)


Read = Annotated[TenantContext, Depends(Authorize("api_keys:read"))]
Manage = Annotated[TenantContext, Depends(Authorize("api_keys:manage"))]
_NO_STORE = {"Cache-Control": "no-store"}


@router.post("", status_code=201)
def create_key(
    body: ApiKeyCreate, ctx: Manage, request: Request, response: Response
) -> ApiKeyIssued:
    rt = runtime(request)
    lifetime = (
        timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds is not None else None
    )
    with (
        denials_audited(rt, ctx, action="api_key.create", target_type="api_key"),
        rt.db.tenant_transaction(ctx.tenant_id) as tx,
    ):
        issued = keystore.create_key(
            tx,
            ctx,
            name=body.name,
            capabilities=body.capabilities,
            lifetime=lifetime,
            now=rt.clock.now(),
            agent=body.agent,
        )
    response.headers.update(_NO_STORE)
    return _issued(issued)


@router.get("")
def list_keys(ctx: Read, request: Request) -> list[ApiKeyOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [ApiKeyOut.of(k) for k in keystore.list_keys(tx, ctx.tenant_id)]


@router.post("/{id}/rotate", status_code=201)
def rotate_key(
    id: UUID, body: ApiKeyRotate, ctx: Manage, request: Request, response: Response
) -> ApiKeyIssued:
    rt = runtime(request)
    with (
        denials_audited(rt, ctx, action="api_key.rotate", target_type="api_key", target_id=str(id)),
        rt.db.tenant_transaction(ctx.tenant_id) as tx,
    ):
        issued = keystore.rotate_key(
            tx, ctx, id, grace=timedelta(seconds=body.grace_seconds), now=rt.clock.now()
        )
    response.headers.update(_NO_STORE)
    return _issued(issued)


@router.delete("/{id}", status_code=204)
def revoke_key(id: UUID, ctx: Manage, request: Request) -> Response:
    rt = runtime(request)
    with (
        denials_audited(rt, ctx, action="api_key.revoke", target_type="api_key", target_id=str(id)),
        rt.db.tenant_transaction(ctx.tenant_id) as tx,
    ):
        keystore.revoke_key(tx, ctx, id, now=rt.clock.now())
    return Response(status_code=204)
