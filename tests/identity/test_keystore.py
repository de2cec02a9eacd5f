"""API keys over the gateway: one opaque 401, secrets shown once, scope, rotation, revocation
and the audit of authentication failures."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit import AuditEvent, iter_events, verify_tenant
from tenantguard.context import PLATFORM_TENANT_ID
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import apikeys
from tenantguard.testing import FakeClock
from tests.support import bearer

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
KEYS = "/api/api-keys"
PUBLIC_FIELDS = {
    "id",
    "name",
    "display_prefix",
    "capabilities",
    "agent",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "rotated_from",
}


def create_key(
    client: TestClient,
    headers: dict[str, str],
    capabilities: list[str],
    *,
    name: str = "worker",
    expires_in_seconds: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "capabilities": capabilities}
    if expires_in_seconds is not None:
        body["expires_in_seconds"] = expires_in_seconds
    response = client.post(KEYS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def listed(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = client.get(KEYS, headers=headers)
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()}


def problem_core(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in {"request_id", "instance"}}


def events_with_request_id(db: Database, tenant_id: UUID, rid: str) -> list[AuditEvent]:
    with db.tenant_transaction(tenant_id) as tx:
        return [e for e in iter_events(tx, tenant_id=tenant_id) if e.request_id == rid]


# --- one opaque 401 ------------------------------------------------------------------------


def test_every_authentication_failure_is_the_same_401(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    """Missing, wrong-scheme, malformed, unknown, expired and revoked credentials all get the
    same 401 problem, apart from request_id and instance."""
    _, admin = as_tenant("acme")
    expiring = create_key(client, admin, ["api_keys:read"], expires_in_seconds=60)
    revoked = create_key(client, admin, ["api_keys:read"])
    assert client.delete(f"{KEYS}/{revoked['id']}", headers=admin).status_code == 204
    assert client.get(KEYS, headers=bearer(expiring["secret"])).status_code == 200
    clock.advance(timedelta(seconds=61))

    attempts: dict[str, dict[str, str]] = {
        "missing": {},
        "wrong scheme": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        "scheme only": {"Authorization": "Bearer"},
        "malformed": bearer("tg_sk_not-a-key"),
        "unknown": bearer(apikeys.generate().secret),
        "expired": bearer(expiring["secret"]),
        "revoked": bearer(revoked["secret"]),
    }
    responses = {name: client.get(KEYS, headers=h) for name, h in attempts.items()}

    reference = problem_core(responses["missing"].json())
    assert reference["status"] == 401
    assert reference["code"] == "invalid_credentials"
    for name, response in responses.items():
        assert response.status_code == 401, name
        assert response.headers["content-type"] == "application/problem+json", name
        assert response.headers["www-authenticate"] == 'Bearer realm="tenantguard"', name
        assert response.headers["cache-control"] == "no-store", name
        assert response.json()["request_id"] == response.headers["x-request-id"], name
        assert problem_core(response.json()) == reference, name
    assert len({r.headers["x-request-id"] for r in responses.values()}) == len(responses)


# --- secrets -------------------------------------------------------------------------------


def test_secret_is_shown_once_and_never_listed(client: TestClient, as_tenant: AsTenant) -> None:
    """Creating a key answers its secret once (no-store); listing never shows a secret or hash."""
    tenant, admin = as_tenant("acme")
    response = client.post(KEYS, json={"name": "ci", "capabilities": ["runs:read"]}, headers=admin)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    secret = created["secret"]
    assert apikeys.parse(secret) == apikeys.hash_key(secret)
    assert created["display_prefix"] == secret[:10]
    assert created["capabilities"] == ["runs:read"]

    listing = client.get(KEYS, headers=admin)
    assert listing.status_code == 200
    for hidden in (secret, tenant.admin_key.secret):
        key_hash = apikeys.hash_key(hidden)
        assert hidden not in listing.text
        assert hidden[10:] not in listing.text
        assert key_hash.hex() not in listing.text
        assert base64.b64encode(key_hash).decode() not in listing.text
        assert base64.urlsafe_b64encode(key_hash).decode().rstrip("=") not in listing.text
    items = listing.json()
    assert {item["id"] for item in items} == {created["id"], str(tenant.admin_key.info.id)}
    for item in items:
        assert set(item) == PUBLIC_FIELDS


def test_last_used_at_is_recorded(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    """A key's last_used_at is empty until it is used, then set to the time of use (at most
    once a minute)."""
    _, admin = as_tenant("acme")
    key = create_key(client, admin, ["api_keys:read"])
    assert listed(client, admin)[key["id"]]["last_used_at"] is None

    first_use = clock.now()
    assert client.get(KEYS, headers=bearer(key["secret"])).status_code == 200
    seen = datetime.fromisoformat(listed(client, admin)[key["id"]]["last_used_at"])
    assert seen == first_use

    clock.advance(timedelta(seconds=30))
    assert client.get(KEYS, headers=bearer(key["secret"])).status_code == 200
    seen = datetime.fromisoformat(listed(client, admin)[key["id"]]["last_used_at"])
    assert seen == first_use

    clock.advance(timedelta(seconds=31))
    assert client.get(KEYS, headers=bearer(key["secret"])).status_code == 200
    seen = datetime.fromisoformat(listed(client, admin)[key["id"]]["last_used_at"])
    assert seen == clock.now()


# --- scope ---------------------------------------------------------------------------------


def test_key_cannot_create_a_wider_key(client: TestClient, as_tenant: AsTenant) -> None:
    """A key may create keys within its own capabilities only; a wider request is a 403
    capability_denied and creates nothing."""
    _, admin = as_tenant("acme")
    narrow = bearer(create_key(client, admin, ["api_keys:manage"], name="narrow")["secret"])

    wider = client.post(
        KEYS,
        json={"name": "wider", "capabilities": ["api_keys:manage", "runs:read"]},
        headers=narrow,
    )
    assert wider.status_code == 403
    assert wider.json()["code"] == "capability_denied"
    assert "wider" not in {item["name"] for item in listed(client, admin).values()}

    same = client.post(
        KEYS, json={"name": "same", "capabilities": ["api_keys:manage"]}, headers=narrow
    )
    assert same.status_code == 201
    assert same.json()["capabilities"] == ["api_keys:manage"]


def test_key_cannot_rotate_a_wider_key(client: TestClient, as_tenant: AsTenant) -> None:
    """Rotating a key whose scope exceeds the caller's is a 403, and the key stays usable."""
    tenant, admin = as_tenant("acme")
    narrow = bearer(create_key(client, admin, ["api_keys:manage"], name="narrow")["secret"])
    rotated = client.post(
        f"{KEYS}/{tenant.admin_key.info.id}/rotate", json={"grace_seconds": 0}, headers=narrow
    )
    assert rotated.status_code == 403
    assert rotated.json()["code"] == "capability_denied"
    assert client.get(KEYS, headers=admin).status_code == 200


@pytest.mark.parametrize(
    "capabilities", [["root"], ["runs:read", "runs:*"], ["RUNS:READ"]], ids=str
)
def test_unknown_capability_is_422(
    client: TestClient, as_tenant: AsTenant, capabilities: list[str]
) -> None:
    """A capability name outside the allow-list is refused with 422 request_invalid."""
    _, admin = as_tenant("acme")
    response = client.post(KEYS, json={"name": "bad", "capabilities": capabilities}, headers=admin)
    assert response.status_code == 422
    assert response.json()["code"] == "request_invalid"
    assert "bad" not in {item["name"] for item in listed(client, admin).values()}


def test_key_without_manage_cannot_create(client: TestClient, as_tenant: AsTenant) -> None:
    """A key lacking api_keys:manage cannot create keys at all (403)."""
    _, admin = as_tenant("acme")
    reader = bearer(create_key(client, admin, ["api_keys:read"])["secret"])
    response = client.post(
        KEYS, json={"name": "x", "capabilities": ["api_keys:read"]}, headers=reader
    )
    assert response.status_code == 403
    assert response.json()["code"] == "capability_denied"


# --- rotation and revocation ---------------------------------------------------------------


def test_rotation_without_grace_retires_the_old_key_at_once(
    client: TestClient, as_tenant: AsTenant
) -> None:
    """Rotation with grace_seconds=0: the old key is refused at once, the successor works and
    keeps the name and scope."""
    _, admin = as_tenant("acme")
    old = create_key(client, admin, ["api_keys:read", "runs:read"], name="svc")
    assert client.get(KEYS, headers=bearer(old["secret"])).status_code == 200

    response = client.post(f"{KEYS}/{old['id']}/rotate", json={"grace_seconds": 0}, headers=admin)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    new = response.json()
    assert new["secret"] != old["secret"]
    assert new["id"] != old["id"]
    assert new["rotated_from"] == old["id"]
    assert new["name"] == "svc"
    assert new["capabilities"] == ["api_keys:read", "runs:read"]

    assert client.get(KEYS, headers=bearer(old["secret"])).status_code == 401
    assert client.get(KEYS, headers=bearer(new["secret"])).status_code == 200
    assert listed(client, admin)[old["id"]]["revoked_at"] is not None


def test_rotation_with_grace_keeps_the_old_key_until_it_ends(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    """Rotation with grace_seconds=300: the old key works through the grace, then is refused."""
    _, admin = as_tenant("acme")
    created = create_key(client, admin, ["api_keys:read"])
    old = bearer(created["secret"])
    response = client.post(
        f"{KEYS}/{created['id']}/rotate", json={"grace_seconds": 300}, headers=admin
    )
    assert response.status_code == 201
    new = bearer(response.json()["secret"])

    assert client.get(KEYS, headers=old).status_code == 200
    assert client.get(KEYS, headers=new).status_code == 200
    clock.advance(timedelta(seconds=299))
    assert client.get(KEYS, headers=old).status_code == 200
    clock.advance(timedelta(seconds=2))
    refused = client.get(KEYS, headers=old)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_credentials"
    assert client.get(KEYS, headers=new).status_code == 200


def test_rotating_an_inactive_key_conflicts(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    """A revoked or expired key cannot be rotated: 409 conflict, and no successor is made."""
    _, admin = as_tenant("acme")
    revoked = create_key(client, admin, ["runs:read"], name="revoked")
    expired = create_key(client, admin, ["runs:read"], name="expired", expires_in_seconds=60)
    assert client.delete(f"{KEYS}/{revoked['id']}", headers=admin).status_code == 204
    clock.advance(timedelta(seconds=60))
    before = listed(client, admin)
    for key in (revoked, expired):
        response = client.post(f"{KEYS}/{key['id']}/rotate", json={}, headers=admin)
        assert response.status_code == 409, key["name"]
        assert response.json()["code"] == "conflict"
    assert listed(client, admin).keys() == before.keys()


def test_revoking_twice_conflicts(client: TestClient, as_tenant: AsTenant) -> None:
    """A second revocation of the same key is a 409 conflict."""
    _, admin = as_tenant("acme")
    key = create_key(client, admin, ["runs:read"])
    assert client.delete(f"{KEYS}/{key['id']}", headers=admin).status_code == 204
    again = client.delete(f"{KEYS}/{key['id']}", headers=admin)
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


def test_revocation_takes_effect_on_the_next_request(
    client: TestClient, as_tenant: AsTenant
) -> None:
    """A key revoked (here by itself) is refused on the very next request."""
    _, admin = as_tenant("acme")
    key = create_key(client, admin, ["api_keys:read", "api_keys:manage"])
    own = bearer(key["secret"])
    assert client.get(KEYS, headers=own).status_code == 200
    assert client.delete(f"{KEYS}/{key['id']}", headers=own).status_code == 204
    assert client.get(KEYS, headers=own).status_code == 401
    assert listed(client, admin)[key["id"]]["revoked_at"] is not None


def test_keys_of_another_tenant_are_not_found(client: TestClient, as_tenant: AsTenant) -> None:
    """Rotating or revoking another tenant's key is a 404, and that key keeps working."""
    _, alice = as_tenant("alice")
    bob_tenant, bob = as_tenant("bob")
    bob_key = bob_tenant.admin_key.info.id
    assert client.delete(f"{KEYS}/{bob_key}", headers=alice).status_code == 404
    assert client.post(f"{KEYS}/{bob_key}/rotate", json={}, headers=alice).status_code == 404
    assert client.get(KEYS, headers=bob).status_code == 200
    assert str(bob_key) not in client.get(KEYS, headers=alice).text


# --- audit of failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (bearer(apikeys.generate().secret), "unknown"),
        (bearer("tg_sk_short"), "malformed"),
        ({}, "missing"),
    ],
    ids=["unknown", "malformed", "missing"],
)
def test_failure_without_a_known_key_is_audited_in_the_platform_chain(
    client: TestClient, db: Database, headers: dict[str, str], reason: str
) -> None:
    """A failure naming no known key writes one auth.authenticate failure, with its reason and
    the response's request id, into the platform chain."""
    response = client.get(KEYS, headers=headers)
    assert response.status_code == 401
    rid = response.headers["x-request-id"]

    (event,) = events_with_request_id(db, PLATFORM_TENANT_ID, rid)
    assert event.tenant_id == PLATFORM_TENANT_ID
    assert event.action == "auth.authenticate"
    assert event.outcome == "failure"
    assert event.reason == reason
    assert event.actor_type == "anonymous"
    assert event.target_type == ""
    assert event.target_id == ""
    assert json.loads(event.payload) == {"for_action": "api_keys:read"}


@pytest.mark.parametrize("reason", ["revoked", "expired"])
def test_failure_of_a_known_key_is_audited_in_its_tenant(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock, reason: str
) -> None:
    """A revoked or expired key's failure is recorded in its own tenant's chain, naming the key,
    and not in the platform chain."""
    tenant, admin = as_tenant("acme")
    key = create_key(client, admin, ["runs:read"], expires_in_seconds=60)
    if reason == "revoked":
        assert client.delete(f"{KEYS}/{key['id']}", headers=admin).status_code == 204
    else:
        clock.advance(timedelta(seconds=60))

    response = client.get("/api/runs", headers=bearer(key["secret"]))
    assert response.status_code == 401
    rid = response.headers["x-request-id"]

    (event,) = events_with_request_id(db, tenant.tenant_id, rid)
    assert event.action == "auth.authenticate"
    assert event.outcome == "failure"
    assert event.reason == reason
    assert event.actor_type == "anonymous"
    assert event.target_type == "api_key"
    assert event.target_id == key["id"]
    assert json.loads(event.payload) == {"for_action": "runs:read"}
    assert events_with_request_id(db, PLATFORM_TENANT_ID, rid) == []
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert verify_tenant(tx, tenant_id=tenant.tenant_id).ok


def test_key_changes_are_audited(client: TestClient, as_tenant: AsTenant, db: Database) -> None:
    """Create, rotate and revoke each write one audit event naming the key, never its secret."""
    tenant, admin = as_tenant("acme")
    key = create_key(client, admin, ["runs:read"])
    rotated = client.post(f"{KEYS}/{key['id']}/rotate", json={"grace_seconds": 60}, headers=admin)
    successor = rotated.json()
    assert client.delete(f"{KEYS}/{successor['id']}", headers=admin).status_code == 204

    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list(iter_events(tx, tenant_id=tenant.tenant_id))
        assert verify_tenant(tx, tenant_id=tenant.tenant_id).ok
    changes = [(e.action, e.target_id) for e in events if e.action.startswith("api_key.")]
    assert changes[-3:] == [
        ("api_key.create", key["id"]),
        ("api_key.rotate", key["id"]),
        ("api_key.revoke", successor["id"]),
    ]
    for event in events:
        for secret in (key["secret"], successor["secret"], tenant.admin_key.secret):
            assert secret not in event.payload
