"""TOTP: RFC 6238 vectors, enrolment, the ±1 step window, replay, recovery codes, and
step-up for sensitive actions."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import totp, users
from tenantguard.identity.sessions import Issued
from tenantguard.testing import FakeClock
from tests.support import bearer, enrolled

SignIn = Callable[..., tuple[users.User, Issued]]
RFC_SEED = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(
    ("unix", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc_6238_appendix_b(unix: int, eight_digits: str) -> None:
    """SHA-1 vectors of RFC 6238: a 6-digit code is the last six digits of the 8-digit one."""
    step = totp.step_of(datetime.fromtimestamp(unix, UTC))
    assert totp.code_at(RFC_SEED, step) == eight_digits[-6:]


def test_enrolment_shows_the_secret_once_and_stores_it_sealed(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    clock: FakeClock,
    db: Database,
) -> None:
    tenant = make_tenant("t")
    user, login = sign_in(tenant, "member", amr=("email",))
    started = client.post("/api/mfa/totp", headers=bearer(login.access_token)).json()
    uri = urlsplit(started["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert parse_qs(uri.query)["secret"] == [started["secret"]]
    assert parse_qs(uri.query)["issuer"] == ["tenantguard"]
    assert started["qr_svg"].startswith("data:image/svg+xml")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        row = tx.execute(
            "SELECT seed FROM tenantguard.totp_factors WHERE user_id = %s", (user.id,)
        ).fetchone()
    assert row is not None
    assert started["secret"].encode() not in bytes(row[0])
    assert bytes(row[0]).startswith(b"tg\x01")


def test_codes_work_once_within_one_step_either_side(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    clock: FakeClock,
) -> None:
    """A code is accepted ±1 step, never twice, and never for a step before the last used."""
    _, login = sign_in(make_tenant("t"), "member", amr=("email",))
    seed, _ = enrolled(client, login, clock)
    h = bearer(login.access_token)
    now_step = totp.step_of(clock.now())
    # The confirming code used this step: it (and the one before) no longer work.
    for step in (now_step, now_step - 1):
        code = totp.code_at(seed, step)
        assert client.post("/api/auth/step-up", json={"code": code}, headers=h).status_code == 401
    ahead = totp.code_at(seed, now_step + 1)
    stepped = client.post("/api/auth/step-up", json={"code": ahead}, headers=h)
    assert stepped.status_code == 200
    assert client.post("/api/auth/step-up", json={"code": ahead}, headers=h).status_code == 401
    too_far = totp.code_at(seed, now_step + 3)
    assert client.post("/api/auth/step-up", json={"code": too_far}, headers=h).status_code == 401


def test_step_up_gates_sensitive_actions_for_five_minutes(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    clock: FakeClock,
) -> None:
    """An admin signed in by email alone cannot mint an API key until a fresh TOTP step-up;
    five minutes later it needs another."""
    tenant = make_tenant("t")
    _, login = sign_in(tenant, "admin", amr=("email",))
    seed, _ = enrolled(client, login, clock)
    key = {"name": "ci", "capabilities": ["memory:read"]}
    refused = client.post("/api/api-keys", json=key, headers=bearer(login.access_token))
    assert refused.status_code == 401
    assert refused.json()["code"] == "step_up_required"
    clock.advance(timedelta(seconds=30))
    code = totp.code_at(seed, totp.step_of(clock.now()))
    stepped = client.post(
        "/api/auth/step-up", json={"code": code}, headers=bearer(login.access_token)
    )
    fresh = bearer(stepped.json()["access_token"])
    assert client.post("/api/api-keys", json=key, headers=fresh).status_code == 201
    # The session, not just the new token, carries the step-up.
    assert (
        client.post("/api/api-keys", json=key, headers=bearer(login.access_token)).status_code
        == 201
    )
    clock.advance(timedelta(minutes=5, seconds=1))
    stale = client.post("/api/api-keys", json=key, headers=fresh)
    assert stale.json()["code"] == "step_up_required"


def test_recovery_codes_work_once(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    clock: FakeClock,
) -> None:
    _, login = sign_in(make_tenant("t"), "admin", amr=("email",))
    _, codes = enrolled(client, login, clock)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    h = bearer(login.access_token)
    first = client.post("/api/auth/step-up", json={"recovery_code": codes[0]}, headers=h)
    assert first.status_code == 200
    again = client.post("/api/auth/step-up", json={"recovery_code": codes[0]}, headers=h)
    assert again.status_code == 401
    wrong = client.post("/api/auth/step-up", json={"recovery_code": "AAAA-BBBB"}, headers=h)
    assert wrong.status_code == 401


def test_step_up_without_a_factor_and_by_api_key(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    tenant = make_tenant("t")
    _, login = sign_in(tenant, "member", amr=("email",))
    no_factor = client.post(
        "/api/auth/step-up", json={"code": "123456"}, headers=bearer(login.access_token)
    )
    assert no_factor.status_code == 401
    by_key = client.post("/api/mfa/totp", headers=bearer(tenant.admin_key.secret))
    assert by_key.status_code == 404


def test_roles_under_the_mfa_policy_act_only_after_a_second_factor(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    clock: FakeClock,
) -> None:
    """By default an owner signed in by email alone may only manage its sessions and MFA; a
    member may act. After the policy names members too, they are held back as well."""
    tenant = make_tenant("t")
    _, owner = sign_in(tenant, "owner", amr=("email",))
    _, member = sign_in(tenant, "member", amr=("email",))
    held = client.get("/api/memory", headers=bearer(owner.access_token))
    assert held.status_code == 401
    assert held.json()["code"] == "step_up_required"
    assert client.get("/api/sessions", headers=bearer(owner.access_token)).status_code == 200
    assert client.get("/api/memory", headers=bearer(member.access_token)).status_code == 200
    seed, _ = enrolled(client, owner, clock)
    clock.advance(timedelta(seconds=30))
    code = totp.code_at(seed, totp.step_of(clock.now()))
    stepped = client.post(
        "/api/auth/step-up", json={"code": code}, headers=bearer(owner.access_token)
    ).json()["access_token"]
    assert client.get("/api/memory", headers=bearer(stepped)).status_code == 200
    policy = client.put(
        "/api/admin/mfa-policy", json={"roles": ["owner", "member"]}, headers=bearer(stepped)
    )
    assert policy.json() == {"roles": ["member", "owner"]}
    held_member = client.get("/api/memory", headers=bearer(member.access_token))
    assert held_member.json()["code"] == "step_up_required"


def test_only_an_owner_changes_the_mfa_policy(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    """An admin, even stepped up, cannot switch MFA off for owners and admins."""
    tenant = make_tenant("t")
    _, admin = sign_in(tenant, "admin")
    _, owner = sign_in(tenant, "owner")
    refused = client.put(
        "/api/admin/mfa-policy", json={"roles": []}, headers=bearer(admin.access_token)
    )
    assert refused.status_code == 403
    accepted = client.put(
        "/api/admin/mfa-policy", json={"roles": ["owner"]}, headers=bearer(owner.access_token)
    )
    assert accepted.json() == {"roles": ["owner"]}
