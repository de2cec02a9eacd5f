"""Row-level security over the live catalog: every tenant table, found by enumeration."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg import errors as pg_errors

from tenantguard import retention
from tenantguard.artifacts.stores import LocalStore
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import (
    egress,
    idempotency,
    memory,
    model_providers,
    quotas,
    runs,
    secrets,
    tools,
    webhook_endpoints,
    webhook_sources,
)
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.db.doctor import TENANT_PREDICATE
from tenantguard.egress.check import EgressPolicy
from tenantguard.errors import InternalError
from tenantguard.idempotency import Pending, Stored
from tenantguard.identity import totp, users
from tenantguard.identity.magiclinks import LinkConfig, MagicLinks
from tenantguard.identity.sessions import Issued, Sessions
from tenantguard.mail import OutboxMailer
from tenantguard.purge import Purger
from tenantguard.quotas.core import Subject, checks_for
from tenantguard.quotas.stores import PostgresQuotaStore
from tenantguard.testing import FakeClock, TestDatabase
from tenantguard.webhooks.signing import Verified

Conn = psycopg.Connection[tuple[object, ...]]
CORE_TABLES = {
    "tenants",
    "api_keys",
    "memory_entries",
    "memory_versions",
    "runs",
    "run_events",
    "audit_events",
    "data_keys",
    "key_policies",
    "secrets",
    "secret_versions",
    "signing_keys",
    "model_providers",
    "model_provider_grants",
    "users",
    "sessions",
    "refresh_tokens",
    "magic_links",
    "totp_factors",
    "recovery_codes",
    "mfa_policies",
    "oidc_configs",
    "oidc_logins",
    "saml_configs",
    "saml_logins",
    "saml_assertions",
    "audit_checkpoints",
    "operator_access",
    "pii_policies",
    "pii_token_keys",
    "pii_vault",
    "agents",
    "tool_policies",
    "approvals",
    "egress_policies",
    "egress_grants",
    "quota_policies",
    "quota_state",
    "webhook_sources",
    "webhook_receipts",
    "webhook_endpoints",
    "webhook_endpoint_secrets",
    "webhook_deliveries",
    "webhook_attempts",
    "idempotency_keys",
    "artifacts",
    "tenant_purges",
    "retention_policies",
}


def tenant_tables(conn: Conn) -> list[str]:
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'p') AND n.nspname = 'tenantguard' ORDER BY 1
        """
    ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.fixture
def app_conn(pg: TestDatabase) -> Iterator[Conn]:
    """A raw connection as the service role, outside the pool: no tenant context at all."""
    with psycopg.connect(pg.app_url.get_secret_value(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def populated(
    db: Database,
    make_tenant: Callable[[str], NewTenant],
    clock: FakeClock,
    keyring: Keyring,
    sign_in: Callable[[NewTenant, str], tuple[users.User, Issued]],
    sessions_service: Sessions,
    tmp_path: Path,
) -> NewTenant:
    """A tenant with a row in every tenant table, and the platform realm with a signing key
    (the one table only the platform realm fills)."""
    tenant = make_tenant("populated")
    ctx = TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "rls")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        memory.create(tx, ctx, key="k", content="c", now=clock.now())
        run = runs.create_run(tx, ctx, agent="a", input={}, now=clock.now())
        runs.append_event(tx, ctx, run.id, type="t", data={}, now=clock.now())
        secrets.write(tx, ctx, keyring, "token", b"value", now=clock.now())
        keyring.set_rotation(tx, ctx, timedelta(days=30))
        model_providers.put(
            tx,
            ctx,
            "p",
            kind="openai",
            base_url=None,
            secret_name="token",
            models=["m"],
            now=clock.now(),
        )
        model_providers.grant_shared(
            tx, ctx, "shared", reason="tests", granted_by="tests", now=clock.now()
        )
        tools.put_agent(tx, ctx, "a", {"memory_delete": {}}, now=clock.now())
        tools.put_tool_policy(tx, ctx, {"memory_delete": {}}, now=clock.now())
        egress.put_policy(tx, ctx, allow_hosts=["a.example"], deny_hosts=[], now=clock.now())
        egress.add_grant(
            tx,
            ctx,
            network="10.0.0.5/32",
            ports=[11434],
            reason="tests",
            granted_by="tests",
            now=clock.now(),
        )
        quotas.put_policy(
            tx,
            ctx,
            {"limits": [{"metric": "requests", "scope": "tenant", "per": "day", "limit": 9}]},
            now=clock.now(),
        )
        PostgresQuotaStore(db).consume(
            tenant.tenant_id,
            checks_for(quotas.get_policy(tx, tenant.tenant_id)[0], "requests", Subject("k"), 0),
            cost=1,
            now=0,
            conn=tx,
        )
        source = webhook_sources.put(
            tx, ctx, "s", scheme="stripe", secret_name="token", now=clock.now()
        )
        webhook_sources.keep(
            tx, ctx, keyring, source, verified=Verified("r", 0), body=b"{}", now=clock.now()
        )
        endpoint, _ = webhook_endpoints.create(
            tx,
            ctx,
            keyring,
            url="https://hooks.example/x",
            event_types=["webhook.test"],
            description="",
            policy=EgressPolicy(),
            now=clock.now(),
        )
        (delivery,) = webhook_endpoints.emit(
            tx, ctx, keyring, "webhook.test", {}, now=clock.now(), endpoint_id=endpoint.id
        )
        tx.execute(
            "INSERT INTO tenantguard.webhook_attempts (tenant_id, delivery_id, attempt,"
            " started_at, status_code, error, duration_ms) VALUES (%s, %s, 1, now(), 500,"
            " 'status:500', 3)",
            (tenant.tenant_id, delivery),
        )
        tx.execute(  # that attempt was its last: failed for good (never due again)
            "UPDATE tenantguard.webhook_deliveries SET attempts = 1, status = 'failed',"
            " next_attempt_at = NULL, finished_at = now() WHERE tenant_id = %s AND id = %s",
            (tenant.tenant_id, delivery),
        )
        held = idempotency.claim(
            tx,
            ctx,
            keyring,
            Pending("k-1", bytes(32), "POST", "/api/memory"),
            now=clock.now(),
            retention=timedelta(hours=1),
        )
        assert isinstance(held, idempotency.Claim)
        idempotency.complete(tx, ctx, keyring, held, Stored(201, (), b"{}"))
        tx.execute(
            "INSERT INTO tenantguard.artifacts (tenant_id, id, name, content_type, size, sha256,"
            " store, created_at, created_by) VALUES (%s, gen_random_uuid(), 'a', 'text/plain', 0,"
            " repeat('0', 64), 'local', now(), 'tests')",
            (tenant.tenant_id,),
        )
        retention.write_policy(tx, ctx, {"run_events": 30}, now=clock.now())
        tools.request_approval(
            tx,
            ctx,
            run_id=run.id,
            tool="memory_delete",
            call_hash="0" * 64,
            arguments={"id": "x"},
            now=clock.now(),
        )
    user, _ = sign_in(tenant, "member")  # users, sessions, refresh_tokens (and a signing key)
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:  # a purge of another, long gone
        tx.execute(
            "INSERT INTO tenantguard.tenant_purges (tenant_id, purged_tenant, requested_at,"
            " requested_by, state, finished_at) VALUES (%s, gen_random_uuid(), now(), 'tests',"
            " 'done', now())",
            (PLATFORM_TENANT_ID,),
        )
    links = MagicLinks(
        db,
        sessions_service,
        OutboxMailer(tmp_path / "outbox"),
        LinkConfig(sender="t@localhost", public_url="http://t"),
        clock=clock,
    )
    links.request(tenant_id=tenant.tenant_id, email=user.email, request_id="rls")
    person = TenantContext(tenant.tenant_id, Principal("user", str(user.id)), frozenset(), "rls")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        enrolment = totp.enroll(tx, person, keyring, user.id, user.email, now=clock.now())
        code = totp.code_at(enrolment.secret, totp.step_of(clock.now()))
        totp.confirm(tx, person, keyring, user.id, code, now=clock.now())
        totp.set_mfa_roles(tx, ctx, ["owner"], now=clock.now())
        tx.execute(
            "INSERT INTO tenantguard.oidc_configs (tenant_id, issuer, client_id, redirect_uris,"
            " allowed_domains, jit_provisioning, default_role, updated_at) VALUES"
            " (%s, 'https://idp.example', 'rp', '{https://rp.example/cb}', '{example.com}',"
            " false, 'member', now())",
            (tenant.tenant_id,),
        )
        tx.execute(
            "INSERT INTO tenantguard.oidc_logins (tenant_id, state_hash, nonce, code_verifier,"
            " redirect_uri, created_at, expires_at) VALUES (%s, %s, 'n', 'v', 'https://rp', now(),"
            " now())",
            (tenant.tenant_id, bytes(32)),
        )
        tx.execute(
            "INSERT INTO tenantguard.saml_configs (tenant_id, idp_metadata, idp_entity_id,"
            " acs_urls, allowed_domains, jit_provisioning, default_role, updated_at) VALUES"
            " (%s, '<md/>', 'https://idp.example', '{https://rp.example/acs}', '{example.com}',"
            " false, 'member', now())",
            (tenant.tenant_id,),
        )
        tx.execute(
            "INSERT INTO tenantguard.saml_logins (tenant_id, relay_hash, request_id, acs_url,"
            " created_at, expires_at) VALUES (%s, %s, 'id-1', 'https://rp.example/acs', now(),"
            " now())",
            (tenant.tenant_id, bytes(32)),
        )
        tx.execute(
            "INSERT INTO tenantguard.saml_assertions (tenant_id, assertion_id, accepted_at,"
            " expires_at) VALUES (%s, 'id-a', now(), now())",
            (tenant.tenant_id,),
        )
        tx.execute(
            "INSERT INTO tenantguard.audit_checkpoints (tenant_id, id, tree_size, root_hash,"
            " signed_at, kid, note) VALUES (%s, gen_random_uuid(), 0, %s, now(), 'k', 'n')",
            (tenant.tenant_id, bytes(32)),
        )
        tx.execute(
            "INSERT INTO tenantguard.operator_access (tenant_id, enabled, changed_at, changed_by)"
            " VALUES (%s, false, now(), 'tests')",
            (tenant.tenant_id,),
        )
        tx.execute(
            "INSERT INTO tenantguard.pii_policies (tenant_id, document, version, updated_at)"
            " VALUES (%s, '{}', 1, now())",
            (tenant.tenant_id,),
        )
        tx.execute(
            "INSERT INTO tenantguard.pii_token_keys (tenant_id, sealed, created_at)"
            " VALUES (%s, %s, now())",
            (tenant.tenant_id, b"x"),
        )
        tx.execute(
            "INSERT INTO tenantguard.pii_vault (tenant_id, conversation, token, pii_class,"
            " value_hash, sealed, created_at) VALUES (%s, 'c', '[EMAIL_r]', 'email', %s, %s,"
            " now())",
            (tenant.tenant_id, bytes(32), b"x"),
        )
    return tenant


def test_the_catalog_lists_every_core_table(app_conn: Conn) -> None:
    """Enumeration finds the tables we know of (so an empty loop cannot pass the suite)."""
    assert set(tenant_tables(app_conn)) >= CORE_TABLES


def test_every_tenant_table_enables_and_forces_rls(app_conn: Conn) -> None:
    """ENABLE and FORCE row-level security on every table with a tenant_id column."""
    for table in tenant_tables(app_conn):
        row = app_conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE oid = ('tenantguard.' || %s)::regclass",
            (table,),
        ).fetchone()
        assert row == (True, True), table


def test_every_tenant_table_has_the_tenant_policy(app_conn: Conn) -> None:
    """A FOR ALL policy whose USING and WITH CHECK are both the tenant predicate."""
    for table in tenant_tables(app_conn):
        policies = app_conn.execute(
            "SELECT cmd, qual, with_check FROM pg_policies"
            " WHERE schemaname = 'tenantguard' AND tablename = %s AND 'public' = ANY (roles)",
            (table,),
        ).fetchall()
        assert ("ALL", TENANT_PREDICATE, TENANT_PREDICATE) in policies, table


def test_service_role_is_unprivileged(app_conn: Conn) -> None:
    """The service is tenantguard_app: no superuser, no BYPASSRLS, owns nothing."""
    row = app_conn.execute(
        "SELECT current_user, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb,"
        " (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid),"
        " (SELECT count(*) FROM pg_namespace n WHERE n.nspowner = r.oid)"
        " FROM pg_roles r WHERE rolname = current_user"
    ).fetchone()
    assert row == ("tenantguard_app", False, False, False, False, 0, 0)


def test_no_context_sees_zero_rows(app_conn: Conn, pg: TestDatabase, populated: NewTenant) -> None:
    """Without a tenant context every tenant table reads empty, though rows exist."""
    with psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True) as owner:
        for table in tenant_tables(app_conn):
            found = 0
            for tenant in (populated.tenant_id, PLATFORM_TENANT_ID):
                owner.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
                row = owner.execute(f"SELECT count(*) FROM tenantguard.{table}").fetchone()
                found += int(str(row[0])) if row else 0
            assert found > 0, f"{table} has no row to hide"
    for table in tenant_tables(app_conn):
        seen = app_conn.execute(f"SELECT count(*) FROM tenantguard.{table}").fetchone()
        assert seen == (0,), table


def test_no_context_cannot_insert(app_conn: Conn) -> None:
    """Without a context, an insert into any tenant table the service may write is refused by
    RLS (checked before constraints, so nothing else can answer first)."""
    writable = [
        t
        for t in tenant_tables(app_conn)
        if app_conn.execute(
            "SELECT has_table_privilege(%s, 'INSERT')", (f"tenantguard.{t}",)
        ).fetchone()
        == (True,)
    ]
    assert set(writable) == CORE_TABLES
    for table in writable:
        with pytest.raises(pg_errors.InsufficientPrivilege, match="row-level security"):
            app_conn.execute(f"INSERT INTO tenantguard.{table} (tenant_id) VALUES (%s)", (uuid4(),))


def test_another_context_sees_none_of_the_tenants_rows(
    db: Database, populated: NewTenant, make_tenant: Callable[[str], NewTenant], app_conn: Conn
) -> None:
    """In tenant B's context, no table yields a row of tenant A, even when asked by id."""
    other = make_tenant("other")
    tables = tenant_tables(app_conn)
    with db.tenant_transaction(other.tenant_id) as tx:
        for table in tables:
            row = tx.execute(
                f"SELECT count(*) FROM tenantguard.{table} WHERE tenant_id = %s",
                (populated.tenant_id,),
            ).fetchone()
            assert row == (0,), table


def test_writing_into_another_tenant_is_refused(db: Database, populated: NewTenant) -> None:
    """In B's context, a row claiming tenant A fails WITH CHECK."""
    with pytest.raises(InternalError) as caught, db.tenant_transaction(uuid4()) as tx:
        tx.execute(
            "INSERT INTO tenantguard.runs (tenant_id, id, agent, status, input, created_at,"
            " updated_at) VALUES (%s, %s, 'x', 'created', '{}', now(), now())",
            (populated.tenant_id, uuid4()),
        )
    assert isinstance(caught.value.__cause__, pg_errors.InsufficientPrivilege)


def test_malformed_context_fails_closed(app_conn: Conn) -> None:
    """A context that is not a uuid is an error, never 'no filter'."""
    app_conn.execute("BEGIN")
    app_conn.execute("SELECT set_config('app.tenant_id', 'not-a-uuid', true)")
    with pytest.raises(pg_errors.InvalidTextRepresentation):
        app_conn.execute("SELECT count(*) FROM tenantguard.runs")
    app_conn.execute("ROLLBACK")


def test_the_purge_definer_may_delete_from_every_tenant_table(app_conn: Conn) -> None:
    """A table added later must grant its rows to the purge, or purges would stop at it."""
    for table in tenant_tables(app_conn):
        row = app_conn.execute(
            "SELECT has_table_privilege('tenantguard_auth', 'tenantguard.' || %s, 'DELETE')",
            (table,),
        ).fetchone()
        assert row == (True,), table


def test_a_purge_of_a_tenant_with_a_row_in_every_table_leaves_none(
    db: Database, keyring: Keyring, clock: FakeClock, populated: NewTenant, tmp_path: Path,
    app_conn: Conn, pg: TestDatabase,
) -> None:  # fmt: skip
    actor = TenantContext(PLATFORM_TENANT_ID, Principal("system", "tests"), frozenset(), "rls")
    purger = Purger(db, keyring, LocalStore(tmp_path / "store"), tmp_path, clock)
    report = purger.purge(actor, populated.tenant_id)
    assert report.verified
    with psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True) as owner:
        owner.execute("SELECT set_config('app.tenant_id', %s, false)", (str(populated.tenant_id),))
        for table in tenant_tables(app_conn):
            row = owner.execute(
                f"SELECT count(*) FROM tenantguard.{table} WHERE tenant_id = %s",
                (populated.tenant_id,),
            ).fetchone()
            assert row == (0,), table
