"""The CLI against the test database: tenants, doctor, audit verify, upgrade."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tenantguard.cli import app
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
    assert "audit chain intact: 2 events" in result.stdout


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
