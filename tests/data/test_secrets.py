"""The vault over the gateway: write-only values, versions, deletion, and no value anywhere
outside the server-side read path."""

from __future__ import annotations

import io
from collections.abc import Callable
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit import list_events
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import secrets
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import NotFound
from tenantguard.testing import FakeClock

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]


def test_values_go_in_and_never_come_out(
    client: TestClient, as_tenant: AsTenant, db: Database, log_buffer: io.StringIO
) -> None:
    """No response, log line or audit payload carries a value written to the vault."""
    tenant, h = as_tenant("acme")
    values = [f"sk-live-{uuid4().hex}", f"sk-live-{uuid4().hex}"]
    responses = [
        client.put("/api/secrets/openai", json={"value": values[0]}, headers=h),
        client.put("/api/secrets/openai", json={"value": values[1]}, headers=h),
        client.get("/api/secrets", headers=h),
        client.get("/api/secrets/openai", headers=h),
        client.put("/api/secrets/bad name", json={"value": values[0]}, headers=h),
        client.put("/api/secrets/x", json={"value": values[0], "extra": 1}, headers=h),
        client.delete("/api/secrets/openai", headers=h),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 422, 422, 204]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list_events(tx, tenant_id=tenant.tenant_id)
    actions = [e.action for e in events]
    assert actions.count("secret.write") == 2
    assert "secret.delete" in actions
    logs = log_buffer.getvalue()
    assert "/api/secrets/openai" in logs  # the requests were logged...
    seen = "".join(r.text for r in responses) + logs + "".join(e.payload for e in events)
    for value in values:
        assert value not in seen  # ...and no value was, anywhere


def test_versions_and_metadata(client: TestClient, as_tenant: AsTenant) -> None:
    """Each write adds a version; listings show names, versions and times only."""
    _, h = as_tenant("acme")
    client.put("/api/secrets/api", json={"value": "one"}, headers=h)
    second = client.put("/api/secrets/api", json={"value": "two"}, headers=h).json()
    assert second["version"] == 2
    assert set(second) == {"name", "version", "created_at", "updated_at", "last_used_at"}
    detail = client.get("/api/secrets/api", headers=h).json()
    assert [(v["version"], v["wiped"]) for v in detail["versions"]] == [(1, False), (2, False)]
    assert [s["name"] for s in client.get("/api/secrets", headers=h).json()] == ["api"]


def test_delete_wipes_every_version(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """After DELETE the name is gone and no version's ciphertext remains; the name can be
    used again from version 1."""
    tenant, h = as_tenant("acme")
    client.put("/api/secrets/api", json={"value": "one"}, headers=h)
    client.put("/api/secrets/api", json={"value": "two"}, headers=h)
    assert client.delete("/api/secrets/api", headers=h).status_code == 204
    assert client.get("/api/secrets/api", headers=h).status_code == 404
    assert client.delete("/api/secrets/api", headers=h).status_code == 404
    with db.tenant_transaction(tenant.tenant_id) as tx:
        left = tx.execute(
            "SELECT count(*) FROM tenantguard.secret_versions WHERE value IS NOT NULL"
        ).fetchone()
    assert left == (0,)
    again = client.put("/api/secrets/api", json={"value": "three"}, headers=h).json()
    assert again["version"] == 1


def test_server_side_read_is_audited_and_tracks_use(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """Only code acting for the tenant reads a value; each read is audited with its use."""
    tenant, h = as_tenant("acme")
    client.put("/api/secrets/api", json={"value": "the-value"}, headers=h)
    ctx = TenantContext(tenant.tenant_id, Principal("system", "router"), frozenset(), "r-1")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        value = secrets.read(tx, ctx, keyring, "api", use="model:openai", now=clock.now())
    assert value == b"the-value"
    with db.tenant_transaction(tenant.tenant_id) as tx:
        last = list_events(tx, tenant_id=tenant.tenant_id)[-1]
    assert (last.action, last.target_id) == ("secret.read", "api")
    assert '"use":"model:openai"' in last.payload
    assert client.get("/api/secrets", headers=h).json()[0]["last_used_at"] is not None


def test_no_global_fallback(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
) -> None:
    """A name another tenant holds does not exist for this one."""
    a, b = make_tenant("A"), make_tenant("B")
    client.put(
        "/api/secrets/shared-name",
        json={"value": "a-only"},
        headers={"Authorization": f"Bearer {a.admin_key.secret}"},
    )
    ctx = TenantContext(b.tenant_id, Principal("system", "router"), frozenset(), "r-2")
    with pytest.raises(NotFound), db.tenant_transaction(b.tenant_id) as tx:
        secrets.read(tx, ctx, keyring, "shared-name", use="tests", now=clock.now())


def test_value_size_is_bounded(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("acme")
    too_big = client.put("/api/secrets/big", json={"value": "é" * 40_000}, headers=h)
    assert too_big.status_code == 422
