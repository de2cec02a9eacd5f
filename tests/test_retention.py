"""Retention: each tenant's policy per kind (defaults, bounds, audited), and the expiry job that
deletes what is older, kind by kind, in each tenant's own context, and clears what expired by
itself; the audit log is never expired."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import webhook_endpoints, webhook_sources
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.egress.check import EgressPolicy
from tenantguard.retention import DEFAULTS, Expiry, check_policy
from tenantguard.testing import FakeClock
from tenantguard.webhooks.signing import Verified

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
URL = "/api/admin/retention"
DAY = timedelta(days=1)


def _expiry(client: TestClient) -> Expiry:
    found = client.app.state.runtime.expiry  # type: ignore[attr-defined]
    assert isinstance(found, Expiry)
    return found


def _count(db: Database, tenant: UUID, table: str) -> int:
    with db.tenant_transaction(tenant) as tx:
        row = tx.execute(f"SELECT count(*) FROM tenantguard.{table}").fetchone()
    assert row is not None
    return int(row[0])


def _actions(db: Database, tenant: UUID) -> list[str]:
    with db.tenant_transaction(tenant) as tx:
        return [e.action for e in iter_events(tx, tenant_id=tenant)]


def _run(client: TestClient, h: dict[str, str]) -> str:
    grants: dict[str, object] = {"tools": {"memory_read": {}}}
    assert client.put("/api/agents/bot", json=grants, headers=h).status_code == 200
    made = client.post("/api/runs", json={"agent": "bot", "input": {}}, headers=h)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_policy_bounds() -> None:
    assert check_policy({"run_events": 1, "artifacts": None}) == {
        "run_events": 1,
        "artifacts": None,
    }
    for bad in (
        {"audit": 10},
        {"run_events": 0},
        {"run_events": 36_501},
        {"run_events": True},
        {"x": 1},
    ):
        with pytest.raises(Exception, match=r"retention|kind"):
            check_policy(bad)


def test_the_policy_api(client: TestClient, as_tenant: AsTenant, db: Database) -> None:
    tenant, h = as_tenant("t")
    first = client.get(URL, headers=h).json()
    assert first["days"] == dict(DEFAULTS)
    assert first["own"] == {}
    assert "never expired" in first["audit"]
    set_ = client.put(URL, json={"days": {"run_events": 7, "artifacts": 90}}, headers=h)
    assert set_.status_code == 200, set_.text
    assert set_.json()["days"] == {**DEFAULTS, "run_events": 7, "artifacts": 90}
    back = client.put(URL, json={"days": {"artifacts": None}}, headers=h).json()
    assert back["days"]["run_events"] == DEFAULTS["run_events"]  # left out: the default again
    assert back["own"] == {"artifacts": None}
    for bad in ({"audit": 400}, {"run_events": 0}, {"nope": 1}):
        refused = client.put(URL, json={"days": bad}, headers=h)
        assert refused.status_code == 422, bad
    assert _actions(db, tenant.tenant_id).count("retention.policy_set") == 2


def test_run_events_older_than_the_policy_go_and_newer_stay(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    a, ha = as_tenant("a")
    b, hb = as_tenant("b")
    assert client.put(URL, json={"days": {"run_events": 1}}, headers=ha).status_code == 200
    for h in (ha, hb):
        run = _run(client, h)
        for i in range(3):
            sent = client.post(
                f"/api/runs/{run}/events", json={"type": "old", "data": {"i": i}}, headers=h
            )
            assert sent.status_code == 201, sent.text
    clock.advance(DAY + timedelta(seconds=1))
    run = _run(client, ha)
    assert client.post(
        f"/api/runs/{run}/events", json={"type": "new", "data": {}}, headers=ha
    ).is_success
    expiry = _expiry(client)
    expiry.batch = 1  # the backlog goes in several transactions
    deleted = expiry.run_tenant(a.tenant_id)
    assert deleted["run_events"] == 2
    with db.tenant_transaction(a.tenant_id) as tx:
        kept = [r[0] for r in tx.execute("SELECT data FROM tenantguard.run_events").fetchall()]
    # The new event, and the old run's newest (so that its numbering continues after it).
    assert sorted(kept, key=len) == [{}, {"i": 2}]
    assert expiry.run_tenant(b.tenant_id).get("run_events", 0) == 0  # B keeps its default year
    assert _count(db, b.tenant_id, "run_events") >= 3
    with db.tenant_transaction(a.tenant_id) as tx:
        (event,) = [
            e for e in iter_events(tx, tenant_id=a.tenant_id) if e.action == "retention.expired"
        ]
    assert json.loads(event.payload)["deleted"]["run_events"] == deleted["run_events"]


def test_old_memory_versions_go_but_never_an_entrys_current_one(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    assert client.put(URL, json={"days": {"memory_versions": 1}}, headers=h).status_code == 200
    kept = client.post("/api/memory", json={"key": "kept", "content": "v1"}, headers=h).json()
    gone = client.post("/api/memory", json={"key": "gone", "content": "x"}, headers=h).json()
    assert client.patch(f"/api/memory/{kept['id']}", json={"content": "v2"}, headers=h).is_success
    assert client.delete(f"/api/memory/{gone['id']}", headers=h).status_code == 204
    stale = client.post("/api/memory", json={"key": "stale", "content": "only"}, headers=h).json()
    clock.advance(DAY + timedelta(seconds=1))
    _expiry(client).run_tenant(tenant.tenant_id)
    versions = client.get(f"/api/memory/{kept['id']}/versions", headers=h).json()
    assert [v["version"] for v in versions] == [2]  # v1 went; the current one stays
    assert client.get(f"/api/memory/{kept['id']}", headers=h).json()["content"] == "v2"
    assert len(client.get(f"/api/memory/{stale['id']}/versions", headers=h).json()) == 1
    assert (
        client.get(f"/api/memory/{gone['id']}?include_deleted=true", headers=h).status_code == 404
    )


def test_artifacts_expire_rows_and_bytes(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    store = client.app.state.runtime.artifacts.store  # type: ignore[attr-defined]
    made = client.post("/api/artifacts", params={"name": "a"}, content=b"x", headers=h).json()
    _expiry(client).run_tenant(tenant.tenant_id)  # artifacts are kept forever by default
    assert client.get(f"/api/artifacts/{made['id']}", headers=h).status_code == 200
    assert client.put(URL, json={"days": {"artifacts": 1}}, headers=h).status_code == 200
    clock.advance(DAY + timedelta(seconds=1))
    assert _expiry(client).run_tenant(tenant.tenant_id)["artifacts"] == 1
    assert client.get(f"/api/artifacts/{made['id']}", headers=h).status_code == 404
    assert store.keys(f"orgs/{tenant.tenant_id}/artifacts/") == []


def test_what_expired_by_itself_is_cleared_and_the_audit_never_is(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    keyed = {**h, "Idempotency-Key": "k"}
    with db.tenant_transaction(tenant.tenant_id) as tx:
        tx.execute(
            "INSERT INTO tenantguard.saml_assertions (tenant_id, assertion_id, accepted_at,"
            " expires_at) VALUES (%s, 'id-1', %s, %s)",
            (tenant.tenant_id, clock.now(), clock.now() + timedelta(minutes=5)),
        )
    assert client.post("/api/memory", json={"key": "a", "content": "b"}, headers=keyed).is_success
    assert _count(db, tenant.tenant_id, "idempotency_keys") == 1
    events = _count(db, tenant.tenant_id, "audit_events")
    clock.advance(timedelta(days=400))
    deleted = _expiry(client).run_tenant(tenant.tenant_id)
    assert deleted["idempotency_keys"] == 1
    assert deleted["saml_assertions"] == 1
    assert _count(db, tenant.tenant_id, "idempotency_keys") == 0
    with db.tenant_transaction(tenant.tenant_id) as tx:  # windows that ended, cleared
        windows = tx.execute(
            "SELECT count(*) FROM tenantguard.quota_state WHERE expires_at IS NOT NULL"
        ).fetchone()
    assert windows == (0,)
    assert _count(db, tenant.tenant_id, "audit_events") == events + 1  # and its own record
    assert _expiry(client).run_tenant(tenant.tenant_id) == {}  # nothing left: no record


def test_finished_deliveries_and_old_receipts_expire(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock, keyring: Keyring
) -> None:
    tenant, h = as_tenant("t")
    ctx = TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "t")
    assert client.put(
        "/api/secrets/src-key", json={"value": "whsec_" + "A" * 32}, headers=h
    ).is_success
    with db.tenant_transaction(tenant.tenant_id) as tx:
        source = webhook_sources.put(
            tx, ctx, "billing", scheme="standard", secret_name="src-key", now=clock.now()
        )
        webhook_sources.keep(
            tx, ctx, keyring, source, verified=Verified("m1", 0), body=b"{}", now=clock.now()
        )
        endpoint, _ = webhook_endpoints.create(
            tx, ctx, keyring, url="https://hooks.example/x", event_types=["webhook.test"],
            description="", policy=EgressPolicy(), now=clock.now(),
        )  # fmt: skip
        finished, pending = (
            webhook_endpoints.emit(
                tx, ctx, keyring, "webhook.test", {}, now=clock.now(), endpoint_id=endpoint.id
            )[0]
            for _ in range(2)
        )
        tx.execute(
            "INSERT INTO tenantguard.webhook_attempts (tenant_id, delivery_id, attempt,"
            " started_at, status_code, error, duration_ms) VALUES (%s, %s, 1, %s, 200, '', 3)",
            (tenant.tenant_id, finished, clock.now()),
        )
        tx.execute(
            "UPDATE tenantguard.webhook_deliveries SET status = 'delivered', finished_at = %s,"
            " next_attempt_at = NULL WHERE tenant_id = %s AND id = %s",
            (clock.now(), tenant.tenant_id, finished),
        )
    clock.advance(timedelta(days=30, seconds=1))  # both defaults: 30 days
    deleted = _expiry(client).run_tenant(tenant.tenant_id)
    assert deleted["webhook_deliveries"] == 1
    assert deleted["webhook_receipts"] == 1
    with db.tenant_transaction(tenant.tenant_id) as tx:
        left = tx.execute("SELECT id FROM tenantguard.webhook_deliveries").fetchall()
    assert left == [(pending,)]  # a pending delivery is never expired
    assert _count(db, tenant.tenant_id, "webhook_attempts") == 0
    assert _count(db, tenant.tenant_id, "webhook_receipts") == 0
