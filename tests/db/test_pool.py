"""The pool and the tenant context: nothing survives a transaction or a checkout."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from pydantic import SecretStr

from tenantguard.db import Database, migrate
from tenantguard.errors import Conflict, DatabaseUnavailable, RequestInvalid
from tenantguard.testing import TestDatabase


@pytest.fixture
def single(pg: TestDatabase) -> Iterator[Database]:
    """A pool of exactly one connection, so every checkout reuses it."""
    with Database(pg.app_url, min_size=1, max_size=1) as db:
        yield db


def _context(db: Database) -> object:
    with db.system_transaction() as tx:
        row = tx.execute("SELECT current_setting('app.tenant_id', true)").fetchone()
    return None if row is None else row[0]


def test_tenant_context_ends_with_its_transaction(single: Database) -> None:
    """The next transaction on the same connection has no tenant."""
    tenant = uuid4()
    with single.tenant_transaction(tenant) as tx:
        row = tx.execute("SELECT tenantguard.current_tenant()").fetchone()
        assert row == (tenant,)
    assert _context(single) in (None, "")


def test_session_state_does_not_survive_a_checkout(single: Database) -> None:
    """Even a session-level setting (as a bug or an attack would leave) is reset."""
    with single._pool.connection() as conn:  # reaching under the API on purpose
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(uuid4()),))
        conn.execute("SET statement_timeout = '1ms'")
    assert _context(single) in (None, "")
    with single.system_transaction() as tx:
        assert tx.execute("SHOW statement_timeout").fetchone() != ("1ms",)


def test_a_connection_the_server_dropped_is_replaced_before_use(
    single: Database, pg: TestDatabase
) -> None:
    """A pooled connection whose backend was terminated while idle fails its prologue and is
    replaced: the caller gets a working transaction, not the dead connection's error."""
    with single.system_transaction() as tx:
        row = tx.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    with psycopg.connect(pg.app_url.get_secret_value(), autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", (row[0],)).fetchone() == (True,)
    with single.system_transaction() as tx:
        again = tx.execute("SELECT pg_backend_pid()").fetchone()
    assert again is not None
    assert again[0] != row[0]


def _fail_inside(db: Database, tenant: UUID) -> None:
    with db.tenant_transaction(tenant) as tx:
        tx.execute("SELECT 1 / 0")  # the transaction is now aborted


def test_a_failed_transaction_leaves_nothing_open(single: Database) -> None:
    """After an error inside a transaction it is rolled back: the next checkout (the same
    connection) starts a clean transaction, with no tenant."""
    with pytest.raises(RequestInvalid):  # division by zero is a data error
        _fail_inside(single, uuid4())
    assert _context(single) in (None, "")


def _sync(tx: psycopg.Connection[tuple[object, ...]]) -> object:
    row = tx.execute("SHOW synchronous_commit").fetchone()
    return None if row is None else row[0]


def test_only_a_transaction_that_asks_commits_without_waiting_for_the_disk(
    single: Database,
) -> None:
    """`durable=False` is this transaction's alone: the next one on the same connection, and
    every default one, waits for the disk."""
    tenant = uuid4()
    with single.tenant_transaction(tenant, durable=False) as tx:
        assert _sync(tx) == "off"
    with single.tenant_transaction(tenant) as tx:
        assert _sync(tx) == "on"
    with single.system_transaction() as tx:
        assert _sync(tx) == "on"


def test_prepared_statements_survive_the_reset(single: Database) -> None:
    """Repeating a query past psycopg's prepare threshold across checkouts keeps working."""
    for _ in range(12):
        with single.system_transaction() as tx:
            assert tx.execute("SELECT count(*) FROM tenantguard.runs").fetchone() == (0,)


def _insert_tenant_twice(db: Database, tenant: UUID) -> None:
    with db.tenant_transaction(tenant) as tx:
        for _ in range(2):
            tx.execute(
                "INSERT INTO tenantguard.tenants (tenant_id, name) VALUES (%s, 'x')", (tenant,)
            )


def test_driver_errors_are_translated(single: Database) -> None:
    """A unique violation is a Conflict, with no SQL or constraint name in its detail."""
    with pytest.raises(Conflict) as caught:
        _insert_tenant_twice(single, uuid4())
    assert "tenants" not in caught.value.detail
    assert "pkey" not in caught.value.detail


def test_unreachable_database_fails_closed() -> None:
    """No server: a typed DatabaseUnavailable, not a hang or a raw driver error."""
    url = SecretStr("postgresql://tenantguard_app@127.0.0.1:1/nowhere?connect_timeout=1")
    db = Database(url, min_size=1, max_size=1, open_timeout=1.0)
    with pytest.raises(DatabaseUnavailable):
        db.open()
    db.close()


def test_upgrade_is_idempotent(pg: TestDatabase) -> None:
    """Running the migrations again applies nothing."""
    assert migrate.upgrade(pg.owner_url) == ()
