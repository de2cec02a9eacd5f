"""Sessions over the gateway: refresh rotation and reuse detection, revocation on the next
request, role changes on the next request, listing, logout, and the JWKS."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet

from tenantguard.audit import list_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tenantguard.testing import FakeClock
from tests.support import bearer

SignIn = Callable[[NewTenant, str], tuple[users.User, Issued]]


def test_refresh_rotates_and_reuse_revokes_the_family(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, db: Database
) -> None:
    """Each refresh gives new tokens; presenting a used refresh token again revokes the whole
    session (the new tokens too) and is audited."""
    tenant = make_tenant("t")
    _, login = sign_in(tenant, "member")
    first = client.post("/api/auth/refresh", json={"refresh_token": login.refresh_token})
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    rotated = first.json()
    assert rotated["refresh_token"] != login.refresh_token
    assert client.get("/api/memory", headers=bearer(rotated["access_token"])).status_code == 200
    replay = client.post(
        "/api/auth/refresh",
        json={"refresh_token": login.refresh_token},
        headers={"X-Request-ID": "replayed-refresh"},
    )
    assert replay.status_code == 401
    assert client.get("/api/memory", headers=bearer(rotated["access_token"])).status_code == 401
    again = client.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 401
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list_events(tx, tenant_id=tenant.tenant_id, limit=500)
    reuse = [e for e in events if e.action == "session.refresh_reuse"]
    assert len(reuse) == 1
    assert reuse[0].request_id == "replayed-refresh"


def test_refresh_with_garbage_or_an_api_key_is_the_same_401(
    client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> None:
    tenant = make_tenant("t")
    bodies = set()
    for presented in ("nope", tenant.admin_key.secret, "tg_rt_" + "A" * 38):
        response = client.post("/api/auth/refresh", json={"refresh_token": presented})
        assert response.status_code == 401
        bodies.add(response.json()["detail"])
    assert len(bodies) == 1


def test_revocation_applies_on_the_next_request(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    tenant = make_tenant("t")
    _, admin = sign_in(tenant, "admin")
    member, login = sign_in(tenant, "member")
    h = bearer(login.access_token)
    own = client.get("/api/sessions", headers=h).json()
    assert [(s["id"], s["current"]) for s in own] == [(str(login.session.id), True)]
    revoked = client.post(
        f"/api/admin/users/{member.id}/sessions/revoke", headers=bearer(admin.access_token)
    )
    assert revoked.json() == {"revoked": 1}
    assert client.get("/api/memory", headers=h).status_code == 401
    refresh = client.post("/api/auth/refresh", json={"refresh_token": login.refresh_token})
    assert refresh.status_code == 401


def test_revoke_all_of_a_tenant(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    tenant = make_tenant("t")
    logins = [sign_in(tenant, role)[1] for role in ("owner", "member", "auditor")]
    result = client.post("/api/admin/sessions/revoke-all", headers=bearer(logins[0].access_token))
    assert result.json() == {"revoked": 3}
    for login in logins:
        assert client.get("/api/memory", headers=bearer(login.access_token)).status_code == 401


def test_logout_and_own_revocation(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    tenant = make_tenant("t")
    _, first = sign_in(tenant, "member")
    _, other = sign_in(tenant, "member")
    h = bearer(first.access_token)
    # A member cannot revoke someone else's session through the self route.
    assert client.delete(f"/api/sessions/{other.session.id}", headers=h).status_code == 404
    assert client.post("/api/auth/logout", headers=h).status_code == 204
    assert client.get("/api/memory", headers=h).status_code == 401
    assert client.get("/api/memory", headers=bearer(other.access_token)).status_code == 200


def test_role_change_applies_on_the_next_request(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    tenant = make_tenant("t")
    _, owner = sign_in(tenant, "owner")
    member, login = sign_in(tenant, "member")
    h = bearer(login.access_token)
    assert (
        client.post("/api/memory", json={"key": "k", "content": "c"}, headers=h).status_code == 201
    )
    changed = client.patch(
        f"/api/users/{member.id}", json={"role": "auditor"}, headers=bearer(owner.access_token)
    )
    assert changed.json()["role"] == "auditor"
    denied = client.post("/api/memory", json={"key": "k2", "content": "c"}, headers=h)
    assert denied.status_code == 403
    assert client.get("/api/memory", headers=h).status_code == 200


def test_last_owner_cannot_be_removed_or_demoted(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    tenant = make_tenant("t")
    owner, login = sign_in(tenant, "owner")
    h = bearer(login.access_token)
    assert (
        client.patch(f"/api/users/{owner.id}", json={"role": "member"}, headers=h).status_code
        == 409
    )
    assert client.delete(f"/api/users/{owner.id}", headers=h).status_code == 409


def test_sessions_end_at_their_absolute_lifetime(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, clock: FakeClock
) -> None:
    tenant = make_tenant("t")
    _, login = sign_in(tenant, "member")
    clock.advance(timedelta(hours=12, minutes=1))
    refresh = client.post("/api/auth/refresh", json={"refresh_token": login.refresh_token})
    assert refresh.status_code == 401


def test_jwks_verifies_issued_tokens_independently(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    """Anyone can check a token with the published JWKS alone."""
    _, login = sign_in(make_tenant("t"), "member")
    published = client.get("/.well-known/jwks.json").json()
    token = jwt.decode(login.access_token, KeySet.import_key_set(published), algorithms=["Ed25519"])
    assert token.claims["sid"] == str(login.session.id)
