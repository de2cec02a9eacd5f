"""`/api/runs`: agent runs and their ordered events."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tenantguard.context import TenantContext
from tenantguard.data import runs
from tenantguard.data.tools import capabilities_for
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(prefix="/api/runs", tags=["runs"])
MAX_JSON_BYTES = 262_144


def _bounded(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value, separators=(",", ":"))) > MAX_JSON_BYTES:
        raise ValueError("document too large")
    return value


class RunCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"agent": "support-triage", "input": {"ticket": "T-1042"}}]
        },
    )
    agent: str = Field(min_length=1, max_length=200)
    input: dict[str, Any] = Field(default_factory=dict)

    _check_input = field_validator("input")(_bounded)


class RunEventCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"type": "tool_call", "data": {"tool": "search", "query": "refund"}}]
        },
    )
    type: str = Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_.]*$")
    data: dict[str, Any] = Field(default_factory=dict)

    _check_data = field_validator("data")(_bounded)


class RunOut(BaseModel):
    id: UUID
    agent: str
    status: str
    input: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    tools: list[str]  # the tools this run may call, frozen when it started
    stopped_reason: str | None = None  # set when the run is stopped (a budget exhausted)

    @classmethod
    def of(cls, run: runs.Run) -> RunOut:
        return cls(
            id=run.id,
            agent=run.agent,
            status=run.status,
            input=run.input,
            created_at=run.created_at,
            updated_at=run.updated_at,
            tools=sorted(run.capabilities or {}),
            stopped_reason=run.stopped_reason,
        )


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class RunEventOut(BaseModel):
    id: UUID
    run_id: UUID
    seq: int
    type: str
    data: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, event: runs.RunEvent) -> RunEventOut:
        return cls(
            id=event.id,
            run_id=event.run_id,
            seq=event.seq,
            type=event.type,
            data=event.data,
            created_at=event.created_at,
        )


Read = Annotated[TenantContext, Depends(Authorize("runs:read"))]
Write = Annotated[TenantContext, Depends(Authorize("runs:write"))]


@router.post("", status_code=201)
def create_run(body: RunCreate, ctx: Write, request: Request) -> RunOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        frozen = capabilities_for(tx, ctx.tenant_id, body.agent, rt.tools)
        run = runs.create_run(
            tx,
            ctx,
            agent=body.agent,
            input=body.input,
            now=rt.clock.now(),
            capabilities=frozen.as_json(),
        )
    return RunOut.of(run)


@router.get("")
def list_runs(
    ctx: Read,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RunPage:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found, next_cursor = runs.list_runs(tx, ctx, limit=limit, cursor=cursor)
    return RunPage(items=[RunOut.of(r) for r in found], next_cursor=next_cursor)


@router.get("/{id}")
def get_run(id: UUID, ctx: Read, request: Request) -> RunOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return RunOut.of(runs.get_run(tx, ctx, id))


@router.post("/{id}/events", status_code=201)
def append_event(id: UUID, body: RunEventCreate, ctx: Write, request: Request) -> RunEventOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        event = runs.append_event(tx, ctx, id, type=body.type, data=body.data, now=rt.clock.now())
    return RunEventOut.of(event)


@router.get("/{id}/events")
def list_events(
    id: UUID,
    ctx: Read,
    request: Request,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> list[RunEventOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = runs.list_events(tx, ctx, id, after_seq=after_seq, limit=limit)
    return [RunEventOut.of(e) for e in found]
