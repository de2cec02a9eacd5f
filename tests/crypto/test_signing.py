"""Platform signing keys: thumbprint kids, Wycheproof Ed25519 vectors, rotation with overlap,
sealed private keys, and refusals."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit import list_events
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring
from tenantguard.db import Database
from tenantguard.errors import RequestInvalid, ServiceUnavailable
from tenantguard.gateway import create_app
from tenantguard.identity import users
from tenantguard.identity.sessions import Sessions
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock

VECTORS = Path(__file__).parent.parent / "vectors" / "wycheproof" / "ed25519_test.json"
PLATFORM = TenantContext(PLATFORM_TENANT_ID, Principal("system", "tests"), frozenset(), "sig")


def test_kid_is_the_rfc7638_thumbprint() -> None:
    """RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key."""
    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert signing.thumbprint(x) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _vector_cases() -> list[tuple[bytes, dict[str, Any]]]:
    data = json.loads(VECTORS.read_text())
    return [
        (bytes.fromhex(g["publicKey"]["pk"]), case)
        for g in data["testGroups"]
        for case in g["tests"]
    ]


@pytest.mark.parametrize(
    ("public", "case"),
    _vector_cases(),
    ids=lambda v: f"tc{v['tcId']}" if isinstance(v, dict) else "",
)
def test_wycheproof_ed25519(public: bytes, case: dict[str, Any], clock: FakeClock) -> None:
    """`verify` accepts exactly the valid Wycheproof signatures."""
    key = signing.PublicKey(signing.thumbprint(public), public, clock.now(), None)
    verdict = signing.verify(
        [key], key.kid, bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]), now=clock.now()
    )
    assert verdict is (case["result"] == "valid")


@pytest.fixture
def platform_db(db: Database, keyring: Keyring) -> Database:
    """The session database with the platform realm's keys shredded and its signing keys
    retired: each test brings its own KEK, and the platform realm outlives tests."""
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keyring.destroy_all(tx, PLATFORM)
        tx.execute(
            "UPDATE tenantguard.signing_keys SET superseded_at = created_at,"
            " verify_until = created_at WHERE superseded_at IS NULL"
        )
    return db


def test_no_key_is_a_typed_refusal(platform_db: Database, keyring: Keyring) -> None:
    with (
        pytest.raises(ServiceUnavailable),
        platform_db.tenant_transaction(PLATFORM_TENANT_ID) as tx,
    ):
        signing.active(tx, keyring)


def test_rotation_signs_with_the_new_key_and_honours_the_overlap(
    platform_db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """After a rotation the new key signs; the old one verifies until the overlap ends."""
    db = platform_db
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        first = signing.rotate(tx, PLATFORM, keyring, now=clock.now())
        old_signature = signing.active(tx, keyring).sign(b"token")
    clock.advance(timedelta(hours=1))
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        second = signing.rotate(tx, PLATFORM, keyring, now=clock.now(), overlap=timedelta(hours=2))
        now_signing = signing.active(tx, keyring)
        keys = signing.public_keys(tx, now=clock.now())
    assert now_signing.kid == second != first
    assert [k.kid for k in keys] == [second, first]
    assert signing.jwks(keys)["keys"][0] == {**keys[0].jwk(), "kid": second}
    assert signing.verify(keys, first, b"token", old_signature, now=clock.now())
    later = clock.now() + timedelta(hours=2)
    assert not signing.verify(keys, first, b"token", old_signature, now=later)
    assert not signing.verify(keys, second, b"token", old_signature, now=clock.now())


def test_private_keys_are_stored_sealed(
    platform_db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    with platform_db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        kid = signing.rotate(tx, PLATFORM, keyring, now=clock.now())
        key = signing.active(tx, keyring)
        row = tx.execute(
            "SELECT private_sealed FROM tenantguard.signing_keys WHERE kid = %s", (kid,)
        ).fetchone()
        events = list_events(tx, tenant_id=PLATFORM_TENANT_ID, after_seq=-1, limit=100_000)
    raw = key.private.private_bytes_raw()
    assert row is not None
    assert raw not in bytes(row[0])
    assert bytes(row[0]).startswith(b"tg\x01")
    assert any(e.action == "signing_key.rotate" and e.target_id == kid for e in events)


def test_only_the_platform_realm_holds_signing_keys(
    db: Database, keyring: Keyring, clock: FakeClock, make_tenant: Any
) -> None:
    tenant = make_tenant("t")
    ctx = TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "sig")
    with pytest.raises(RequestInvalid), db.tenant_transaction(tenant.tenant_id) as tx:
        signing.rotate(tx, ctx, keyring, now=clock.now())


def test_overlap_shorter_than_a_token_is_refused(
    platform_db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    with pytest.raises(RequestInvalid), platform_db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        signing.rotate(tx, PLATFORM, keyring, now=clock.now(), overlap=timedelta(minutes=5))


def test_keys_not_yet_valid_are_not_published(
    platform_db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """A key whose validity begins later is neither exported nor accepted before then."""
    with platform_db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        kid = signing.rotate(tx, PLATFORM, keyring, now=clock.now() + timedelta(hours=1))
        signature = signing.active(tx, keyring).sign(b"m")
        keys_now = signing.public_keys(tx, now=clock.now())
        keys_later = signing.public_keys(tx, now=clock.now() + timedelta(hours=2))
    assert kid not in [k.kid for k in keys_now]
    assert signing.verify(keys_later, kid, b"m", signature, now=clock.now() + timedelta(hours=2))


def test_first_start_creates_a_signing_key(
    platform_db: Database, keyring: Keyring, clock: FakeClock, settings: Settings
) -> None:
    """A fresh deployment has no signing key; the gateway's first start makes one."""
    with (
        platform_db.tenant_transaction(PLATFORM_TENANT_ID) as tx,
        pytest.raises(ServiceUnavailable),
    ):
        signing.active(tx, keyring)
    with TestClient(create_app(settings, database=platform_db, clock=clock, keyring=keyring)):
        pass
    with platform_db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        assert signing.active(tx, keyring).kid


def test_no_signing_key_means_no_session_row(
    platform_db: Database,
    keyring: Keyring,
    clock: FakeClock,
    settings: Settings,
    make_tenant: Any,
) -> None:
    """Without a signing key a sign-in fails before anything is written."""
    tenant = make_tenant("t")
    ctx = TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "s")
    with platform_db.tenant_transaction(tenant.tenant_id) as tx:
        user = users.add(tx, ctx, email="ada@example.com", role="member", now=clock.now())
    service = Sessions(platform_db, keyring, settings.tokens(), clock=clock)
    with pytest.raises(ServiceUnavailable):
        service.start(tenant.tenant_id, user.id, amr=("email",), request_id="s")
    with platform_db.tenant_transaction(tenant.tenant_id) as tx:
        assert tx.execute("SELECT count(*) FROM tenantguard.sessions").fetchone() == (0,)
