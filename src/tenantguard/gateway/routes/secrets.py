"""`/api/secrets`: the tenant vault. Values go in; no API ever returns one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.context import TenantContext
from tenantguard.data import secrets
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(prefix="/api/secrets", tags=["secrets"])
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class SecretWrite(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"value": "sk-example-not-a-real-key"}]}
    )
    value: str = Field(min_length=1, max_length=secrets.MAX_VALUE_BYTES)


class SecretOut(BaseModel):
    name: str
    version: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, info: secrets.SecretInfo) -> SecretOut:
        return cls(
            name=info.name,
            version=info.current_version,
            created_at=info.created_at,
            updated_at=info.updated_at,
            last_used_at=info.last_used_at,
        )


class SecretVersionOut(BaseModel):
    version: int
    created_at: datetime
    created_by: str
    wiped: bool


class SecretDetail(SecretOut):
    versions: list[SecretVersionOut]


Read = Annotated[TenantContext, Depends(Authorize("secrets:read"))]
Write = Annotated[TenantContext, Depends(Authorize("secrets:write"))]


@router.put("/{name}")
def write_secret(name: Name, body: SecretWrite, ctx: Write, request: Request) -> SecretOut:
    rt = runtime(request)
    value = body.value.encode("utf-8")
    if len(value) > secrets.MAX_VALUE_BYTES:
        from tenantguard.errors import RequestInvalid  # noqa: PLC0415

        raise RequestInvalid("A secret value is at most 64 KiB.")
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        info = secrets.write(tx, ctx, rt.keyring, name, value, now=rt.clock.now())
    return SecretOut.of(info)


@router.get("")
def list_secrets(ctx: Read, request: Request) -> list[SecretOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [SecretOut.of(s) for s in secrets.list_secrets(tx, ctx.tenant_id)]


@router.get("/{name}")
def get_secret(name: Name, ctx: Read, request: Request) -> SecretDetail:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        info, history = secrets.versions(tx, ctx.tenant_id, name)
    return SecretDetail(
        **SecretOut.of(info).model_dump(),
        versions=[
            SecretVersionOut(
                version=v.version, created_at=v.created_at, created_by=v.created_by, wiped=v.wiped
            )
            for v in history
        ],
    )


@router.delete("/{name}", status_code=204)
def delete_secret(name: Name, ctx: Write, request: Request) -> Response:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        secrets.delete(tx, ctx, name, now=rt.clock.now())
    return Response(status_code=204)
