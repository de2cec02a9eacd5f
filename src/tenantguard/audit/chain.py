"""The per-tenant audit hash chain: canonical encoding, hashing, verification. Pure.

Each event is encoded canonically (JSON, sorted keys, no whitespace, UTF-8, no floats, times
in UTC with microseconds), hashed with a domain-separated SHA-256 into `event_hash`, and chained:
`chain_hash = SHA-256(previous chain_hash || event_hash)`, the first previous hash being 32
zero bytes. `seq` counts from 0 without gaps per tenant; it is the leaf index of the Merkle log
to come, whose leaves commit to `event_hash`.

Threat stopped: an insider who edits, deletes, inserts or reorders history. Any of those
changes a recomputed hash or breaks the sequence, and `verify_chain` names the first bad entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

GENESIS = bytes(32)
# v1: the spine's events. v2 adds the policy version that decided and the source service.
# Each row records its format, and is hashed in it, so old events verify as they were written.
FORMAT_VERSION = 2
FORMATS = (1, 2)
_DOMAIN = b"tenantguard.audit.event.v1\x00"

Outcome = Literal["success", "failure", "denied"]
JsonValue = str | int | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


def canonical_json(value: object) -> str:
    """Canonical JSON text of `value`. Floats are refused: their text is not canonical."""
    _refuse_floats(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _refuse_floats(value: object) -> None:
    if isinstance(value, float):
        raise TypeError("audit payloads may not hold floats")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("audit payload keys must be strings")
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One committed audit event, with its hashes."""

    tenant_id: UUID
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
    payload: str  # canonical JSON text, hashed exactly as stored
    event_hash: bytes
    chain_hash: bytes
    format: int = 1
    policy_version: str = ""  # the authorisation policy (and later, policy pack) that decided
    source: str = ""  # the service that wrote it (its database application_name)

    def canonical(self) -> bytes:
        return encode_event(
            tenant_id=self.tenant_id,
            seq=self.seq,
            id=self.id,
            occurred_at=self.occurred_at,
            actor_type=self.actor_type,
            actor_id=self.actor_id,
            action=self.action,
            target_type=self.target_type,
            target_id=self.target_id,
            outcome=self.outcome,
            reason=self.reason,
            request_id=self.request_id,
            payload=self.payload,
            format=self.format,
            policy_version=self.policy_version,
            source=self.source,
        )


def encode_event(
    *,
    tenant_id: UUID,
    seq: int,
    id: UUID,
    occurred_at: datetime,
    actor_type: str,
    actor_id: str,
    action: str,
    target_type: str,
    target_id: str,
    outcome: str,
    reason: str,
    request_id: str,
    payload: str,
    format: int = 1,
    policy_version: str = "",
    source: str = "",
) -> bytes:
    """The canonical bytes of an event: every field but the hashes, in its format."""
    if format not in FORMATS:
        raise ValueError(f"unknown audit event format {format}")
    document: dict[str, object] = {
        "v": format,
        "tenant_id": str(tenant_id),
        "seq": seq,
        "id": str(id),
        "occurred_at": format_time(occurred_at),
        "actor_type": actor_type,
        "actor_id": actor_id,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "outcome": outcome,
        "reason": reason,
        "request_id": request_id,
        "payload": payload,
    }
    if format >= 2:
        document["policy_version"] = policy_version
        document["source"] = source
    elif policy_version or source:
        raise ValueError("format 1 events carry no policy version or source")
    return canonical_json(document).encode("utf-8")


def hash_event(canonical: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + canonical).digest()


def link(previous_chain_hash: bytes, event_hash: bytes) -> bytes:
    return hashlib.sha256(previous_chain_hash + event_hash).digest()


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """The result of verifying one tenant's chain: how many events, and the first bad one."""

    checked: int
    head: bytes
    first_bad_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(events: Iterable[AuditEvent]) -> ChainVerdict:
    """Verify events in `seq` order. Stops at, and reports, the first bad entry."""
    previous = GENESIS
    checked = 0
    tenant: UUID | None = None
    for expected_seq, event in enumerate(events):
        tenant = tenant or event.tenant_id
        problem = None
        if event.tenant_id != tenant:
            problem = "event belongs to another tenant"
        elif event.seq != expected_seq:
            problem = f"sequence gap or reorder: expected {expected_seq}, found {event.seq}"
        elif hash_event(event.canonical()) != event.event_hash:
            problem = "event content does not match its hash (modified)"
        elif link(previous, event.event_hash) != event.chain_hash:
            problem = "chain hash does not follow from the previous event"
        if problem is not None:
            return ChainVerdict(checked, previous, first_bad_seq=expected_seq, problem=problem)
        previous = event.chain_hash
        checked += 1
    return ChainVerdict(checked, previous)
