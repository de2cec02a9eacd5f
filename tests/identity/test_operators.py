"""The platform realm: operators are members of no tenant, sign in at their own routes, and must
always prove a second factor; the realms never mix, in the database or at the gateway."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tenantguard.audit.store import iter_events
from tenantguard.cli import app as cli
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import RequestInvalid
from tenantguard.identity import totp, users
from tenantguard.identity.sessions import Issued
from tenantguard.mail import OutboxMailer
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tests.support import bearer, enrolled

SignIn = Callable[..., tuple[users.User, Issued]]
OPERATOR_LINK = re.compile(r"/operator/auth/magic\?token=(tg_ml_[0-9A-Za-z]{38})")
TENANT_LINK = re.compile(r"tenant=([0-9a-f-]{36})&token=(tg_ml_[0-9A-Za-z]{38})")
ACTOR = Principal("system", "tests")


def outbox_bodies(settings: Settings) -> list[str]:
    found = []
    for message in OutboxMailer(settings.data_root / "outbox").messages():
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        found.append(str(body.get_content()))
    return found


def add_operator(db: Database, clock: FakeClock, email: str) -> users.User:
    ctx = TenantContext(PLATFORM_TENANT_ID, ACTOR, frozenset(), "tests")
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        return users.add(tx, ctx, email=email, role="operator", now=clock.now())


def test_an_operator_signs_in_and_must_enrol_a_second_factor_first(
    client: TestClient, db: Database, clock: FakeClock, settings: Settings
) -> None:
    """Magic link at the operators' route, then nothing but the MFA routes until TOTP is
    enrolled and proved; then the platform routes open."""
    operator = add_operator(db, clock, f"ops-{uuid4().hex[:8]}@vendor.example")
    asked = client.post("/api/operator/auth/magic-link", json={"email": operator.email})
    assert asked.status_code == 202
    (body,) = outbox_bodies(settings)
    match = OPERATOR_LINK.search(body)
    assert match is not None, body
    redeemed = client.post("/api/operator/auth/magic-link/redeem", json={"token": match[1]})
    assert redeemed.status_code == 200, redeemed.text
    login = Issued(None, redeemed.json()["access_token"], "", 900)  # type: ignore[arg-type]
    h = bearer(login.access_token)

    pending = client.get("/api/operator/operators", headers=h)
    assert pending.status_code == 401
    assert pending.json()["code"] == "step_up_required"
    assert client.get("/api/sessions", headers=h).status_code == 200  # its own sessions

    seed, _ = enrolled(client, login, clock)
    clock.advance(timedelta(seconds=totp.STEP))  # enrolment used this step's code
    code = totp.code_at(seed, totp.step_of(clock.now()))
    stepped = client.post("/api/auth/step-up", json={"code": code}, headers=h)
    assert stepped.status_code == 200, stepped.text
    fresh = bearer(stepped.json()["access_token"])
    listed = client.get("/api/operator/operators", headers=fresh)
    assert listed.status_code == 200
    assert operator.email in {o["email"] for o in listed.json()}


def test_no_policy_exempts_operators_from_mfa(
    client: TestClient, sign_in_operator: SignIn, owner_in: Any
) -> None:
    """Even an MFA policy row for the platform realm that names no role (which no API can
    write) leaves operators without a second factor able to do nothing."""
    conn = owner_in(PLATFORM_TENANT_ID)
    conn.execute(
        "INSERT INTO tenantguard.mfa_policies (tenant_id, roles, updated_at) VALUES (%s, '{}',"
        " now()) ON CONFLICT (tenant_id) DO UPDATE SET roles = '{}'",
        (PLATFORM_TENANT_ID,),
    )
    try:
        _, login = sign_in_operator(amr=("email",))
        answer = client.get("/api/operator/operators", headers=bearer(login.access_token))
        assert answer.status_code == 401
        assert answer.json()["code"] == "step_up_required"
    finally:
        conn.execute(
            "DELETE FROM tenantguard.mfa_policies WHERE tenant_id = %s", (PLATFORM_TENANT_ID,)
        )


def test_the_realms_do_not_mix_in_the_database(
    db: Database, clock: FakeClock, make_tenant: Callable[[str], NewTenant], owner_in: Any
) -> None:
    """Operators exist only in the platform realm, and only operators there: refused by the
    code, and by a constraint for anyone who writes rows directly."""
    tenant = make_tenant("t")
    in_tenant = TenantContext(tenant.tenant_id, ACTOR, frozenset(), "tests")
    in_platform = TenantContext(PLATFORM_TENANT_ID, ACTOR, frozenset(), "tests")
    with pytest.raises(RequestInvalid), db.tenant_transaction(tenant.tenant_id) as tx:
        users.add(tx, in_tenant, email="x@vendor.example", role="operator", now=clock.now())
    with pytest.raises(RequestInvalid), db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        users.add(tx, in_platform, email="x@vendor.example", role="owner", now=clock.now())
    for realm, role in ((tenant.tenant_id, "operator"), (PLATFORM_TENANT_ID, "admin")):
        conn = owner_in(realm)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO tenantguard.users (tenant_id, id, email, role, created_at,"
                " updated_at) VALUES (%s, gen_random_uuid(), 'y@vendor.example', %s, now(), now())",
                (realm, role),
            )


def test_sign_in_routes_keep_to_their_realm(
    client: TestClient,
    db: Database,
    clock: FakeClock,
    settings: Settings,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
) -> None:
    """The tenant route naming the platform realm sends nothing; a tenant user's address at
    the operators' route sends nothing; a link redeems only at its own realm's route."""
    operator = add_operator(db, clock, f"ops2-{uuid4().hex[:8]}@vendor.example")
    tenant = make_tenant("t")
    member, _ = sign_in(tenant, "member")
    via_tenant_route = client.post(
        "/api/auth/magic-link", json={"tenant": str(PLATFORM_TENANT_ID), "email": operator.email}
    )
    via_operator_route = client.post("/api/operator/auth/magic-link", json={"email": member.email})
    assert via_tenant_route.status_code == via_operator_route.status_code == 202
    assert outbox_bodies(settings) == []
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        reasons = [
            e.reason
            for e in iter_events(tx, tenant_id=PLATFORM_TENANT_ID)
            if e.request_id == via_tenant_route.headers["x-request-id"]
        ]
    assert reasons == ["wrong_realm"]

    client.post("/api/operator/auth/magic-link", json={"email": operator.email})
    client.post(
        "/api/auth/magic-link", json={"tenant": str(tenant.tenant_id), "email": member.email}
    )
    bodies = outbox_bodies(settings)
    operator_token = next(m[1] for b in bodies if (m := OPERATOR_LINK.search(b)))
    tenant_token = next(m[2] for b in bodies if (m := TENANT_LINK.search(b)))
    crossed = [
        client.post(
            "/api/auth/magic-link/redeem",
            json={"tenant": str(PLATFORM_TENANT_ID), "token": operator_token},
        ),
        client.post("/api/operator/auth/magic-link/redeem", json={"token": tenant_token}),
    ]
    assert [c.status_code for c in crossed] == [401, 401]
    # Both links still work where they belong: the refusals used nothing up.
    assert (
        client.post(
            "/api/operator/auth/magic-link/redeem", json={"token": operator_token}
        ).status_code
        == 200
    )
    assert (
        client.post(
            "/api/auth/magic-link/redeem",
            json={"tenant": str(tenant.tenant_id), "token": tenant_token},
        ).status_code
        == 200
    )


def test_operators_are_managed_from_the_host(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch, pg: Any
) -> None:
    """`tenantguard operators add / list / remove`: removing one ends their sessions."""
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(settings.data_root))
    runner = CliRunner()
    email = f"cli-{uuid4().hex[:8]}@vendor.example"
    added = runner.invoke(cli, ["operators", "add", email])
    assert added.exit_code == 0, added.output
    operator_id = added.output.strip().rsplit(" ", 1)[-1]
    listed = runner.invoke(cli, ["operators", "list"])
    assert f"{operator_id}  {email}" in listed.output
    bad = runner.invoke(
        cli,
        [
            "users",
            "add",
            "--tenant",
            str(PLATFORM_TENANT_ID),
            "--email",
            "z@x.example",
            "--role",
            "owner",
        ],
    )
    assert bad.exit_code != 0
    removed = runner.invoke(cli, ["operators", "remove", operator_id])
    assert removed.exit_code == 0, removed.output
    assert email not in runner.invoke(cli, ["operators", "list"]).output
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        assert users.find(tx, PLATFORM_TENANT_ID, email) is None
