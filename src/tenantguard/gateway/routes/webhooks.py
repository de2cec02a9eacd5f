"""Inbound webhooks: `/api/webhook-sources` (a tenant's sources and what they sent) and the
public `POST /api/webhooks/inbound/{tenant}/{source}`, where the signature over the raw body is
the credential.

A request to a source that exists is counted (`requests`, as the credential
`webhook:<source>`: a flood of forgeries hits the platform's rate limit, not the audit log's
size), checked, and kept or refused; acceptance and each refusal are audited in the tenant's
chain with the reason (`webhook_malformed`, `webhook_stale`, `webhook_signature_invalid`,
`webhook_replayed`). A request for a tenant or source that does not exist is refused like a bad
signature and only logged: there is no chain to write it to, and the answer must not tell
which sources exist.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.audit.store import record_action
from tenantguard.context import Principal, TenantContext
from tenantguard.data import webhook_sources
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import request_id, runtime
from tenantguard.quotas.core import Subject
from tenantguard.webhooks.signing import WebhookRejected, WebhookSignatureInvalid

router = APIRouter(tags=["webhooks"])
_log = structlog.get_logger("tenantguard.webhooks")
Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
Read = Annotated[TenantContext, Depends(Authorize("webhooks:read"))]
Manage = Annotated[TenantContext, Depends(Authorize("webhooks:manage"))]


class SourcePut(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"scheme": "stripe", "secret": "stripe-signing"}]},
    )
    scheme: webhook_sources.Scheme
    secret: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SourceOut(BaseModel):
    name: str
    scheme: str
    secret: str
    url: str  # where the source sends, relative to the gateway
    created_at: datetime
    updated_at: datetime


class ReceiptOut(BaseModel):
    id: UUID
    source: str
    signed_at: datetime
    received_at: datetime
    body_base64: str
    body_sha256: str


class Accepted(BaseModel):
    id: UUID


def _out(tenant_id: UUID, source: webhook_sources.Source) -> SourceOut:
    return SourceOut(
        name=source.name,
        scheme=source.scheme,
        secret=source.secret_name,
        url=f"/api/webhooks/inbound/{tenant_id}/{source.name}",
        created_at=source.created_at,
        updated_at=source.updated_at,
    )


@router.put("/api/webhook-sources/{name}")
def put_source(name: Name, body: SourcePut, ctx: Manage, request: Request) -> SourceOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        source = webhook_sources.put(
            tx, ctx, name, scheme=body.scheme, secret_name=body.secret, now=rt.clock.now()
        )
    return _out(ctx.tenant_id, source)


@router.get("/api/webhook-sources")
def list_sources(ctx: Read, request: Request) -> list[SourceOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [_out(ctx.tenant_id, s) for s in webhook_sources.list_sources(tx, ctx.tenant_id)]


@router.delete("/api/webhook-sources/{name}", status_code=204)
def delete_source(name: Name, ctx: Manage, request: Request) -> Response:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        webhook_sources.delete(tx, ctx, name, now=rt.clock.now())
    return Response(status_code=204)


@router.get("/api/webhook-sources/{name}/receipts")
def list_receipts(name: Name, ctx: Read, request: Request) -> list[ReceiptOut]:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        receipts = webhook_sources.list_receipts(tx, ctx, rt.keyring, name)
    return [
        ReceiptOut(
            id=r.id,
            source=r.source,
            signed_at=r.signed_at,
            received_at=r.received_at,
            body_base64=base64.b64encode(r.body).decode("ascii"),
            body_sha256=r.body_sha256,
        )
        for r in receipts
    ]


async def raw_body(request: Request) -> bytes:
    """The request's bytes as sent: a signature covers them, not a parse of them."""
    return await request.body()


@router.post("/api/webhooks/inbound/{tenant}/{source}")
def receive(
    tenant: UUID, source: Name, request: Request, body: Annotated[bytes, Depends(raw_body)]
) -> Accepted:
    rt = runtime(request)
    now = rt.clock.now()
    ctx = TenantContext(tenant, Principal("webhook", source), frozenset(), request_id(request))
    with rt.db.tenant_transaction(tenant) as tx:
        found = webhook_sources.get(tx, tenant, source)
    if found is None:
        _log.warning("webhook.unknown_source", request_id=ctx.request_id)
        raise WebhookSignatureInvalid()
    rt.meter.charge(tenant, "requests", Subject(credential=f"webhook:{source}"))
    headers = {key.lower(): value for key, value in request.headers.items()}
    try:
        with rt.db.tenant_transaction(tenant) as tx:
            verified, audited = webhook_sources.verify(
                tx, ctx, rt.keyring, found, headers=headers, body=body, now=now,
                recent=rt.secret_reads,
            )  # fmt: skip
            receipt = webhook_sources.keep(
                tx, ctx, rt.keyring, found, verified=verified, body=body, now=now
            )
    except WebhookRejected as refused:
        with rt.db.tenant_transaction(tenant) as tx:
            record_action(
                tx,
                ctx,
                action="webhook.received",
                target_type="webhook_source",
                target_id=source,
                now=now,
                outcome="denied",
                reason=refused.code,
            )
        raise
    rt.secret_reads.mark(audited)
    return Accepted(id=receipt.id)
