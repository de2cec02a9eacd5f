"""The CLI against the test database: tenants, doctor, audit verify, upgrade."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from tenantguard.cli import app
from tenantguard.crypto.kek import LocalKek
from tenantguard.identity import apikeys
from tenantguard.testing import TestDatabase

runner = CliRunner()


@pytest.fixture
def env(pg: TestDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    monkeypatch.setenv("TENANTGUARD_DATABASE_OWNER_URL", pg.owner_url.get_secret_value())
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("TENANTGUARD_LOG_LEVEL", "warning")


def test_tenants_create_prints_the_key_once_as_json(env: None) -> None:
    """`--json` gives the tenant id and a well-formed admin key, for scripts."""
    result = runner.invoke(app, ["tenants", "create", "Acme", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert set(created) == {"tenant_id", "api_key"}
    apikeys.parse(created["api_key"])  # raises if malformed


def test_doctor_passes_on_the_migrated_database(env: None) -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "findings": []}


def test_doctor_fails_as_superuser(
    pg: TestDatabase, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pointed at a superuser connection, the doctor prints findings and exits 1."""
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.admin_url.get_secret_value())
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "superuser" in result.stdout


def test_audit_verify_reports_an_intact_chain(env: None) -> None:
    created = json.loads(runner.invoke(app, ["tenants", "create", "Acme", "--json"]).stdout)
    result = runner.invoke(app, ["audit", "verify", "--tenant", created["tenant_id"]])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())  # the console may wrap lines
    assert "audit log intact: 2 events" in said
    assert "0 signed checkpoints" in said


def test_audit_checkpoint_then_a_cut_back_log_fails_verify(
    env: None,
    monkeypatch: pytest.MonkeyPatch,
    shared_kek: LocalKek,
    signing_key: str,
    owner_in: Callable[[UUID], Any],
) -> None:
    """`audit checkpoint` signs and witnesses a checkpoint; after the newest event is deleted
    behind the service's back, `audit verify` exits 1 naming the cut."""
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(shared_kek._dir.parent))
    created = json.loads(runner.invoke(app, ["tenants", "create", "Acme", "--json"]).stdout)
    tenant = created["tenant_id"]
    signed = runner.invoke(app, ["audit", "checkpoint", "--tenant", tenant])
    assert signed.exit_code == 0, signed.output
    assert f"tenantguard/audit/{tenant}\n2\n" in signed.stdout
    intact = runner.invoke(app, ["audit", "verify", "--tenant", tenant])
    assert intact.exit_code == 0, intact.output
    # The stored row and the witness copy (the console may wrap lines).
    assert "2 signed checkpoints" in " ".join(intact.stdout.split())
    conn = owner_in(UUID(tenant))
    conn.execute("ALTER TABLE tenantguard.audit_events DISABLE TRIGGER audit_events_append_only")
    try:
        conn.execute(
            "DELETE FROM tenantguard.audit_events WHERE tenant_id = %s AND seq = 1", (tenant,)
        )
    finally:
        conn.execute("ALTER TABLE tenantguard.audit_events ENABLE TRIGGER audit_events_append_only")
    cut = runner.invoke(app, ["audit", "verify", "--tenant", tenant])
    assert cut.exit_code == 1
    assert "cut back" in " ".join(cut.output.split())


def test_db_upgrade_is_idempotent(env: None) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "applied" not in result.stdout


def test_bad_setting_is_a_clear_error(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid deployment mode is refused by name, without a traceback."""
    monkeypatch.setenv("TENANTGUARD_DEPLOYMENT_MODE", "yolo")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_tenants_purge_asks_twice_then_leaves_nothing(
    env: None, monkeypatch: pytest.MonkeyPatch, shared_kek: LocalKek, db: Any
) -> None:
    """`tenants purge T --confirm T`: refused without the id repeated; then every row gone,
    checked; a second run finds it done."""
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(shared_kek._dir.parent))
    created = json.loads(runner.invoke(app, ["tenants", "create", "Acme", "--json"]).stdout)
    tenant = created["tenant_id"]
    other = json.loads(runner.invoke(app, ["tenants", "create", "Other", "--json"]).stdout)
    refused = runner.invoke(app, ["tenants", "purge", tenant, "--confirm", other["tenant_id"]])
    assert refused.exit_code != 0
    result = runner.invoke(app, ["tenants", "purge", tenant, "--confirm", tenant, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verified"] is True
    assert report["rows"]["tenants"] == 1
    assert report["rows"]["api_keys"] == 1
    again = runner.invoke(app, ["tenants", "purge", tenant, "--confirm", tenant, "--json"])
    assert json.loads(again.stdout)["already_done"] is True
    with db.tenant_transaction(UUID(other["tenant_id"])) as tx:
        assert tx.execute("SELECT count(*) FROM tenantguard.tenants").fetchone() == (1,)
