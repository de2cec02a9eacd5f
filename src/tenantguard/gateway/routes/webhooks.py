"""Webhooks. Outbound: `/api/webhook-endpoints` (a tenant's endpoints; the signing secret is
shown when made and when rotated, never again). Inbound: `/api/webhook-sources` (a tenant's
sources and what they sent) and the public
`POST /api/webhooks/inbound/{tenant}/{scheme}/{source}`, where the signature over the raw body
is the credential.

A request to a source that exists is counted (`requests`, as the credential
`webhook:<source>`, against the platform's limits only: a flood of forgeries hits the rate
limit of that source, not the audit log's size nor the tenant's own quota), checked, and
kept or refused; acceptance and each refusal are audited in the tenant's chain with the
reason (`webhook_malformed`, `webhook_stale`, `webhook_signature_invalid`,
`webhook_replayed`). A request for a tenant or source that does not exist is refused like a bad
signature and only logged: there is no chain to write it to. Its form and time are checked
first, under the scheme its URL names, exactly as a source's would be: no answer (malformed,
stale, a bad signature) tells which sources exist. Only the rate limit does, past 1,200
forgeries a minute (there is no tenant to count an unknown source against).
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.audit.store import record_action
from tenantguard.context import Principal, TenantContext
from tenantguard.data import egress as egress_store
from tenantguard.data import webhook_endpoints, webhook_sources
from tenantguard.errors import RequestInvalid
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import request_id, runtime
from tenantguard.quotas.core import Subject
from tenantguard.webhooks.signing import WebhookRejected

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
        url=f"/api/webhooks/inbound/{tenant_id}/{source.scheme}/{source.name}",
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


@router.post("/api/webhooks/inbound/{tenant}/{scheme}/{source}")
def receive(
    tenant: UUID,
    scheme: webhook_sources.Scheme,
    source: Name,
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
) -> Accepted:
    rt = runtime(request)
    now = rt.clock.now()
    ctx = TenantContext(tenant, Principal("webhook", source), frozenset(), request_id(request))
    headers = {key.lower(): value for key, value in request.headers.items()}
    with rt.db.tenant_transaction(tenant) as tx:
        found = webhook_sources.get(tx, tenant, source)
    if found is None or found.scheme != scheme:
        _log.warning("webhook.unknown_source", request_id=ctx.request_id)
        webhook_sources.check_unknown(scheme, headers, body, now=now)  # raises, always
    # The platform's limits only: forgeries must not use up the tenant's own request quota
    # (its API would answer 429 to its own people); they slow down this source alone.
    rt.meter.charge(tenant, "requests", Subject(credential=f"webhook:{source}"), own_limits=False)
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


# Outbound: the tenant's endpoints. The secret is in the answer to its creation and to a
# rotation, and nowhere else.
Endpoints = "/api/webhook-endpoints"


class EndpointCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://hooks.example.com/tg", "event_types": ["webhook.test"]}]
        },
    )
    url: str = Field(min_length=1, max_length=2048, pattern=r"^[!-~]+$")
    event_types: list[str] = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=256)


class EndpointOut(BaseModel):
    id: UUID
    url: str
    event_types: list[str]
    description: str
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str  # shown once


class Rotate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"overlap_seconds": 86400}]}
    )
    overlap_seconds: int = Field(default=86_400, ge=0, le=7 * 86_400)


class Rotated(BaseModel):
    secret: str  # shown once
    previous_retire_at: datetime


def _endpoint_out(endpoint: webhook_endpoints.Endpoint) -> EndpointOut:
    return EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        created_at=endpoint.created_at,
    )


@router.post(Endpoints, status_code=201)
def create_endpoint(body: EndpointCreate, ctx: Manage, request: Request) -> EndpointCreated:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        policy = egress_store.policy_for(tx, ctx.tenant_id, rt.egress)
        endpoint, secret = webhook_endpoints.create(
            tx,
            ctx,
            rt.keyring,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            policy=policy,
            now=rt.clock.now(),
        )
    return EndpointCreated(**_endpoint_out(endpoint).model_dump(), secret=secret)


@router.get(Endpoints)
def list_endpoints(ctx: Read, request: Request) -> list[EndpointOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [_endpoint_out(e) for e in webhook_endpoints.list_endpoints(tx, ctx.tenant_id)]


@router.get(Endpoints + "/{endpoint_id}")
def get_endpoint(endpoint_id: UUID, ctx: Read, request: Request) -> EndpointOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return _endpoint_out(webhook_endpoints.get(tx, ctx.tenant_id, endpoint_id))


@router.delete(Endpoints + "/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: UUID, ctx: Manage, request: Request) -> Response:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        webhook_endpoints.delete(tx, ctx, endpoint_id, now=rt.clock.now())
    return Response(status_code=204)


@router.post(Endpoints + "/{endpoint_id}/rotate-secret")
def rotate_endpoint_secret(
    endpoint_id: UUID, body: Rotate, ctx: Manage, request: Request
) -> Rotated:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        secret, retires = webhook_endpoints.rotate_secret(
            tx,
            ctx,
            rt.keyring,
            endpoint_id,
            overlap=timedelta(seconds=body.overlap_seconds),
            now=rt.clock.now(),
        )
    return Rotated(secret=secret, previous_retire_at=retires)


class Queued(BaseModel):
    delivery_ids: list[UUID]


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    status_code: int | None
    error: str
    duration_ms: int


class DeliveryOut(BaseModel):
    id: UUID
    webhook_id: str
    event_type: str
    created_at: datetime
    status: str
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    finished_at: datetime | None


@router.post(Endpoints + "/{endpoint_id}/test", status_code=202)
def test_endpoint(endpoint_id: UUID, ctx: Manage, request: Request) -> Queued:
    """Queue a `webhook.test` event for this endpoint (sent by the delivery pass)."""
    rt = runtime(request)
    now = rt.clock.now()
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        endpoint = webhook_endpoints.get(tx, ctx.tenant_id, endpoint_id)
        if "webhook.test" not in endpoint.event_types:
            raise RequestInvalid("This endpoint does not subscribe to webhook.test.")
        queued = webhook_endpoints.emit(
            tx,
            ctx,
            rt.keyring,
            "webhook.test",
            {"endpoint_id": str(endpoint_id)},
            now=now,
            endpoint_id=endpoint_id,
        )
        record_action(
            tx,
            ctx,
            action="webhook_endpoint.test",
            target_type="webhook_endpoint",
            target_id=str(endpoint_id),
            now=now,
        )
    return Queued(delivery_ids=queued)


@router.get(Endpoints + "/{endpoint_id}/deliveries")
def list_deliveries(endpoint_id: UUID, ctx: Read, request: Request) -> list[DeliveryOut]:
    """The endpoint's delivery log, newest first (no bodies)."""
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = webhook_endpoints.list_deliveries(tx, ctx.tenant_id, endpoint_id)
    return [
        DeliveryOut(
            id=d.id,
            webhook_id=d.message_id,
            event_type=d.event_type,
            created_at=d.created_at,
            status=d.status,
            attempts=[
                AttemptOut(
                    attempt=a.attempt,
                    started_at=a.started_at,
                    status_code=a.status_code,
                    error=a.error,
                    duration_ms=a.duration_ms,
                )
                for a in attempts
            ],
            next_attempt_at=d.next_attempt_at,
            finished_at=d.finished_at,
        )
        for d, attempts in found
    ]
