"""Token attacks: every forged, stale or misdirected access token gets the same 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from tenantguard.audit import list_events
from tenantguard.context import PLATFORM_TENANT_ID
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tenantguard.testing import FakeClock

SignIn = Callable[[NewTenant, str], tuple[users.User, Issued]]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload)), signature


def assemble(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(sign(head.encode()))


@pytest.fixture
def victim(make_tenant: Callable[[str], NewTenant], sign_in: SignIn) -> tuple[NewTenant, Issued]:
    tenant = make_tenant("victim")
    _, issued = sign_in(tenant, "admin")
    return tenant, issued


@pytest.fixture
def platform_signer(db: Database, keyring: Keyring, signing_key: str) -> Callable[[bytes], bytes]:
    """Signs with the real platform key: for tokens whose claims, not signature, are wrong."""
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        key = signing.active(tx, keyring)
    return key.sign


def _forgeries(issued: Issued, real: Callable[[bytes], bytes], now: int) -> dict[str, str]:
    token = issued.access_token
    header, claims, signature = parts(token)
    head = token.rsplit(".", 1)[0]
    stranger = Ed25519PrivateKey.generate()
    public_raw = stranger.public_key().public_bytes_raw()

    def with_claims(**changes: Any) -> str:
        return assemble(header, {**claims, **changes}, real)

    tampered_payload = b64(json.dumps({**claims, "caps": ["api_keys:manage"]}).encode())
    return {
        "alg none": assemble({**header, "alg": "none"}, claims, lambda _m: b""),
        "alg none, no signature": b64(json.dumps({**header, "alg": "none"}).encode())
        + "."
        + token.split(".")[1]
        + ".",
        "HS256 keyed with the public key": assemble(
            {**header, "alg": "HS256"},
            claims,
            lambda m: hmac.new(public_raw, m, hashlib.sha256).digest(),
        ),
        "EdDSA name instead of Ed25519": assemble({**header, "alg": "EdDSA"}, claims, real),
        "unknown kid": assemble(
            {**header, "kid": b64(hashlib.sha256(b"x").digest())}, claims, stranger.sign
        ),
        "kid with a path": assemble({**header, "kid": "../../../../etc/passwd"}, claims, real),
        "kid with SQL": assemble({**header, "kid": "x' OR '1'='1"}, claims, real),
        "embedded jwk header": assemble(
            {**header, "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(public_raw)}},
            claims,
            stranger.sign,
        ),
        "signed by a stranger": assemble(header, claims, stranger.sign),
        "expired": with_claims(iat=now - 3600, nbf=now - 3600, exp=now - 2000),
        "nbf in the future": with_claims(nbf=now + 600, iat=now + 600, exp=now + 1200),
        "wrong issuer": with_claims(iss="someone-else"),
        "wrong audience": with_claims(aud="another-api"),
        "lifetime longer than 15 minutes": with_claims(exp=now + 86_400),
        "tampered capabilities": head.split(".")[0] + "." + tampered_payload + "." + signature,
        "tampered tenant": head.split(".")[0]
        + "."
        + b64(json.dumps({**claims, "tenant_id": "00000000-0000-0000-0000-000000000000"}).encode())
        + "."
        + signature,
        "signature stripped": head + ".",
        "signature truncated": head + "." + signature[:-4],
        "not a token": "eyJhbGciOiJFZDI1NTE5In0.e30",
    }


def _problem(response: Any) -> dict[str, Any]:
    body = dict(response.json())
    body.pop("request_id")
    body.pop("instance")
    return body


def test_every_forgery_gets_the_same_401(
    client: TestClient,
    victim: tuple[NewTenant, Issued],
    platform_signer: Callable[[bytes], bytes],
    clock: FakeClock,
) -> None:
    _, issued = victim
    ok = client.get("/api/memory", headers={"Authorization": f"Bearer {issued.access_token}"})
    assert ok.status_code == 200
    reference = None
    forgeries = _forgeries(issued, platform_signer, int(clock.now().timestamp()))
    assert len(forgeries) >= 19
    for name, forged in forgeries.items():
        response = client.get("/api/memory", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401, name
        assert response.headers["content-type"] == "application/problem+json", name
        body = _problem(response)
        reference = reference or body
        assert body == reference, name


def test_claims_checks_use_the_injected_clock(
    client: TestClient, victim: tuple[NewTenant, Issued], clock: FakeClock
) -> None:
    """Valid now; valid within the leeway past expiry; refused after it."""
    _, issued = victim
    h = {"Authorization": f"Bearer {issued.access_token}"}
    clock.advance(timedelta(minutes=15, seconds=20))
    assert client.get("/api/memory", headers=h).status_code == 200
    clock.advance(timedelta(seconds=20))
    assert client.get("/api/memory", headers=h).status_code == 401


def test_token_of_a_revoked_session_or_removed_user_is_refused(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    db: Database,
    clock: FakeClock,
) -> None:
    tenant = make_tenant("t")
    _, admin = sign_in(tenant, "owner")
    member, login = sign_in(tenant, "member")
    h = {"Authorization": f"Bearer {login.access_token}"}
    assert client.get("/api/memory", headers=h).status_code == 200
    ha = {"Authorization": f"Bearer {admin.access_token}"}
    assert client.delete(f"/api/users/{member.id}", headers=ha).status_code == 204
    assert client.get("/api/memory", headers=h).status_code == 401
    assert client.delete(f"/api/admin/sessions/{admin.session.id}", headers=ha).status_code == 204
    assert client.get("/api/memory", headers=ha).status_code == 401


def test_failures_are_audited_with_their_reason(
    client: TestClient,
    victim: tuple[NewTenant, Issued],
    db: Database,
    platform_signer: Callable[[bytes], bytes],
    clock: FakeClock,
) -> None:
    """Opaque outward, specific inward: the audit names why a token was refused."""
    _, issued = victim
    forged = _forgeries(issued, platform_signer, int(clock.now().timestamp()))
    reasons: dict[str, str] = {}
    for name in ("alg none", "wrong audience", "signed by a stranger"):
        rid = f"attack-{len(reasons)}"
        client.get(
            "/api/memory", headers={"Authorization": f"Bearer {forged[name]}", "X-Request-ID": rid}
        )
        with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            found = [
                e
                for e in list_events(tx, tenant_id=PLATFORM_TENANT_ID, after_seq=-1, limit=100_000)
                if e.request_id == rid
            ]
        assert len(found) == 1, name
        reasons[name] = found[0].reason
    assert reasons == {
        "alg none": "bad_algorithm",
        "wrong audience": "wrong_audience",
        "signed by a stranger": "bad_signature",
    }


def test_tokens_carry_the_claims_the_issue_names(victim: tuple[NewTenant, Issued]) -> None:
    tenant, issued = victim
    header, claims, _ = parts(issued.access_token)
    assert header["alg"] == "Ed25519"
    assert header["typ"] == "at+jwt"
    assert {
        "iss",
        "aud",
        "sub",
        "tenant_id",
        "sid",
        "caps",
        "jti",
        "iat",
        "nbf",
        "exp",
        "auth_time",
        "amr",
    } <= claims.keys()
    assert claims["tenant_id"] == str(tenant.tenant_id)
    assert claims["exp"] - claims["iat"] == 900
