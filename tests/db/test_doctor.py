"""The doctor finds each unsafe state, and the gateway refuses to serve on any finding.

Each test breaks the database as the owner (or connects as the wrong role), asserts the
finding, and restores the database in a `finally` block.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tenantguard.db import Database
from tenantguard.db.doctor import DoctorReport, examine
from tenantguard.errors import DoctorFailed
from tenantguard.gateway import create_app
from tenantguard.settings import Settings
from tenantguard.testing import TestDatabase

Conn = psycopg.Connection[tuple[object, ...]]


def doctor_with(url: SecretStr, **options: str) -> DoctorReport:
    extra = " ".join(f"-c {k}={v}" for k, v in options.items())
    with psycopg.connect(url.get_secret_value(), autocommit=True, options=extra) as conn:
        return examine(conn)


def problems(report: DoctorReport) -> set[tuple[str, str]]:
    return {(f.subject, f.problem) for f in report.findings}


def findings_while(
    pg: TestDatabase, owner: Conn, *, breaking: str, restoring: str
) -> set[tuple[str, str]]:
    """The doctor's findings while the owner has run `breaking`; `restoring` always runs."""
    owner.execute(breaking.encode())
    try:
        return problems(doctor_with(pg.app_url))
    finally:
        owner.execute(restoring.encode())


@pytest.fixture
def owner(pg: TestDatabase) -> Iterator[Conn]:
    with psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True) as conn:
        yield conn


def test_clean_database_has_no_findings(pg: TestDatabase) -> None:
    """The migrated database, seen by the service role, is clean."""
    report = doctor_with(pg.app_url)
    assert report.ok, report.findings


def test_superuser_and_owner_connections_are_findings(pg: TestDatabase) -> None:
    """A superuser or the owner is never the service."""
    as_admin = problems(doctor_with(pg.admin_url))
    assert any("superuser" in p for _, p in as_admin)
    assert any("BYPASSRLS" in p for _, p in as_admin)
    as_owner = problems(doctor_with(pg.owner_url))
    assert any("owns a table" in p for _, p in as_owner)
    assert any("must connect as tenantguard_app" in p for _, p in as_owner)


def test_synchronous_commit_off_is_a_finding(pg: TestDatabase) -> None:
    """Acknowledging before the WAL flush could lose an acknowledged action."""
    report = doctor_with(pg.app_url, synchronous_commit="off")
    assert ("synchronous_commit", "is off: acknowledged work can be lost") in problems(report)


def test_table_without_rls_is_a_finding(pg: TestDatabase, owner: Conn) -> None:
    """A new table with tenant_id but no RLS, policy or tenant index is caught."""
    found = findings_while(
        pg,
        owner,
        breaking="CREATE TABLE tenantguard.leaky (tenant_id uuid, secret text)",
        restoring="DROP TABLE tenantguard.leaky",
    )
    assert {
        ("tenantguard.leaky", "row-level security is not enabled"),
        ("tenantguard.leaky", "row-level security is not forced"),
        ("tenantguard.leaky", "tenant_id is nullable"),
        ("tenantguard.leaky", "no key or index leads with tenant_id"),
        ("tenantguard.leaky", "no policy FOR ALL with USING and WITH CHECK on the tenant"),
    } <= found


@pytest.mark.parametrize("table", ["memory_entries", "audit_events"])
def test_unforced_rls_on_an_existing_table_is_a_finding(
    pg: TestDatabase, owner: Conn, table: str
) -> None:
    """Turning FORCE off on a real table is caught."""
    found = findings_while(
        pg,
        owner,
        breaking=f"ALTER TABLE tenantguard.{table} NO FORCE ROW LEVEL SECURITY",
        restoring=f"ALTER TABLE tenantguard.{table} FORCE ROW LEVEL SECURITY",
    )
    assert (f"tenantguard.{table}", "row-level security is not forced") in found


def test_a_wider_policy_is_a_finding(pg: TestDatabase, owner: Conn) -> None:
    """A permissive USING (true) policy beside the tenant policy widens it: caught."""
    found = findings_while(
        pg,
        owner,
        breaking="CREATE POLICY wide ON tenantguard.runs FOR SELECT TO PUBLIC USING (true)",
        restoring="DROP POLICY wide ON tenantguard.runs",
    )
    assert ("tenantguard.runs", "policy wide is wider than the tenant predicate") in found


def test_audit_grants_and_disabled_triggers_are_findings(pg: TestDatabase, owner: Conn) -> None:
    """UPDATE/DELETE/TRUNCATE granted on audit, or its triggers off, are caught."""
    found = findings_while(
        pg,
        owner,
        breaking="GRANT UPDATE, DELETE, TRUNCATE ON tenantguard.audit_events TO tenantguard_app;"
        " ALTER TABLE tenantguard.audit_events DISABLE TRIGGER audit_events_no_truncate",
        restoring="REVOKE UPDATE, DELETE, TRUNCATE ON tenantguard.audit_events"
        " FROM tenantguard_app;"
        " ALTER TABLE tenantguard.audit_events ENABLE TRIGGER audit_events_no_truncate",
    )
    subject = "tenantguard.audit_events"
    assert {
        (subject, "the service may UPDATE"),
        (subject, "the service may DELETE"),
        (subject, "the service may TRUNCATE"),
        (subject, "no trigger refuses TRUNCATE"),
    } <= found


def test_definer_view_and_unlisted_definer_function_are_findings(
    pg: TestDatabase, owner: Conn
) -> None:
    """A view that runs with its owner's rights, or a new SECURITY DEFINER function, is caught."""
    found = findings_while(
        pg,
        owner,
        breaking="CREATE VIEW tenantguard.all_runs AS SELECT * FROM tenantguard.runs;"
        " CREATE FUNCTION tenantguard.sneaky() RETURNS int LANGUAGE sql SECURITY DEFINER"
        " AS 'SELECT 1'",
        restoring="DROP VIEW tenantguard.all_runs; DROP FUNCTION tenantguard.sneaky()",
    )
    assert ("tenantguard.all_runs", "view is not security_invoker (it bypasses RLS)") in found
    assert ("tenantguard.sneaky", "SECURITY DEFINER function is not on the allow-list") in found


def test_pending_and_drifted_migrations_are_findings(pg: TestDatabase, owner: Conn) -> None:
    """A migration not applied, or applied from a different file, is caught."""
    row = owner.execute(
        "SELECT version, name, sha256 FROM tenantguard.schema_migrations WHERE version = 1"
    ).fetchone()
    assert row is not None
    owner.execute("UPDATE tenantguard.schema_migrations SET sha256 = 'x' WHERE version = 1")
    try:
        drifted = problems(doctor_with(pg.app_url))
        owner.execute("DELETE FROM tenantguard.schema_migrations WHERE version = 1")
        pending = problems(doctor_with(pg.app_url))
    finally:
        owner.execute("DELETE FROM tenantguard.schema_migrations WHERE version = 1")
        owner.execute(
            "INSERT INTO tenantguard.schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
            row,
        )
    assert ("schema", "Applied migration 0001 differs from its file.") in drifted
    assert ("0001_spine", "is not applied") in pending


def test_gateway_refuses_to_start_on_findings(pg: TestDatabase, tmp_path: object) -> None:
    """`serve` runs the doctor first: connected as a superuser, the app does not start."""
    with Database(pg.admin_url, min_size=1, max_size=1) as unsafe:
        app = create_app(Settings(), database=unsafe)
        with pytest.raises(DoctorFailed), TestClient(app):
            pass
