"""The service's connection pool and the one place that sets the tenant context.

Autocommit connections, explicit transactions, and a transaction-local
`set_config('app.tenant_id', ..., true)`: the context dies with the transaction. Every
transaction opens with one round trip, its prologue: the reset (`DISCARD ALL` but for prepared
statements) that clears any session state a previous checkout left, `BEGIN`, and the tenant's
binding. So a tenant context can never leak from one checkout to the next, and a transaction
costs two round trips more than its statements (the prologue and `COMMIT`), not five (a
checkout ping, a reset on return, `BEGIN` and the binding apart). A connection the server has
dropped fails its prologue and is discarded, and the next one tried (as many as the pool
holds, then a new one), before the caller sees anything.

Driver exceptions are translated once, here (`map_db_errors`): callers see `TenantGuardError`s
with safe details, never SQL, a constraint name or a value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import SecretStr

from tenantguard.errors import (
    Conflict,
    DatabaseUnavailable,
    InternalError,
    NotFound,
    RequestInvalid,
    TenantGuardError,
)

Connection = psycopg.Connection[TupleRow]
# The PII screen of audit events written in the current transaction (see pii.channels): the
# database sets its own `audit_screen` for each transaction it opens; audit.store reads it.
AuditScreen = Callable[
    [Connection, UUID, dict[str, str], dict[str, Any]], tuple[dict[str, str], dict[str, Any]]
]
ACTIVE_SCREEN: ContextVar[AuditScreen | None] = ContextVar("tenantguard_audit_screen", default=None)

_log = structlog.get_logger("tenantguard.db")


def set_tenant(tenant_id: UUID) -> bytes:
    """The statement that binds the current transaction to `tenant_id`. The only one that does.

    Transaction-local (`is_local = true`). A Citus deployment that needs `SET LOCAL` changes
    this function and nothing else. The text of a `UUID` is hex digits and dashes only: it is
    a literal here because the prologue it ends is sent as one simple query.
    """
    if not isinstance(tenant_id, UUID):
        raise TypeError("a tenant id is a UUID")
    return f"SELECT set_config('app.tenant_id', '{tenant_id}', true)".encode("ascii")


@contextlib.contextmanager
def map_db_errors() -> Iterator[None]:
    """Translate psycopg exceptions into tenantguard errors with safe details."""
    try:
        yield
    except TenantGuardError:
        raise
    except pg_errors.UniqueViolation as exc:
        raise Conflict("A resource with these values already exists.") from exc
    except pg_errors.ForeignKeyViolation as exc:
        # Pointing at a row of another tenant looks exactly like pointing at nothing.
        raise NotFound("A referenced resource does not exist.") from exc
    except (pg_errors.CheckViolation, pg_errors.NotNullViolation) as exc:
        raise RequestInvalid("A value is out of the allowed range.") from exc
    except psycopg.DataError as exc:
        # A value PostgreSQL cannot store: a NUL character in text or JSON (refused by the
        # driver or the server), a number out of its type's range.
        raise RequestInvalid("The request holds a value that cannot be stored.") from exc
    except UnicodeEncodeError as exc:  # a lone surrogate, met while sending a parameter
        raise RequestInvalid("The request holds text that is not valid Unicode.") from exc
    except (psycopg.OperationalError, PoolTimeout) as exc:
        _log.error("db.unavailable", error_type=type(exc).__name__)
        raise DatabaseUnavailable() from exc
    except psycopg.Error as exc:
        _log.error("db.error", error_type=type(exc).__name__, sqlstate=exc.sqlstate)
        raise InternalError() from exc


# DISCARD ALL without its DEALLOCATE ALL: psycopg keeps track of the statements it prepared,
# and dropping them behind its back breaks the next use. Prepared statements carry no tenant
# state (the tenant is a transaction-local setting); everything else a session can hold goes.
_RESET = (
    b"CLOSE ALL; RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all();"
    b" DISCARD TEMP; DISCARD SEQUENCES;"
)


def _prologue(tenant_id: UUID | None, *, durable: bool = True) -> bytes:
    """The first round trip of a transaction: the reset, `BEGIN`, the tenant's binding, and,
    for a transaction whose loss in a crash is harmless, a commit that does not wait for the
    disk."""
    bind = b" " + set_tenant(tenant_id) + b";" if tenant_id is not None else b""
    lax = b"" if durable else b" SET LOCAL synchronous_commit = off;"
    return _RESET + b" BEGIN;" + bind + lax


def _end(conn: Connection, *, commit: bool) -> None:
    """Commit, or roll back what a failure left open; a connection that cannot is closed (the
    pool then replaces it)."""
    if commit:
        conn.execute(b"COMMIT")
        return
    if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        try:
            conn.execute(b"ROLLBACK")
        except psycopg.Error:
            conn.close()


@contextlib.contextmanager
def _screening(screen: AuditScreen | None) -> Iterator[None]:
    token = ACTIVE_SCREEN.set(screen)
    try:
        yield
    finally:
        ACTIVE_SCREEN.reset(token)


class Database:
    """A pool of `tenantguard_app` connections; transactions with or without a tenant."""

    def __init__(
        self,
        app_url: SecretStr,
        *,
        min_size: int = 1,
        max_size: int = 10,
        checkout_timeout: float = 10.0,
        open_timeout: float = 15.0,
        application_name: str = "tenantguard",
    ) -> None:
        """`application_name` names the service in PostgreSQL and in every audit event it
        writes (its `source`)."""
        self._open_timeout = open_timeout
        # Installed by the PII sentinel (Sentinel.install); None: pii.channels' default.
        self.audit_screen: AuditScreen | None = None
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            app_url.get_secret_value(),
            kwargs={"autocommit": True, "application_name": application_name},
            min_size=min_size,
            max_size=max_size,
            # No checkout ping and no reset on return: the prologue does both (module note).
            open=False,
            timeout=checkout_timeout,
            name="tenantguard",
        )

    def open(self) -> None:
        with map_db_errors():
            self._pool.open(wait=True, timeout=self._open_timeout)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Database:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checkout(self, prologue: bytes) -> Connection:
        """A pooled connection with `prologue` run. One that the server dropped while idle is
        discarded and the next is tried: after a server restart every idle connection is
        dead, so as many as the pool holds, and one more (then a new one), are tried before
        a failure is the caller's."""
        attempts = self._pool.max_size + 1
        for attempt in range(1, attempts + 1):
            conn = self._pool.getconn()
            try:
                conn.execute(prologue, prepare=False)  # many statements: never prepared
            except psycopg.OperationalError:
                conn.close()
                self._pool.putconn(conn)
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                _end(conn, commit=False)
                self._pool.putconn(conn)
                raise
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _transaction(self, tenant_id: UUID | None, *, durable: bool) -> Iterator[Connection]:
        with _screening(self.audit_screen), map_db_errors():
            conn = self._checkout(_prologue(tenant_id, durable=durable))
            try:
                yield conn
                _end(conn, commit=True)
            except BaseException:
                _end(conn, commit=False)
                raise
            finally:
                self._pool.putconn(conn)

    @contextlib.contextmanager
    def tenant_transaction(self, tenant_id: UUID, *, durable: bool = True) -> Iterator[Connection]:
        """A transaction bound to `tenant_id`: RLS shows and accepts that tenant's rows only.

        It commits when the block ends without an exception, before the caller answers: an
        action is acknowledged only once its writes (and its audit event) are durable. Only
        writes that a crash may lose (rate counters) pass `durable=False`: then the commit
        does not wait for the disk (`synchronous_commit = off`, for this transaction only).
        """
        with self._transaction(tenant_id, durable=durable) as conn:
            yield conn

    @contextlib.contextmanager
    def system_transaction(self) -> Iterator[Connection]:
        """A transaction with no tenant context: tenant tables show zero rows, refuse writes."""
        with self._transaction(None, durable=True) as conn:
            yield conn
