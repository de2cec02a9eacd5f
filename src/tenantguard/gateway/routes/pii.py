"""`/api/pii/…`: scan, redact and re-identify with the tenant's PII sentinel, and the tenant's
PII policy at `/api/admin/pii-policy` (see `pii.sentinel`, `pii.policy`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.context import TenantContext
from tenantguard.gateway.auth import Authorize
from tenantguard.gateway.runtime import runtime

router = APIRouter(tags=["pii"])
Scan = Annotated[TenantContext, Depends(Authorize("pii:scan"))]
Redact = Annotated[TenantContext, Depends(Authorize("pii:redact"))]
Reidentify = Annotated[TenantContext, Depends(Authorize("pii:reidentify"))]
ManagePolicy = Annotated[TenantContext, Depends(Authorize("pii_policy:manage"))]
_TEXT = Field(min_length=0, max_length=500_000)
_CONVERSATION = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")


class ScanIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "Mail ada@acme.example"}]}
    )
    text: str = _TEXT
    classes: list[str] | None = Field(default=None, max_length=50)


class SpanOut(BaseModel):
    start: int
    end: int
    pii_class: str
    score: float


class RedactIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "Mail ada@acme.example", "channel": "prompt", "conversation": "c-1"}
            ]
        },
    )
    text: str = _TEXT
    channel: str = Field(pattern="^(prompt|completion|tool_input|tool_output|log|audit)$")
    conversation: str = _CONVERSATION


class FindingOut(SpanOut):
    mode: str


class RedactOut(BaseModel):
    text: str
    findings: list[FindingOut]
    policy_version: int


class ReidentifyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "Mail [EMAIL_REV_abcdefghijklmnop]", "conversation": "c-1"}]
        },
    )
    text: str = _TEXT
    conversation: str = _CONVERSATION


class ReidentifyOut(BaseModel):
    text: str
    restored: int


class PolicyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"modes": {"email": {"prompt": "reversible"}}, "min_confidence": {"us_ssn": 0.8}}
            ]
        },
    )
    modes: dict[str, dict[str, str]] = Field(default_factory=dict)
    min_confidence: dict[str, float] = Field(default_factory=dict)


class PolicyOut(PolicyIn):
    version: int


@router.post("/api/pii/scan")
def scan(body: ScanIn, _ctx: Scan, request: Request) -> list[SpanOut]:
    """Where personal data is in `text`, by class, with a score (nothing is stored)."""
    spans = runtime(request).sentinel.scan(body.text, body.classes)
    return [SpanOut(start=s.start, end=s.end, pii_class=s.pii_class, score=s.score) for s in spans]


@router.post("/api/pii/redact")
def redact(body: RedactIn, ctx: Redact, request: Request) -> RedactOut:
    """`text` as the tenant's policy allows it on `channel`."""
    done = runtime(request).sentinel.redact(
        ctx, body.text, channel=body.channel, conversation=body.conversation
    )
    return RedactOut(
        text=done.text,
        findings=[
            FindingOut(start=f.start, end=f.end, pii_class=f.pii_class, score=f.score, mode=f.mode)
            for f in done.findings
        ],
        policy_version=done.policy_version,
    )


@router.post("/api/pii/reidentify")
def reidentify(body: ReidentifyIn, ctx: Reidentify, request: Request) -> ReidentifyOut:
    """The originals of this tenant's reversible tokens of `conversation` (audited)."""
    text, restored = runtime(request).sentinel.reidentify(
        ctx, body.text, conversation=body.conversation
    )
    return ReidentifyOut(text=text, restored=restored)


@router.get("/api/admin/pii-policy")
def get_policy(ctx: Scan, request: Request) -> PolicyOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        policy, version = rt.sentinel.policy(tx, ctx.tenant_id)
    modes: dict[str, dict[str, str]] = {}
    for (pii_class, channel), mode in policy.modes.items():
        modes.setdefault(pii_class, {})[channel] = mode
    return PolicyOut(modes=modes, min_confidence=dict(policy.min_confidence), version=version)


@router.put("/api/admin/pii-policy")
def put_policy(body: PolicyIn, ctx: ManagePolicy, request: Request) -> PolicyOut:
    """What happens to personal data of each class on each channel (anything not named:
    strict; credentials: strict always)."""
    rt = runtime(request)
    document: dict[str, Any] = body.model_dump()
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        version = rt.sentinel.set_policy(tx, ctx, document, now=rt.clock.now())
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:  # committed: the log channel follows
        rt.sentinel.policy(tx, ctx.tenant_id)
    return PolicyOut(**document, version=version)
