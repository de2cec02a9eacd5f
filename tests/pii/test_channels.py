"""The audit and log channels: personal data in an audit event's reason or payload, or in a log
line, is screened by the tenant's policy before it is hashed or written; identifiers are left
alone; reversible is refused there; tokens on the audit channel are the tenant's strict tokens
once the sentinel is installed; without it the default is strict, never a pass-through."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events, record_action, verify_tenant
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.pii import channels
from tenantguard.pii.detectors import DetectorRegistry, default_detectors
from tenantguard.pii.policy import PolicyInvalid, parse_policy
from tenantguard.pii.sentinel import Sentinel
from tenantguard.testing import FakeClock

ACTOR = Principal(type="system", id="tests")
REGISTRY = DetectorRegistry(default_detectors())
EMAIL = "ada@acme.example"


def _ctx(tenant: NewTenant) -> TenantContext:
    return TenantContext(tenant.tenant_id, ACTOR, frozenset(), "channels")


def _write(db: Database, tenant: NewTenant, clock: FakeClock, reason: str, payload: object) -> None:
    with db.tenant_transaction(tenant.tenant_id) as tx:
        record_action(
            tx,
            _ctx(tenant),
            action="test.note",
            target_type="tenant",
            target_id=str(tenant.tenant_id),
            now=clock.now(),
            reason=reason,
            payload={"note": payload},
        )


def _last(db: Database, tenant: NewTenant) -> tuple[str, dict[str, Any]]:
    with db.tenant_transaction(tenant.tenant_id) as tx:
        event = list(iter_events(tx, tenant_id=tenant.tenant_id))[-1]
        assert verify_tenant(tx, tenant_id=tenant.tenant_id).ok
    payload: dict[str, Any] = json.loads(event.payload)
    return event.reason, payload


@pytest.fixture
def sentinel(db: Database, keyring: Keyring, clock: FakeClock) -> Iterator[Sentinel]:
    installed = Sentinel(db, keyring, REGISTRY, clock=clock)
    installed.install()
    try:
        yield installed
    finally:
        db.audit_screen = None


def test_without_a_sentinel_audit_payloads_are_strict_and_still_verify(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock
) -> None:
    tenant = make_tenant("t")
    _write(db, tenant, clock, f"asked by {EMAIL}", {"who": f"write to {EMAIL}", "n": 3})
    reason, payload = _last(db, tenant)
    assert EMAIL not in reason
    assert EMAIL not in json.dumps(payload)
    assert reason.startswith("asked by [EMAIL_")
    assert payload["_pii"] == [
        {"field": "reason", "class": "email", "mode": "strict", "score": 90},
        {"field": "payload.note.who", "class": "email", "mode": "strict", "score": 90},
    ]
    assert payload["note"] == {"who": payload["note"]["who"], "n": 3}


def test_identifiers_are_not_screened(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock
) -> None:
    tenant = make_tenant("t")
    ids = {
        "id": "3f2b6c1e-4111-4111-8111-111111111111",
        "hash": "4111111111111111" * 4,
        "at": "2026-12-01T10:00:00+00:00",
        "action": "memory:read",
    }
    _write(db, tenant, clock, "", ids)
    _, payload = _last(db, tenant)
    assert payload == {"note": ids}


def test_with_the_sentinel_audit_tokens_are_the_tenants_strict_tokens(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock, sentinel: Sentinel
) -> None:
    tenant, other = make_tenant("t"), make_tenant("u")
    expected = sentinel.redact(_ctx(tenant), EMAIL, channel="audit", conversation="c").text
    _write(db, tenant, clock, "", EMAIL)
    _write(db, other, clock, "", EMAIL)
    _, mine = _last(db, tenant)
    _, theirs = _last(db, other)
    assert mine["note"] == expected
    assert theirs["note"] != expected  # another tenant's key: another token


def test_a_flag_policy_on_the_audit_channel_keeps_the_value_and_tags_it(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock, sentinel: Sentinel
) -> None:
    tenant = make_tenant("t")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        sentinel.set_policy(
            tx, _ctx(tenant), {"modes": {"email": {"audit": "flag"}}}, now=clock.now()
        )
    _write(db, tenant, clock, "", f"{EMAIL}, card 4111 1111 1111 1111")
    _, payload = _last(db, tenant)
    note = str(payload["note"])
    assert EMAIL in note
    assert "4111" not in note  # cards stay strict: only email was flagged
    assert {t["mode"] for t in payload["_pii"]} == {"flag", "strict"}


def test_a_payload_cannot_forge_the_findings_member(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock
) -> None:
    tenant = make_tenant("t")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        record_action(
            tx,
            _ctx(tenant),
            action="test.note",
            target_type="tenant",
            target_id="x",
            now=clock.now(),
            payload={"_pii": ["nothing here"], "n": 1},
        )
    _, payload = _last(db, tenant)
    assert payload == {"n": 1}


def test_reversible_is_refused_on_the_log_and_audit_channels() -> None:
    for channel in ("log", "audit"):
        with pytest.raises(PolicyInvalid):
            parse_policy({"modes": {"email": {channel: "reversible"}}}, classes=REGISTRY.classes)
    assert parse_policy({"modes": {"email": {"log": "flag"}}}, classes=REGISTRY.classes)


def _log_line(log_buffer: io.StringIO) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [
        json.loads(x) for x in log_buffer.getvalue().splitlines() if x.strip()
    ]
    return [x for x in lines if x.get("event") == "test.pii"][-1]


def test_log_lines_are_screened_strictly_by_default(log_buffer: io.StringIO) -> None:
    import structlog  # noqa: PLC0415

    structlog.get_logger("tests").info("test.pii", note=f"mail {EMAIL}", ip="10.1.2.3", n=2)
    line = _log_line(log_buffer)
    assert EMAIL not in json.dumps(line)
    assert "10.1.2.3" not in json.dumps(line)
    assert str(line["note"]).startswith("mail [EMAIL_")
    assert line["n"] == 2
    assert line["pii"] == ["ip:ip_address", "note:email"]


def test_log_lines_follow_a_tenants_flag_policy_while_it_is_fresh(
    log_buffer: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    import structlog  # noqa: PLC0415

    from tenantguard.context import PLATFORM_TENANT_ID  # noqa: PLC0415

    policy = parse_policy({"modes": {"email": {"log": "flag"}}}, classes=REGISTRY.classes)
    channels.remember_policy(PLATFORM_TENANT_ID, policy)
    log = structlog.get_logger("tests")
    log.info("test.pii", tenant_id=str(PLATFORM_TENANT_ID), note=EMAIL)
    assert _log_line(log_buffer)["note"] == EMAIL
    log.info("test.pii", note=EMAIL)  # no tenant named: the default
    assert _log_line(log_buffer)["note"] != EMAIL
    monkeypatch.setattr(channels, "POLICY_TTL", -1.0)  # the entry is now stale
    log.info("test.pii", tenant_id=str(PLATFORM_TENANT_ID), note=EMAIL)
    assert _log_line(log_buffer)["note"] != EMAIL


def test_stdlib_messages_are_screened_too(log_buffer: io.StringIO) -> None:
    import logging  # noqa: PLC0415

    logging.getLogger("uvicorn.error").warning("client %s sent a bad request", EMAIL)
    assert EMAIL not in log_buffer.getvalue()
    assert "[EMAIL_" in log_buffer.getvalue()


def test_screen_structure_walks_nested_values() -> None:
    redact = channels.redactor(
        REGISTRY, parse_policy({}, classes=REGISTRY.classes), "log", b"k" * 32
    )
    value, tags = channels.screen_structure(
        {"a": [EMAIL, {"b": "call +44 20 7946 0958"}], "c": 1.5, "d": None}, redact
    )
    assert EMAIL not in json.dumps(value)
    assert [t.field for t in tags] == ["a[0]", "a[1].b"]
    assert value["c"] == 1.5


def test_the_gateway_installs_the_sentinel_on_the_audit_channel(
    client: TestClient, db: Database, make_tenant: Callable[[str], NewTenant]
) -> None:
    """A key named after a person: its audit event holds the tenant's strict token."""
    tenant = make_tenant("t")
    admin = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    created = client.post(
        "/api/api-keys",
        json={"name": f"for {EMAIL}", "capabilities": ["memory:read"]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    expected = client.post(
        "/api/pii/redact",
        json={"text": f"for {EMAIL}", "channel": "audit", "conversation": "c"},
        headers=admin,
    ).json()["text"]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list(iter_events(tx, tenant_id=tenant.tenant_id))
    event = [e for e in events if e.action == "api_key.create"][-1]  # after the admin key's
    assert json.loads(event.payload)["name"] == expected
    assert EMAIL not in event.payload
