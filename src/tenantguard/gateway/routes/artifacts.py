"""Artifacts: `/api/artifacts` (upload the raw bytes, list, read what one is, delete, issue a
signed download URL) and the public `GET /api/artifact-downloads/{tenant}/{id}?token=…`, where
the signed URL's token is the credential.

A download is answered as an attachment (`Content-Disposition: attachment`, `nosniff`, a
sandboxing CSP, `no-store`): a tenant's HTML is never rendered as the gateway's own page. A
refused token is logged, not audited (the path's tenant is the caller's choice); each download
with an authentic link is counted against the platform's limits as the credential
`signed_url:<id>`, so a leaked link cannot be used to flood.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.artifacts.service import (
    DEFAULT_URL_SECONDS,
    Artifact,
    SignedUrlExpired,
    SignedUrlInvalid,
    check_content_type,
)
from tenantguard.context import TenantContext
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import request_id, runtime
from tenantguard.quotas.core import Subject

router = APIRouter(tags=["artifacts"])
_log = structlog.get_logger("tenantguard.artifacts")
Read = Annotated[TenantContext, Depends(Authorize("artifacts:read"))]
Write = Annotated[TenantContext, Depends(Authorize("artifacts:write"))]


class ArtifactOut(BaseModel):
    id: UUID
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, a: Artifact) -> ArtifactOut:
        return cls(
            id=a.id,
            name=a.name,
            content_type=a.content_type,
            size=a.size,
            sha256=a.sha256,
            created_at=a.created_at,
            created_by=a.created_by,
        )


class ArtifactPage(BaseModel):
    items: list[ArtifactOut]
    next_cursor: str | None


class UrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"expires_in": 300}]})
    expires_in: int = Field(default=DEFAULT_URL_SECONDS, ge=1, le=7 * 86_400)


class UrlOut(BaseModel):
    url: str  # relative to the gateway; the token in it is the credential
    expires_at: datetime


async def raw_body(request: Request) -> bytes:
    return await request.body()


@router.post("/api/artifacts", status_code=201)
def upload(
    ctx: Write,
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    name: Annotated[str, Query(min_length=1, max_length=255)],
) -> ArtifactOut:
    """The request's body is the artifact, as sent; `Content-Type` is recorded."""
    rt = runtime(request)
    content_type = check_content_type(request.headers.get("content-type"))
    return ArtifactOut.of(rt.artifacts.upload(ctx, name, content_type, body))


@router.get("/api/artifacts")
def list_artifacts(
    ctx: Read,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ArtifactPage:
    found, next_cursor = runtime(request).artifacts.list(ctx, limit=limit, cursor=cursor)
    return ArtifactPage(items=[ArtifactOut.of(a) for a in found], next_cursor=next_cursor)


@router.get("/api/artifacts/{id}")
def get_artifact(id: UUID, ctx: Read, request: Request) -> ArtifactOut:
    return ArtifactOut.of(runtime(request).artifacts.get(ctx, id))


@router.delete("/api/artifacts/{id}", status_code=204)
def delete_artifact(id: UUID, ctx: Write, request: Request) -> Response:
    runtime(request).artifacts.delete(ctx, id)
    return Response(status_code=204)


@router.post("/api/artifacts/{id}/url")
def signed_url(id: UUID, body: UrlRequest, ctx: Read, request: Request) -> UrlOut:
    url, expires_at = runtime(request).artifacts.signed_url(ctx, id, body.expires_in)
    return UrlOut(url=url, expires_at=expires_at)


@router.get("/api/artifact-downloads/{tenant}/{id}")
def download(
    tenant: UUID,
    id: UUID,
    request: Request,
    token: Annotated[str, Query(min_length=1, max_length=2048)],
) -> Response:
    rt = runtime(request)
    try:
        artifact = rt.artifacts.authorize_download(tenant, id, token)
    except (SignedUrlInvalid, SignedUrlExpired) as refused:
        _log.warning("artifact.download_refused", reason=refused.code)
        raise
    # Counted once the link is authentic (so only real tenants' counters grow): a leaked
    # link meets the platform's limit for its artifact.
    rt.meter.charge(tenant, "requests", Subject(credential=f"signed_url:{id}"), own_limits=False)
    data = rt.artifacts.read(tenant, artifact, request_id=request_id(request))
    filename = quote(artifact.name, safe="")
    return Response(
        content=data,
        media_type=artifact.content_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )
