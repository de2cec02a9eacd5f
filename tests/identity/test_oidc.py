"""OIDC single sign-on against a real provider process (oidc-provider-mock on loopback), and
ID-token validation, case by case."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, OKPKey

from tenantguard.data.tenants import NewTenant
from tenantguard.errors import InvalidCredentials
from tenantguard.identity import oidc, users
from tenantguard.identity.sessions import Issued, Sessions
from tenantguard.testing import FakeClock
from tests.support import bearer

SignIn = Callable[..., tuple[users.User, Issued]]
REDIRECT = "https://app.acme.example/sso/callback"
PEOPLE = [
    {"sub": "ada", "email": "ada@acme.example", "email_verified": True},
    {"sub": "eve", "email": "eve@evil.example", "email_verified": True},
    {"sub": "bob", "email": "bob@acme.example", "email_verified": False},
]


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """oidc-provider-mock in its own process on a free loopback port; yields its issuer."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "oidc-provider-mock"),
        "--port",
        str(port),
        "--require-nonce",
        "true",
    ]
    for person in PEOPLE:
        command += ["--user-claims", json.dumps(person)]
    process = subprocess.Popen(  # noqa: S603 (our interpreter's script, fixed arguments)
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # bounded wait until it answers
            with socket.socket() as conn:
                if conn.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the OIDC provider did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def sso_tenant(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, provider: str
) -> NewTenant:
    tenant = make_tenant("acme")
    _, owner = sign_in(tenant, "owner")
    h = bearer(owner.access_token)
    configured = client.put(
        "/api/admin/oidc",
        headers=h,
        json={
            "issuer": provider,
            "client_id": "tenantguard-test",
            "client_secret": "s3cret",
            "redirect_uris": [REDIRECT],
            "allowed_domains": ["ACME.example"],
            "jit_provisioning": True,
            "default_role": "member",
        },
    )
    assert configured.status_code == 200, configured.text
    return tenant


def login(client: TestClient, tenant: NewTenant, sub: str) -> tuple[Any, str, str]:
    """Start SSO, sign in at the provider as `sub`, return (callback answer, state, code)."""
    started = client.post(
        "/api/auth/oidc/start", json={"tenant": str(tenant.tenant_id), "redirect_uri": REDIRECT}
    )
    assert started.status_code == 200, started.text
    url, binding = started.json()["authorization_url"], started.json()["binding"]
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    at_provider = httpx.post(url, data={"sub": sub}, follow_redirects=False, timeout=10)
    location = urlsplit(at_provider.headers["location"])
    assert location.geturl().startswith(REDIRECT)
    back = parse_qs(location.query)
    state, code = back["state"][0], back["code"][0]
    answer = client.post(
        "/api/auth/oidc/callback",
        json={"tenant": str(tenant.tenant_id), "state": state, "code": code, "binding": binding},
    )
    return answer, state, code


def test_sign_in_provisions_a_member_just_in_time(
    client: TestClient, sso_tenant: NewTenant
) -> None:
    answer, _, _ = login(client, sso_tenant, "ada")
    assert answer.status_code == 200, answer.text
    access = answer.json()["access_token"]
    mine = client.get("/api/sessions", headers=bearer(access)).json()
    assert [s["amr"] for s in mine if s["current"]] == [["oidc"]]
    assert client.get("/api/memory", headers=bearer(access)).status_code == 200


def test_state_and_code_work_once(client: TestClient, sso_tenant: NewTenant) -> None:
    answer, state, code = login(client, sso_tenant, "ada")
    assert answer.status_code == 200
    replay = client.post(
        "/api/auth/oidc/callback",
        json={"tenant": str(sso_tenant.tenant_id), "state": state, "code": code, "binding": "b"},
    )
    assert replay.status_code == 401
    forged = client.post(
        "/api/auth/oidc/callback",
        json={
            "tenant": str(sso_tenant.tenant_id),
            "state": "made-up",
            "code": code,
            "binding": "b",
        },
    )
    assert forged.status_code == 401


def test_the_callback_needs_the_binding_of_the_browser_that_started(
    client: TestClient, sso_tenant: NewTenant
) -> None:
    """Login CSRF: the provider's redirect (state and code) alone signs no one in; the wrong
    binding burns the login."""
    started = client.post(
        "/api/auth/oidc/start", json={"tenant": str(sso_tenant.tenant_id), "redirect_uri": REDIRECT}
    ).json()
    at_provider = httpx.post(
        started["authorization_url"], data={"sub": "ada"}, follow_redirects=False, timeout=10
    )
    back = parse_qs(urlsplit(at_provider.headers["location"]).query)
    body = {"tenant": str(sso_tenant.tenant_id), "state": back["state"][0], "code": back["code"][0]}
    wrong = client.post("/api/auth/oidc/callback", json={**body, "binding": "someone-elses"})
    assert wrong.status_code == 401
    late = client.post("/api/auth/oidc/callback", json={**body, "binding": started["binding"]})
    assert late.status_code == 401


@pytest.mark.parametrize("sub", ["eve", "bob"], ids=["other domain", "email not verified"])
def test_wrong_organisation_or_unverified_email_is_refused(
    client: TestClient, sso_tenant: NewTenant, sub: str
) -> None:
    answer, _, _ = login(client, sso_tenant, sub)
    assert answer.status_code == 401


def test_unregistered_redirect_and_unconfigured_tenant(
    client: TestClient, sso_tenant: NewTenant, make_tenant: Callable[[str], NewTenant]
) -> None:
    open_redirect = client.post(
        "/api/auth/oidc/start",
        json={"tenant": str(sso_tenant.tenant_id), "redirect_uri": "https://evil.example/cb"},
    )
    assert open_redirect.status_code == 422
    other = make_tenant("no-sso")
    unconfigured = client.post(
        "/api/auth/oidc/start", json={"tenant": str(other.tenant_id), "redirect_uri": REDIRECT}
    )
    assert unconfigured.status_code == 401


# -- ID-token validation, with a key we control ---------------------------------------------

ISSUER = "https://idp.example"


@pytest.fixture
def relying_party(
    sessions_service: Sessions, clock: FakeClock
) -> Iterator[tuple[oidc.OidcClient, OKPKey]]:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})
    client = oidc.OidcClient(
        sessions_service._db, sessions_service, clock=clock, allow_loopback=True
    )
    client._metadata[ISSUER] = {"issuer": ISSUER}  # seeded: no network in these cases
    client._keys[ISSUER] = KeySet([key])
    yield client, key
    client.close()


CONFIG = oidc.OidcConfig(ISSUER, "rp", None, (REDIRECT,), ("acme.example",), True, "member")


def _token(key: OKPKey, clock: FakeClock, **changes: Any) -> str:
    now = int(clock.now().timestamp())
    claims = {
        "iss": ISSUER,
        "aud": "rp",
        "sub": "ada",
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
        "email": "ada@acme.example",
        "email_verified": True,
        **changes,
    }
    return jwt.encode({"alg": "Ed25519", "kid": key.kid}, claims, key, algorithms=["Ed25519"])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://other.example"}, "wrong_issuer"),
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"aud": ["rp", "other"]}, "wrong_azp"),
        ({"nonce": "n-2"}, "wrong_nonce"),
        ({"exp": 1}, "expired"),
        ({"iat": 4_000_000_000}, "issued_in_the_future"),
    ],
)
def test_id_token_claims_are_checked(
    relying_party: tuple[oidc.OidcClient, OKPKey],
    clock: FakeClock,
    changes: dict[str, Any],
    reason: str,
) -> None:
    client, key = relying_party
    assert (
        client.validate_id_token(
            _token(key, clock), CONFIG, nonce="n-1", now=clock.now(), tenant_id=uuid4()
        )["sub"]
        == "ada"
    )
    with pytest.raises(InvalidCredentials) as caught:
        client.validate_id_token(
            _token(key, clock, **changes), CONFIG, nonce="n-1", now=clock.now(), tenant_id=uuid4()
        )
    assert caught.value.reason == reason


def test_id_token_signed_by_another_key_is_refused(
    relying_party: tuple[oidc.OidcClient, OKPKey], clock: FakeClock, provider: str
) -> None:
    """A token under a kid we hold but another key's signature fails, and so does one whose
    header says `none`, after the key set was refetched once (from a real provider's JWKS)."""
    client, key = relying_party
    metadata = httpx.get(provider + "/.well-known/openid-configuration", timeout=10).json()
    client._metadata[ISSUER]["jwks_uri"] = metadata["jwks_uri"]
    stranger = OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})
    unsigned = _token(key, clock).rsplit(".", 1)[0] + "."
    for forged in (_token(stranger, clock), unsigned):
        with pytest.raises(InvalidCredentials) as caught:
            client.validate_id_token(
                forged, CONFIG, nonce="n-1", now=clock.now(), tenant_id=uuid4()
            )
        assert caught.value.reason == "bad_id_token_signature"


def test_a_configuration_naming_a_vault_secret_must_be_made_again(
    client: TestClient, sso_tenant: NewTenant, owner_in: Any
) -> None:
    """A configuration from before the client secret moved into it (it named a vault secret)
    refuses sign-ins until an owner configures it again: no silent fallback to no secret."""
    conn = owner_in(sso_tenant.tenant_id)
    conn.execute(
        "UPDATE tenantguard.oidc_configs SET client_secret_name = 'legacy',"
        " client_secret_sealed = NULL WHERE tenant_id = %s",
        (sso_tenant.tenant_id,),
    )
    answer = client.post(
        "/api/auth/oidc/start", json={"tenant": str(sso_tenant.tenant_id), "redirect_uri": REDIRECT}
    )
    assert answer.status_code == 401
