"""`/api/model-providers`: a tenant's own model providers (bring your own key)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.context import TenantContext
from tenantguard.data import model_providers
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(prefix="/api/model-providers", tags=["model providers"])
Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
Model = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.:/-]*$")]


class ProviderPut(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"kind": "openai", "secret": "openai-key", "models": ["gpt-4o-mini"]}]
        },
    )
    kind: model_providers.Kind
    base_url: str | None = Field(default=None, max_length=2048)
    secret: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    models: list[Model] = Field(min_length=1, max_length=200)


class ProviderOut(BaseModel):
    name: str
    kind: str
    base_url: str
    secret: str | None
    models: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, provider: model_providers.ModelProvider) -> ProviderOut:
        return cls(
            name=provider.name,
            kind=provider.kind,
            base_url=provider.base_url,
            secret=provider.secret_name,
            models=list(provider.models),
            created_at=provider.created_at,
            updated_at=provider.updated_at,
        )


Read = Annotated[TenantContext, Depends(Authorize("model_providers:read"))]
Write = Annotated[TenantContext, Depends(Authorize("model_providers:write"))]


@router.put("/{name}")
def put_provider(name: Name, body: ProviderPut, ctx: Write, request: Request) -> ProviderOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        provider = model_providers.put(
            tx,
            ctx,
            name,
            kind=body.kind,
            base_url=body.base_url,
            secret_name=body.secret,
            models=body.models,
            now=rt.clock.now(),
        )
    return ProviderOut.of(provider)


@router.get("")
def list_providers(ctx: Read, request: Request) -> list[ProviderOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [ProviderOut.of(p) for p in model_providers.list_providers(tx, ctx.tenant_id)]


@router.get("/{name}")
def get_provider(name: Name, ctx: Read, request: Request) -> ProviderOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return ProviderOut.of(model_providers.get(tx, ctx.tenant_id, name))


@router.delete("/{name}", status_code=204)
def delete_provider(name: Name, ctx: Write, request: Request) -> Response:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        model_providers.delete(tx, ctx, name, now=rt.clock.now())
    return Response(status_code=204)
