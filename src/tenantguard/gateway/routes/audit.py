"""`/api/audit/events`: the caller tenant's audit events, with their hashes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from tenantguard.audit import AuditEvent, list_events
from tenantguard.context import TenantContext
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
        )


Read = Annotated[TenantContext, Depends(Authorize("audit:read"))]


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
