"""`/api/memory`: memory entries with soft delete, restore and versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tenantguard.context import TenantContext
from tenantguard.data import memory
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(prefix="/api/memory", tags=["memory"])

Key = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Content = Annotated[str, Field(max_length=65536)]


class MemoryCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"key": "customer-preferences", "content": "Prefers email."}]
        },
    )
    key: Key
    content: Content


class MemoryPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"content": "Prefers phone.", "expected_version": 1}]},
    )
    key: Key | None = None
    content: Content | None = None
    expected_version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _changes_something(self) -> MemoryPatch:
        if self.key is None and self.content is None:
            raise ValueError("a patch changes the key, the content, or both")
        return self


class MemoryOut(BaseModel):
    id: UUID
    key: str
    content: str
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @classmethod
    def of(cls, entry: memory.MemoryEntry) -> MemoryOut:
        return cls(
            id=entry.id,
            key=entry.key,
            content=entry.content,
            version=entry.version,
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            deleted_at=entry.deleted_at,
        )


class MemoryPage(BaseModel):
    items: list[MemoryOut]
    next_cursor: str | None


class MemoryVersionOut(BaseModel):
    version: int
    change: str
    key: str
    content: str
    changed_at: datetime
    actor: str


Read = Annotated[TenantContext, Depends(Authorize("memory:read"))]
Write = Annotated[TenantContext, Depends(Authorize("memory:write"))]


@router.post("", status_code=201)
def create_entry(body: MemoryCreate, ctx: Write, request: Request) -> MemoryOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        entry = memory.create(tx, ctx, key=body.key, content=body.content, now=rt.clock.now())
    return MemoryOut.of(entry)


@router.get("")
def list_entries(
    ctx: Read,
    request: Request,
    include_deleted: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> MemoryPage:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        entries, next_cursor = memory.list_entries(
            tx, ctx.tenant_id, include_deleted=include_deleted, limit=limit, cursor=cursor
        )
    return MemoryPage(items=[MemoryOut.of(e) for e in entries], next_cursor=next_cursor)


@router.get("/{id}")
def get_entry(id: UUID, ctx: Read, request: Request, include_deleted: bool = False) -> MemoryOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        entry = memory.get(tx, ctx.tenant_id, id, include_deleted=include_deleted)
    return MemoryOut.of(entry)


@router.patch("/{id}")
def update_entry(id: UUID, body: MemoryPatch, ctx: Write, request: Request) -> MemoryOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        entry = memory.update(
            tx,
            ctx,
            id,
            key=body.key,
            content=body.content,
            expected_version=body.expected_version,
            now=rt.clock.now(),
        )
    return MemoryOut.of(entry)


@router.delete("/{id}", status_code=204)
def delete_entry(id: UUID, ctx: Write, request: Request) -> Response:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        memory.delete(tx, ctx, id, now=rt.clock.now())
    return Response(status_code=204)


@router.post("/{id}/restore")
def restore_entry(id: UUID, ctx: Write, request: Request) -> MemoryOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        entry = memory.restore(tx, ctx, id, now=rt.clock.now())
    return MemoryOut.of(entry)


@router.get("/{id}/versions")
def list_versions(id: UUID, ctx: Read, request: Request) -> list[MemoryVersionOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = memory.versions(tx, ctx.tenant_id, id)
    return [
        MemoryVersionOut(
            version=v.version,
            change=v.change,
            key=v.key,
            content=v.content,
            changed_at=v.changed_at,
            actor=v.actor,
        )
        for v in found
    ]
