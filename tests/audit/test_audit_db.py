"""The audit table: append-only for everyone, written with every change, fail closed, and
tampering by the owner detected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import errors as pg_errors

from tenantguard.audit import iter_events, list_events, verify_tenant
from tenantguard.authz import POLICY_VERSION
from tenantguard.context import Principal
from tenantguard.data.tenants import NewTenant, create_tenant
from tenantguard.db import Database
from tenantguard.testing import TestDatabase

Conn = psycopg.Connection[tuple[object, ...]]
MUTATIONS = (
    "UPDATE tenantguard.audit_events SET reason = 'x'",
    "DELETE FROM tenantguard.audit_events",
    "TRUNCATE tenantguard.audit_events",
)


@pytest.fixture
def tenant_with_history(client: TestClient, make_tenant: Callable[[str], NewTenant]) -> NewTenant:
    """A tenant whose chain holds several events."""
    tenant = make_tenant("audited")
    h = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    entry = client.post("/api/memory", json={"key": "k", "content": "v1"}, headers=h).json()
    client.patch(f"/api/memory/{entry['id']}", json={"content": "v2"}, headers=h)
    client.post("/api/runs", json={"agent": "a"}, headers=h)
    return tenant


def verdict_of(db: Database, tenant: UUID) -> tuple[bool, int | None]:
    with db.tenant_transaction(tenant) as tx:
        verdict = verify_tenant(tx, tenant_id=tenant)
    return verdict.ok, verdict.first_bad_seq


def test_every_write_is_audited_with_its_request_id(
    client: TestClient, make_tenant: Callable[[str], NewTenant], db: Database
) -> None:
    """A write and its audit event share the request id the caller sent."""
    tenant = make_tenant("t")
    h = {"Authorization": f"Bearer {tenant.admin_key.secret}", "X-Request-ID": "write-123"}
    client.post("/api/memory", json={"key": "k", "content": "secret content"}, headers=h)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list_events(tx, tenant_id=tenant.tenant_id)
    assert [e.action for e in events] == ["tenant.create", "api_key.create", "memory.create"]
    assert events[-1].request_id == "write-123"
    assert "secret content" not in events[-1].payload  # content stays out of the audit


def test_the_service_cannot_change_history(
    pg: TestDatabase, tenant_with_history: NewTenant
) -> None:
    """UPDATE, DELETE and TRUNCATE are not granted to the service role."""
    with psycopg.connect(pg.app_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(
            "SELECT set_config('app.tenant_id', %s, false)", (str(tenant_with_history.tenant_id),)
        )
        for statement in MUTATIONS:
            with pytest.raises(pg_errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(statement)


def test_triggers_refuse_the_owner_too(
    owner_in: Callable[[UUID], Conn], tenant_with_history: NewTenant
) -> None:
    """Even the owner cannot UPDATE, DELETE or TRUNCATE while the triggers stand."""
    conn = owner_in(tenant_with_history.tenant_id)
    for statement in MUTATIONS:
        with pytest.raises(pg_errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)


_SWAP = (
    "UPDATE tenantguard.audit_events SET seq = 1000 WHERE seq = 2;"
    " UPDATE tenantguard.audit_events SET seq = 2 WHERE seq = 3;"
    " UPDATE tenantguard.audit_events SET seq = 3 WHERE seq = 1000"
)
_FORGE = (
    "INSERT INTO tenantguard.audit_events SELECT tenant_id, 5, gen_random_uuid(), occurred_at,"
    " actor_type, actor_id, 'forged', target_type, target_id, outcome, reason, request_id,"
    " payload, event_hash, chain_hash FROM tenantguard.audit_events WHERE seq = 4"
)


@pytest.mark.parametrize(
    ("edit", "first_bad"),
    [
        ("UPDATE tenantguard.audit_events SET action = 'memory.read' WHERE seq = 2", 2),
        ("DELETE FROM tenantguard.audit_events WHERE seq = 2", 2),
        (_SWAP, 2),
        (_FORGE, 5),
    ],
    ids=["modified", "deleted", "reordered", "inserted"],
)
def test_owner_tampering_is_detected(
    edit: str,
    first_bad: int,
    db: Database,
    owner_in: Callable[[UUID], Conn],
    tenant_with_history: NewTenant,
) -> None:
    """Modified, deleted, reordered or inserted events break verification at that event."""
    tenant = tenant_with_history.tenant_id
    assert verdict_of(db, tenant) == (True, None)
    conn = owner_in(tenant)
    conn.execute("ALTER TABLE tenantguard.audit_events DISABLE TRIGGER audit_events_append_only")
    try:
        conn.execute(edit.encode())
    finally:
        conn.execute("ALTER TABLE tenantguard.audit_events ENABLE TRIGGER audit_events_append_only")
    assert verdict_of(db, tenant) == (False, first_bad)


def test_failed_audit_write_fails_the_action(
    client: TestClient, make_tenant: Callable[[str], NewTenant], pg: TestDatabase
) -> None:
    """With the audit insert failing, the write is refused (503) and nothing is stored."""
    tenant = make_tenant("t")
    h = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    with psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True) as owner:
        owner.execute("REVOKE INSERT ON tenantguard.audit_events FROM tenantguard_app")
        try:
            refused = client.post("/api/memory", json={"key": "k", "content": "v"}, headers=h)
        finally:
            owner.execute("GRANT INSERT ON tenantguard.audit_events TO tenantguard_app")
    assert refused.status_code == 503
    assert refused.json()["code"] == "audit_unavailable"
    assert client.get("/api/memory", headers=h).json()["items"] == []


def test_events_list_only_the_callers_tenant(
    client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> None:
    """`GET /api/audit/events` is scoped to the caller; the chain fields are exposed."""
    a, b = make_tenant("A"), make_tenant("B")
    listed = client.get(
        "/api/audit/events", headers={"Authorization": f"Bearer {a.admin_key.secret}"}
    ).json()
    assert [e["seq"] for e in listed] == [0, 1]
    assert str(b.tenant_id) not in str(listed)
    assert all(len(e["chain_hash"]) == 64 for e in listed)


def test_events_name_the_policy_and_the_service_and_both_are_hashed(
    pg: TestDatabase, make_tenant: Callable[[str], NewTenant], clock: Any
) -> None:
    """New events are format 2: the authorisation matrix's version and the writing service's
    application_name are recorded, and an owner who edits either is caught by verification."""
    with Database(pg.app_url, application_name="tenantguard-cli") as db:
        tenant = create_tenant(
            db, name="t", actor=Principal("system", "tests"), request_id="v2", now=clock.now()
        )
        with db.tenant_transaction(tenant.tenant_id) as tx:
            events = list(iter_events(tx, tenant_id=tenant.tenant_id))
    assert {(e.format, e.policy_version, e.source) for e in events} == {
        (2, POLICY_VERSION, "tenantguard-cli")
    }
    with psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True) as owner:
        owner.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant.tenant_id),))
        owner.execute(
            "ALTER TABLE tenantguard.audit_events DISABLE TRIGGER audit_events_append_only"
        )
        try:
            owner.execute(
                "UPDATE tenantguard.audit_events SET source = 'tenantguard-gateway'"
                " WHERE tenant_id = %s AND seq = 0",
                (tenant.tenant_id,),
            )
        finally:
            owner.execute(
                "ALTER TABLE tenantguard.audit_events ENABLE TRIGGER audit_events_append_only"
            )
    with Database(pg.app_url) as db, db.tenant_transaction(tenant.tenant_id) as tx:
        verdict = verify_tenant(tx, tenant_id=tenant.tenant_id)
    assert verdict.first_bad_seq == 0
    assert verdict.problem is not None
    assert "modified" in verdict.problem
