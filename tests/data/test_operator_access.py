"""Operator access: refused without the tenant's opt-in (with the reason, and recorded), every
read audited in the tenant's chain in the same transaction (no audit row, no read), visible to
the customer, turned off at once, destructive operations refused without opt-in, and
break-glass counted apart on both sides."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.context import PLATFORM_TENANT_ID
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tenantguard.testing import TestDatabase
from tests.support import bearer

SignIn = Callable[..., tuple[users.User, Issued]]
REASON = "ticket 4711: the customer asked why a memory is missing"


def _read(client: TestClient, tenant: NewTenant, h: dict[str, str], **body: Any) -> Any:
    return client.post(
        f"/api/operator/tenants/{tenant.tenant_id}/memory/read",
        json={"reason": REASON, **body},
        headers=h,
    )


def _opt(client: TestClient, owner: dict[str, str], enabled: bool) -> None:
    answer = client.put("/api/admin/operator-access", json={"enabled": enabled}, headers=owner)
    assert answer.status_code == 200, answer.text
    assert answer.json()["enabled"] is enabled


def test_refused_without_opt_in_and_recorded(client: TestClient, scene: Any, db: Database) -> None:
    tenant, owner, operator, _ = scene
    assert client.get("/api/admin/operator-access", headers=owner).json()["enabled"] is False
    refused = _read(client, tenant, operator)
    assert refused.status_code == 403
    assert refused.json()["code"] == "operator_access_not_granted"
    assert "opted in" in refused.json()["detail"]
    assert "only-in-acme" not in refused.text
    seen = client.get("/api/admin/me/operator-reads", headers=owner).json()
    assert [(r["action"], r["outcome"], r["why"]) for r in seen] == [
        ("operator.read", "denied", REASON)
    ]


def test_every_read_is_audited_visible_and_stops_when_turned_off(
    client: TestClient, scene: Any, sign_in_operator: SignIn
) -> None:
    tenant, owner, operator, _ = scene
    _opt(client, owner, True)
    read = _read(client, tenant, operator)
    assert read.status_code == 200, read.text
    assert [e["content"] for e in read.json()] == ["only-in-acme"]
    seen = client.get("/api/admin/me/operator-reads", headers=owner).json()
    operator_id = client.get("/api/sessions", headers=operator).json()[0]["user_id"]
    assert seen[0]["operator"] == operator_id
    assert (seen[0]["action"], seen[0]["outcome"], seen[0]["what"], seen[0]["why"]) == (
        "operator.read",
        "success",
        "memory",
        REASON,
    )
    _opt(client, owner, False)
    assert _read(client, tenant, operator).status_code == 403  # effective at once


def test_no_audit_row_no_read(client: TestClient, scene: Any, pg: TestDatabase) -> None:
    """With the audit insert failing, the operator gets a 503 and no byte of the data."""
    tenant, owner, operator, _ = scene
    _opt(client, owner, True)
    with psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON tenantguard.audit_events FROM tenantguard_app")
        try:
            answer = _read(client, tenant, operator)
        finally:
            conn.execute("GRANT INSERT ON tenantguard.audit_events TO tenantguard_app")
    assert answer.status_code == 503
    assert answer.json()["code"] == "audit_unavailable"
    assert "only-in-acme" not in answer.text


def test_destructive_operations_need_the_opt_in(client: TestClient, scene: Any) -> None:
    tenant, owner, operator, entry_id = scene
    url = f"/api/operator/tenants/{tenant.tenant_id}/memory/delete"
    body = {"id": entry_id, "reason": "ticket 4712: the customer asked for erasure"}
    refused = client.post(url, json=body, headers=operator)
    assert refused.status_code == 403
    assert refused.json()["code"] == "operator_access_not_granted"
    admin = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    assert client.get(f"/api/memory/{entry_id}", headers=admin).status_code == 200
    _opt(client, owner, True)
    assert client.post(url, json=body, headers=operator).status_code == 204
    assert client.get(f"/api/memory/{entry_id}", headers=admin).status_code == 404
    actions = [
        r["action"] for r in client.get("/api/admin/me/operator-reads", headers=owner).json()
    ]
    assert actions == ["operator.delete", "operator.delete"]  # newest first: done, refused


def test_break_glass_needs_a_real_reason_and_lands_apart(
    client: TestClient, scene: Any, db: Database
) -> None:
    tenant, owner, operator, _ = scene
    _opt(client, owner, True)
    short = _read(client, tenant, operator, reason="urgent", break_glass=True)
    assert short.status_code == 422
    glass = _read(
        client,
        tenant,
        operator,
        reason="incident 99: data corruption across tenants",
        break_glass=True,
    )
    assert glass.status_code == 200, glass.text
    seen = client.get("/api/admin/me/operator-reads", headers=owner).json()
    assert (seen[0]["action"], seen[0]["break_glass"]) == ("operator.break_glass_read", True)
    rid = glass.headers["x-request-id"]
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        platform = [e for e in iter_events(tx, tenant_id=PLATFORM_TENANT_ID) if e.request_id == rid]
    assert [(e.action, e.target_id) for e in platform] == [
        ("operator.break_glass_read", str(tenant.tenant_id))
    ]
    assert json.loads(platform[0].payload)["why"].startswith("incident 99")


def test_operators_step_up_and_tenants_cannot_read_across(
    client: TestClient, scene: Any, sign_in_operator: SignIn, make_tenant: Callable[[str], Any]
) -> None:
    """An operator without a fresh second factor is held; a tenant's own credentials cannot
    use the operator routes to read another tenant, opt-in or not."""
    tenant, owner, _, _ = scene
    _opt(client, owner, True)
    _, stale = sign_in_operator(amr=("email",))
    held = _read(client, tenant, bearer(stale.access_token))
    assert held.status_code == 401
    assert held.json()["code"] == "step_up_required"
    other = make_tenant("other")
    across = _read(client, tenant, {"Authorization": f"Bearer {other.admin_key.secret}"})
    assert across.status_code == 403
    assert across.json()["code"] == "capability_denied"
