"""Review of the audit and log channels of the PII policy: each test states the behaviour the
channels promise (no personal data in an audit row or a log line unless the tenant's committed
policy flags it; findings that cannot be forged; a screen that never fails an unrelated action)
(each was a strict xfail until its fix landed)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events, record_action, verify_tenant
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.pii.detectors import DetectorRegistry, default_detectors
from tenantguard.pii.sentinel import Sentinel
from tenantguard.testing import FakeClock

ACTOR = Principal(type="system", id="tests")
REGISTRY = DetectorRegistry(default_detectors())
EMAIL = "ada@acme.example"
CARD = "4111111111111111"


def _ctx(tenant: NewTenant) -> TenantContext:
    return TenantContext(tenant.tenant_id, ACTOR, frozenset(), "review")


def _write(
    db: Database,
    tenant: NewTenant,
    clock: FakeClock,
    payload: dict[str, Any],
    *,
    reason: str = "",
    target_id: str = "x",
) -> None:
    with db.tenant_transaction(tenant.tenant_id) as tx:
        record_action(
            tx,
            _ctx(tenant),
            action="test.note",
            target_type="tenant",
            target_id=target_id,
            now=clock.now(),
            reason=reason,
            payload=payload,
        )


def _last_payload(db: Database, tenant: NewTenant) -> dict[str, Any]:
    with db.tenant_transaction(tenant.tenant_id) as tx:
        event = list(iter_events(tx, tenant_id=tenant.tenant_id))[-1]
        assert verify_tenant(tx, tenant_id=tenant.tenant_id).ok
    payload: dict[str, Any] = json.loads(event.payload)
    return payload


def _lines(log_buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log_buffer.getvalue().splitlines() if x.strip()]


def _review_line(log_buffer: io.StringIO) -> dict[str, Any]:
    return [x for x in _lines(log_buffer) if x.get("event") == "test.review"][-1]


@pytest.fixture
def sentinel(db: Database, keyring: Keyring, clock: FakeClock) -> Iterator[Sentinel]:
    installed = Sentinel(db, keyring, REGISTRY, clock=clock)
    installed.install()
    try:
        yield installed
    finally:
        db.audit_screen = None


# --- audit channel -------------------------------------------------------------------------


def test_identifier_shaped_values_are_still_screened(
    db: Database,
    make_tenant: Callable[[str], NewTenant],
    clock: FakeClock,
    log_buffer: io.StringIO,
) -> None:
    values = {"card": CARD, "ip": "ip:10.1.2.3", "phone": "phone:442079460958"}
    for value in values.values():
        assert REGISTRY.scan(value)  # each one is personal data the detectors recognise
    tenant = make_tenant("t")
    _write(db, tenant, clock, values)
    stored = json.dumps(_last_payload(db, tenant))
    structlog.get_logger("tests").info("test.review", **values)
    line = json.dumps(_review_line(log_buffer))
    for value in (CARD, "10.1.2.3", "442079460958"):
        assert value not in stored
        assert value not in line


def test_keys_of_payload_mappings_are_screened(
    db: Database,
    make_tenant: Callable[[str], NewTenant],
    clock: FakeClock,
    log_buffer: io.StringIO,
) -> None:
    tenant = make_tenant("t")
    _write(db, tenant, clock, {"votes": {EMAIL: "yes"}})
    assert EMAIL not in json.dumps(_last_payload(db, tenant))
    structlog.get_logger("tests").info("test.review", votes={EMAIL: "yes"})
    assert EMAIL not in json.dumps(_review_line(log_buffer))


def test_numbers_carrying_personal_data_are_screened(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock
) -> None:
    tenant = make_tenant("t")
    _write(db, tenant, clock, {"card": int(CARD)})
    assert CARD not in json.dumps(_last_payload(db, tenant))


def test_a_denied_route_does_not_audit_the_personal_data_in_its_path(
    client: TestClient, db: Database, make_tenant: Callable[[str], NewTenant]
) -> None:
    tenant = make_tenant("t")
    admin = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    created = client.post(
        "/api/api-keys", json={"name": "reader", "capabilities": ["memory:read"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    reader = {"Authorization": f"Bearer {created.json()['secret']}"}
    denied = client.get(f"/api/secrets/{EMAIL}", headers=reader)
    assert denied.status_code == 403, denied.text
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list(iter_events(tx, tenant_id=tenant.tenant_id))
    refusal = [e for e in events if e.outcome == "denied"][-1]
    assert EMAIL not in refusal.target_id


def test_with_the_sentinel_a_payload_cannot_forge_the_findings_member(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock, sentinel: Sentinel
) -> None:
    tenant = make_tenant("t")
    forged = [{"field": "payload.n", "class": "email", "mode": "flag", "score": 100}]
    _write(db, tenant, clock, {"_pii": forged, "n": 1})
    assert _last_payload(db, tenant) == {"n": 1}


def test_a_stored_policy_that_no_longer_parses_does_not_fail_an_unrelated_action(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock, sentinel: Sentinel
) -> None:
    tenant = make_tenant("t")
    # Written by an older release whose detectors had a class this one no longer has.
    with db.tenant_transaction(tenant.tenant_id) as tx:
        tx.execute(
            "INSERT INTO tenantguard.pii_policies (tenant_id, document, version, updated_at)"
            " VALUES (%s, %s, 1, %s)",
            (tenant.tenant_id, '{"modes":{"horoscope":{"audit":"flag"}}}', clock.now()),
        )
    _write(db, tenant, clock, {"note": f"mail {EMAIL}"})  # raises PolicyInvalid today
    assert EMAIL not in json.dumps(_last_payload(db, tenant))


def test_after_a_shred_audit_events_with_personal_data_still_append(
    db: Database,
    make_tenant: Callable[[str], NewTenant],
    clock: FakeClock,
    keyring: Keyring,
    sentinel: Sentinel,
) -> None:
    tenant = make_tenant("t")
    _write(db, tenant, clock, {"note": f"mail {EMAIL}"})  # the token key is created here
    with db.tenant_transaction(tenant.tenant_id) as tx:
        keyring.destroy_all(tx, _ctx(tenant))
    _write(db, tenant, clock, {"note": f"mail {EMAIL}"})  # raises DecryptionFailed today
    assert EMAIL not in json.dumps(_last_payload(db, tenant))


def test_without_a_sentinel_audit_tokens_do_not_link_tenants(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock
) -> None:
    assert db.audit_screen is None
    tenant, other = make_tenant("t"), make_tenant("u")
    _write(db, tenant, clock, {"note": EMAIL})
    _write(db, other, clock, {"note": EMAIL})
    mine, theirs = _last_payload(db, tenant)["note"], _last_payload(db, other)["note"]
    assert mine.startswith("[EMAIL_")
    assert mine != theirs


# --- log channel ---------------------------------------------------------------------------


def test_a_rolled_back_policy_change_does_not_unmask_log_lines(
    db: Database,
    make_tenant: Callable[[str], NewTenant],
    clock: FakeClock,
    sentinel: Sentinel,
    log_buffer: io.StringIO,
) -> None:
    tenant = make_tenant("t")

    class Abort(Exception):
        pass

    def change_then_roll_back() -> None:
        with db.tenant_transaction(tenant.tenant_id) as tx:
            sentinel.set_policy(
                tx, _ctx(tenant), {"modes": {"email": {"log": "flag"}}}, now=clock.now()
            )
            raise Abort

    with pytest.raises(Abort):
        change_then_roll_back()
    with db.tenant_transaction(tenant.tenant_id) as tx:  # nothing was committed
        stored = tx.execute(
            "SELECT count(*) FROM tenantguard.pii_policies WHERE tenant_id = %s",
            (tenant.tenant_id,),
        ).fetchone()
    assert stored == (0,)
    structlog.get_logger("tests").info(
        "test.review", tenant_id=str(tenant.tenant_id), note=f"mail {EMAIL}"
    )
    assert EMAIL not in json.dumps(_review_line(log_buffer))


def test_access_log_query_strings_are_screened(log_buffer: io.StringIO) -> None:
    encoded = "ada%40acme.example"
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "testclient:50000",
        "GET",
        f"/api/users?email={encoded}",
        "1.1",
        200,
    )
    assert "/api/users?email=" in log_buffer.getvalue()
    assert encoded not in log_buffer.getvalue()


def test_a_log_line_cannot_forge_its_findings(log_buffer: io.StringIO) -> None:
    structlog.get_logger("tests").info("test.review", pii=["note:email"], n=1)
    assert _review_line(log_buffer).get("pii") != ["note:email"]
