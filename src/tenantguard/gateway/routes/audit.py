"""`/api/audit/…`: the caller tenant's audit events with their hashes, its signed checkpoints,
and RFC 6962 / RFC 9162 proofs (base64 hashes) that any independent verifier can check
against a checkpoint: inclusion of an event, consistency of two tree sizes."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from tenantguard.audit import AuditEvent, checkpoints, list_events, merkle
from tenantguard.context import TenantContext
from tenantguard.db.doctor import examine
from tenantguard.evidence.pack import build_pack, evidence_period
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditEventOut(BaseModel):
    seq: int
    id: UUID
    occurred_at: datetime
    actor_type: str
    actor_id: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    reason: str
    request_id: str
    payload: str
    event_hash: str
    chain_hash: str
    format: int
    policy_version: str
    source: str

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            seq=event.seq,
            id=event.id,
            occurred_at=event.occurred_at,
            actor_type=event.actor_type,
            actor_id=event.actor_id,
            action=event.action,
            target_type=event.target_type,
            target_id=event.target_id,
            outcome=event.outcome,
            reason=event.reason,
            request_id=event.request_id,
            payload=event.payload,
            event_hash=event.event_hash.hex(),
            chain_hash=event.chain_hash.hex(),
            format=event.format,
            policy_version=event.policy_version,
            source=event.source,
        )


Read = Annotated[TenantContext, Depends(Authorize("audit:read"))]
Checkpoint = Annotated[TenantContext, Depends(Authorize("audit:checkpoint"))]
MAX_SIZE = 2**63 - 1  # tree sizes and indexes are bigints
Evidence = Annotated[TenantContext, Depends(Authorize("evidence:export"))]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CheckpointOut(BaseModel):
    tree_size: int
    root_hash: str  # base64, as in the note
    signed_at: datetime
    kid: str
    note: str  # the C2SP signed note: what a verifier checks

    @classmethod
    def of(cls, found: checkpoints.StoredCheckpoint) -> CheckpointOut:
        return cls(
            tree_size=found.tree_size,
            root_hash=_b64(found.root_hash),
            signed_at=found.signed_at,
            kid=found.kid,
            note=found.note,
        )


class InclusionOut(BaseModel):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]


class ConsistencyOut(BaseModel):
    first: int
    second: int
    consistency: list[str]


@router.get("/events")
def audit_events(
    ctx: Read,
    request: Request,
    after_seq: Annotated[int, Query(ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditEventOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = list_events(tx, tenant_id=ctx.tenant_id, after_seq=after_seq, limit=limit)
    return [AuditEventOut.of(e) for e in found]


@router.get("/checkpoints/latest")
def latest_checkpoint(ctx: Read, request: Request) -> CheckpointOut:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return CheckpointOut.of(checkpoints.latest(tx, ctx.tenant_id))


@router.post("/checkpoints", status_code=201)
def make_checkpoint(ctx: Checkpoint, request: Request, response: Response) -> CheckpointOut:
    """Sign a checkpoint of the log as it is now (also written to the witness directory). A
    log that has not grown since its latest checkpoint gets that one back (200): asking
    cannot pile up checkpoints for the verifier to check."""
    rt = runtime(request)
    made = rt.checkpointer.checkpoint(ctx.tenant_id, only_if_grown=True)
    if made is None:
        response.status_code = 200
        with rt.db.tenant_transaction(ctx.tenant_id) as tx:
            made = checkpoints.latest(tx, ctx.tenant_id)
    return CheckpointOut.of(made)


@router.get("/proofs/inclusion")
def inclusion_proof(
    ctx: Read,
    request: Request,
    index: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    tree_size: Annotated[int, Query(ge=1, le=MAX_SIZE)],
) -> InclusionOut:
    """RFC 6962 `PATH(index, D[tree_size])`: the event at `index` is in the tree of that size."""
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        leaves = checkpoints.leaf_hashes(tx, ctx.tenant_id, size=tree_size)
    path = merkle.inclusion_proof(index, tree_size, leaves)
    return InclusionOut(
        leaf_index=index,
        tree_size=tree_size,
        leaf_hash=_b64(leaves[index]),
        audit_path=[_b64(p) for p in path],
    )


@router.get("/proofs/consistency")
def consistency_proof(
    ctx: Read,
    request: Request,
    first: Annotated[int, Query(ge=1, le=MAX_SIZE)],
    second: Annotated[int, Query(ge=1, le=MAX_SIZE)],
) -> ConsistencyOut:
    """RFC 6962 `PROOF(first, D[second])`: the tree of `first` events is a prefix of the
    tree of `second`."""
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        leaves = checkpoints.leaf_hashes(tx, ctx.tenant_id, size=second)
    path = merkle.consistency_proof(first, second, leaves)
    return ConsistencyOut(first=first, second=second, consistency=[_b64(p) for p in path])


@router.get(
    "/evidence",
    response_class=Response,
    responses={200: {"content": {"application/x-tar": {}}}},
)
def evidence_pack(
    ctx: Evidence,
    request: Request,
    start: Annotated[datetime, Query(alias="from")],
    end: Annotated[datetime, Query(alias="to")],
) -> Response:
    """A signed evidence pack of the tenant's audit for [from, to) and the controls in force
    (`tenantguard evidence verify PACK` checks it offline)."""
    rt = runtime(request)
    start, end = evidence_period(start, end)
    with rt.db.system_transaction() as tx:
        doctor = examine(tx)
    pack = build_pack(
        rt.db,
        rt.keyring,
        rt.checkpointer,
        tenant_id=ctx.tenant_id,
        start=start,
        end=end,
        doctor=doctor,
        test_results=rt.evidence_test_results,
        now=rt.clock.now(),
    )
    stamp = rt.clock.now().strftime("%Y%m%dT%H%M%SZ")
    return Response(
        pack,
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="evidence-{ctx.tenant_id}-{stamp}.tar"',
            "Cache-Control": "no-store",
        },
    )
