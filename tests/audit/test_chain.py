"""The hash chain, pure: canonical encoding, and detection of every kind of edit."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantguard.audit.chain import (
    GENESIS,
    AuditEvent,
    canonical_json,
    encode_event,
    hash_event,
    link,
    verify_chain,
)

TENANT = UUID("11111111-1111-4111-8111-111111111111")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_chain(n: int, tenant: UUID = TENANT) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    previous = GENESIS
    for seq in range(n):
        fields = {
            "tenant_id": tenant,
            "seq": seq,
            "id": uuid4(),
            "occurred_at": T0 + timedelta(seconds=seq),
            "actor_type": "api_key",
            "actor_id": "k",
            "action": f"memory.update.{seq}",
            "target_type": "memory_entry",
            "target_id": str(seq),
            "outcome": "success",
            "reason": "",
            "request_id": "r",
            "payload": canonical_json({"version": seq}),
        }
        event_hash = hash_event(encode_event(**fields))  # type: ignore[arg-type]
        chain_hash = link(previous, event_hash)
        events.append(AuditEvent(**fields, event_hash=event_hash, chain_hash=chain_hash))  # type: ignore[arg-type]
        previous = chain_hash
    return events


def test_canonical_json_is_sorted_compact_and_refuses_floats() -> None:
    """Key order and spacing never change the bytes; floats have no canonical text."""
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'
    with pytest.raises(TypeError):
        canonical_json({"x": 1.5})


def test_naive_times_are_refused() -> None:
    """An audit time without a zone is ambiguous: refused."""
    fields = dataclasses.asdict(make_chain(1)[0])
    fields["occurred_at"] = datetime(2026, 1, 1)  # a naive time: the point of the test
    del fields["event_hash"], fields["chain_hash"]
    with pytest.raises(ValueError, match="timezone"):
        encode_event(**fields)


def test_an_intact_chain_verifies() -> None:
    """Every event checked; the head is the last chain hash."""
    events = make_chain(20)
    verdict = verify_chain(events)
    assert verdict.ok
    assert verdict.checked == 20
    assert verdict.head == events[-1].chain_hash


def test_the_empty_chain_verifies_to_genesis() -> None:
    verdict = verify_chain([])
    assert verdict.ok
    assert verdict.head == GENESIS


@given(n=st.integers(2, 12), data=st.data())
def test_any_field_edit_is_found_at_that_event(n: int, data: st.DataObject) -> None:
    """Changing any field of any event is reported at exactly that event."""
    events = make_chain(n)
    index = data.draw(st.integers(0, n - 1))
    field = data.draw(
        st.sampled_from(
            ["actor_id", "action", "target_id", "outcome", "reason", "request_id", "payload"]
        )
    )
    changes: dict[str, Any] = {field: "tampered"}
    events[index] = dataclasses.replace(events[index], **changes)
    verdict = verify_chain(events)
    assert verdict.first_bad_seq == index
    assert verdict.problem is not None


@given(n=st.integers(3, 12), data=st.data())
def test_deletion_insertion_and_reordering_are_found(n: int, data: st.DataObject) -> None:
    """Removing, duplicating or swapping events breaks the sequence or the chain."""
    events = make_chain(n)
    i = data.draw(st.integers(0, n - 2))
    removed = events[:i] + events[i + 1 :]
    assert not verify_chain(removed).ok
    duplicated = [*events[: i + 1], events[i], *events[i + 1 :]]
    assert not verify_chain(duplicated).ok
    swapped = list(events)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    assert not verify_chain(swapped).ok


def test_a_recomputed_forgery_still_breaks_the_chain() -> None:
    """Editing an event and recomputing its own hash is caught by the next link."""
    events = make_chain(5)
    forged_fields = dataclasses.asdict(events[2])
    forged_fields["action"] = "nothing.happened"
    del forged_fields["event_hash"], forged_fields["chain_hash"]
    event_hash = hash_event(encode_event(**forged_fields))
    events[2] = dataclasses.replace(events[2], action="nothing.happened", event_hash=event_hash)
    verdict = verify_chain(events)
    assert verdict.first_bad_seq == 2
    assert verdict.problem == "chain hash does not follow from the previous event"


def test_events_of_another_tenant_do_not_verify_in_a_chain() -> None:
    """A chain must belong to one tenant."""
    mixed = make_chain(2) + make_chain(3, tenant=uuid4())[2:]
    assert verify_chain(mixed).problem == "event belongs to another tenant"


def test_format_2_hashes_the_policy_version_and_the_source() -> None:
    """A v2 event commits to the policy that decided it and the service that wrote it: change
    either and the hash changes. A v1 event (the spine's) cannot claim them."""
    (event,) = make_chain(1)
    fields = {
        f.name: getattr(event, f.name)
        for f in dataclasses.fields(event)
        if f.name not in ("event_hash", "chain_hash")
    }
    v2 = {**fields, "format": 2, "policy_version": "authz:abc", "source": "tenantguard-gateway"}
    base = hash_event(encode_event(**v2))
    assert base != hash_event(encode_event(**fields))
    assert base != hash_event(encode_event(**{**v2, "policy_version": "authz:abd"}))
    assert base != hash_event(encode_event(**{**v2, "source": "tenantguard-cli"}))
    with pytest.raises(ValueError, match="format 1"):
        encode_event(**{**fields, "source": "tenantguard-gateway"})
    with pytest.raises(ValueError, match="unknown"):
        encode_event(**{**fields, "format": 3})
