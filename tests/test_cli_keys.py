"""`tenantguard init` and `tenantguard keys …` against the test database and a local KEK."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from uuid import UUID

import pytest
from typer.testing import CliRunner

from tenantguard.cli import app
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto.keyring import open_keyring
from tenantguard.crypto.signing import thumbprint
from tenantguard.data import secrets
from tenantguard.db import Database
from tenantguard.errors import DecryptionFailed, KeyProviderUnavailable
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock, TestDatabase

runner = CliRunner()


@pytest.fixture
def env(pg: TestDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("TENANTGUARD_LOG_LEVEL", "warning")
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    return tmp_path


def _tenant_with_a_secret() -> str:
    """A tenant (via the CLI) with one vault secret (via the library, as the gateway does)."""
    created = json.loads(runner.invoke(app, ["tenants", "create", "Acme", "--json"]).stdout)
    tenant = UUID(created["tenant_id"])
    settings = Settings()
    clock = FakeClock()
    ring = open_keyring(settings, clock=clock, create=False)
    assert settings.database_url is not None
    ctx = TenantContext(tenant, Principal("system", "tests"), frozenset(), "cli-keys")
    with Database(settings.database_url) as db, db.tenant_transaction(tenant) as tx:
        secrets.write(tx, ctx, ring, "api", b"value", now=clock.now())
    return str(tenant)


def test_init_creates_a_private_kek_and_is_idempotent(env: Path) -> None:
    assert (env / "keys" / "kek-0001.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 0, again.output
    assert "local-0001" in again.stdout


def test_status_rotate_reencrypt_and_policy(env: Path) -> None:
    """Rotate a tenant's keys, re-encrypt onto the new version, and read the status."""
    tenant = _tenant_with_a_secret()
    rotated = runner.invoke(app, ["keys", "rotate", "--tenant", tenant])
    assert rotated.exit_code == 0, rotated.output
    assert "column:secret_versions.value: now version 2" in rotated.stdout
    moved = runner.invoke(app, ["keys", "reencrypt", "--tenant", tenant])
    assert moved.exit_code == 0, moved.output
    assert "1 of 1 values re-sealed" in moved.stdout
    assert (
        runner.invoke(
            app, ["keys", "policy", "--tenant", tenant, "--rotation-days", "30"]
        ).exit_code
        == 0
    )
    status = json.loads(runner.invoke(app, ["keys", "status", "--tenant", tenant, "--json"]).stdout)
    assert [(r["version"], r["state"]) for r in status] == [(1, "retired"), (2, "active")]
    assert {r["rotation_days"] for r in status} == {30}


def test_rewrap_moves_every_key_to_a_new_kek(env: Path) -> None:
    tenant = _tenant_with_a_secret()
    result = runner.invoke(app, ["keys", "rewrap", "--tenant", tenant])
    assert result.exit_code == 0, result.output
    assert "new key-encryption key: local-0002" in result.stdout
    status = json.loads(runner.invoke(app, ["keys", "status", "--tenant", tenant, "--json"]).stdout)
    assert {r["kek"] for r in status} == {"local-0002"}
    assert (env / "keys" / "kek-0002.key").exists()


def test_missing_kek_fails_closed(env: Path) -> None:
    """Key files gone: key commands refuse rather than mint a KEK that opens nothing."""
    for path in (env / "keys").iterdir():
        path.unlink()
    result = runner.invoke(
        app, ["keys", "rotate", "--tenant", "00000000-0000-4000-8000-000000000001"]
    )
    assert isinstance(result.exception, KeyProviderUnavailable)
    assert "run `tenantguard init`" in result.exception.detail
    assert not (env / "keys" / "kek-0001.key").exists()


def test_signing_keys_rotate_and_export(env: Path, pg: TestDatabase) -> None:
    """Rotate twice: the JWKS lists exactly the two new keys (the old one within its
    overlap), and each kid is the RFC 7638 thumbprint of the exported public key."""
    with Database(pg.app_url) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        # The platform realm outlives tests (and their KEKs): start it from scratch here.
        tx.execute(
            "UPDATE tenantguard.data_keys SET wrapped_key = NULL, destroyed_at = now()"
            " WHERE destroyed_at IS NULL"
        )
        tx.execute(
            "UPDATE tenantguard.signing_keys SET superseded_at = coalesce(superseded_at,"
            " created_at), verify_until = created_at"  # retired, as a real retirement
        )
    made = []
    for _ in range(2):
        result = runner.invoke(app, ["signing-keys", "rotate", "--overlap-hours", "1"])
        assert result.exit_code == 0, result.output
        made.append(result.stdout.split()[2])  # "signing key <kid> is active"
    keys = json.loads(runner.invoke(app, ["signing-keys", "export"]).stdout)["keys"]
    assert [k["kid"] for k in keys] == made[::-1]  # newest first
    for key in keys:
        x = base64.urlsafe_b64decode(key["x"] + "=")
        assert key["kid"] == thumbprint(x)
        assert (key["kty"], key["crv"], key["alg"]) == ("OKP", "Ed25519", "Ed25519")


def test_shared_provider_is_granted_and_revoked(env: Path, pg: TestDatabase) -> None:
    """put-shared, grant, revoke: each succeeds, and the grant is audited in the tenant."""
    with Database(pg.app_url) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        tx.execute(
            "UPDATE tenantguard.data_keys SET wrapped_key = NULL, destroyed_at = now()"
            " WHERE destroyed_at IS NULL"
        )  # the platform realm outlives tests' KEKs
    put = runner.invoke(
        app,
        [
            "providers",
            "put-shared",
            "pool",
            "--kind",
            "openai",
            "--model",
            "gpt-4o",
            "--key-from-stdin",
        ],
        input="sk-pool-123\n",
    )
    assert put.exit_code == 0, put.output
    tenant = json.loads(runner.invoke(app, ["tenants", "create", "T", "--json"]).stdout)
    granted = runner.invoke(
        app,
        [
            "providers",
            "grant",
            "--tenant",
            tenant["tenant_id"],
            "--shared",
            "pool",
            "--reason",
            "pilot",
        ],
    )
    assert granted.exit_code == 0, granted.output
    revoked = runner.invoke(
        app, ["providers", "revoke", "--tenant", tenant["tenant_id"], "--shared", "pool"]
    )
    assert revoked.exit_code == 0, revoked.output
    again = runner.invoke(
        app, ["providers", "revoke", "--tenant", tenant["tenant_id"], "--shared", "pool"]
    )
    assert again.exit_code != 0
    assert "sk-pool-123" not in put.output + granted.output + revoked.output


def test_shred_needs_confirmation_and_then_nothing_opens(env: Path) -> None:
    tenant = _tenant_with_a_secret()
    refused = runner.invoke(app, ["keys", "shred", "--tenant", tenant, "--confirm", "yes"])
    assert refused.exit_code != 0
    done = runner.invoke(app, ["keys", "shred", "--tenant", tenant, "--confirm", tenant])
    assert done.exit_code == 0, done.output
    assert "1 data keys destroyed" in done.stdout
    status = json.loads(runner.invoke(app, ["keys", "status", "--tenant", tenant, "--json"]).stdout)
    assert {r["state"] for r in status} == {"destroyed"}
    settings = Settings()
    ring = open_keyring(settings, clock=FakeClock(), create=False)
    assert settings.database_url is not None
    ctx = TenantContext(UUID(tenant), Principal("system", "tests"), frozenset(), "shred")
    with (
        Database(settings.database_url) as db,
        db.tenant_transaction(UUID(tenant)) as tx,
        pytest.raises(DecryptionFailed),
    ):
        secrets.read(tx, ctx, ring, "api", use="tests", now=FakeClock().now())
