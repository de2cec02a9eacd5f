"""A narrow key cannot act on stronger keys, and a refused escalation is audited.

Regressions for two defects found in review: revocation lacked the subset rule that creation
and rotation have (a key holding only `api_keys:manage` could revoke the admin key), and a
refused widening rolled back with its transaction, leaving no audit trace.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tenantguard.audit import list_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database

KEYS = "/api/api-keys"


def _narrow(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    made = client.post(
        KEYS, json={"name": "narrow", "capabilities": ["api_keys:manage"]}, headers=admin
    ).json()
    return {"Authorization": f"Bearer {made['secret']}"}


def test_narrow_key_cannot_revoke_a_stronger_key(
    client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> None:
    """Revoking the admin key with a manage-only key is 403, and the admin key still works."""
    tenant = make_tenant("t")
    admin = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    narrow = _narrow(client, admin)
    refused = client.delete(f"{KEYS}/{tenant.admin_key.info.id}", headers=narrow)
    assert refused.status_code == 403
    assert refused.json()["code"] == "capability_denied"
    assert client.get(KEYS, headers=admin).status_code == 200


def test_key_may_revoke_itself(client: TestClient, make_tenant: Callable[[str], NewTenant]) -> None:
    """Revoking oneself never widens anything: allowed."""
    tenant = make_tenant("t")
    admin = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    narrow = _narrow(client, admin)
    own_id = next(k["id"] for k in client.get(KEYS, headers=admin).json() if k["name"] == "narrow")
    assert client.delete(f"{KEYS}/{own_id}", headers=narrow).status_code == 204


def test_refused_escalations_are_audited(
    client: TestClient, make_tenant: Callable[[str], NewTenant], db: Database
) -> None:
    """Create-wider and revoke-stronger refusals each leave a `denied` event."""
    tenant = make_tenant("t")
    admin = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    narrow = _narrow(client, admin)
    wider = client.post(
        KEYS,
        json={"name": "x", "capabilities": ["audit:read"]},
        headers={**narrow, "X-Request-ID": "escalate-create"},
    )
    stronger = client.delete(
        f"{KEYS}/{tenant.admin_key.info.id}", headers={**narrow, "X-Request-ID": "escalate-revoke"}
    )
    assert wider.status_code == stronger.status_code == 403
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = {e.request_id: e for e in list_events(tx, tenant_id=tenant.tenant_id)}
    create, revoke = events["escalate-create"], events["escalate-revoke"]
    assert (create.action, create.outcome, create.reason) == (
        "api_key.create",
        "denied",
        "capability_missing:audit:read",
    )
    assert (revoke.action, revoke.outcome, revoke.target_id) == (
        "api_key.revoke",
        "denied",
        str(tenant.admin_key.info.id),
    )


def test_a_key_cannot_mint_or_rotate_into_a_key_that_outlives_it(
    client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> None:
    """Lifetime is scope too: a key that expires in an hour makes keys that expire by then."""
    tenant = make_tenant("acme")
    admin = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    short = client.post(
        "/api/api-keys",
        json={"name": "hour", "capabilities": ["api_keys:manage"], "expires_in_seconds": 3600},
        headers=admin,
    ).json()
    as_short = {"Authorization": f"Bearer {short['secret']}"}
    forever = client.post(
        "/api/api-keys",
        json={"name": "forever", "capabilities": ["api_keys:manage"]},
        headers=as_short,
    )
    longer = client.post(
        "/api/api-keys",
        json={
            "name": "year",
            "capabilities": ["api_keys:manage"],
            "expires_in_seconds": 86_400 * 300,
        },
        headers=as_short,
    )
    sooner = client.post(
        "/api/api-keys",
        json={"name": "minute", "capabilities": ["api_keys:manage"], "expires_in_seconds": 60},
        headers=as_short,
    )
    assert forever.status_code == longer.status_code == sooner.status_code == 201
    assert forever.json()["expires_at"] == longer.json()["expires_at"] == short["expires_at"]
    assert sooner.json()["expires_at"] < short["expires_at"]
    rotated = client.post(f"/api/api-keys/{forever.json()['id']}/rotate", json={}, headers=as_short)
    assert rotated.status_code == 201
    assert rotated.json()["expires_at"] == short["expires_at"]
