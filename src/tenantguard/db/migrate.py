"""Plain, numbered `.sql` migrations, applied in order by the owner role, recorded in a table.

Each file `NNNN_name.sql` runs in its own transaction under an advisory lock, and is recorded
with its SHA-256. A recorded migration whose file changed, or a database ahead of the code,
refuses to go on: a schema that drifted from what the code was reviewed against is not served.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql
from pydantic import SecretStr

from tenantguard.db.roles import APP_ROLE
from tenantguard.errors import ConfigurationError

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK_KEY = 0x7465_6E61_6E74  # "tenant": one migrator at a time per database

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS tenantguard;
CREATE TABLE IF NOT EXISTS tenantguard.schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    sha256      text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> tuple[Migration, ...]:
    """The migrations shipped with the package, in order; numbering must be contiguous."""
    found: list[Migration] = []
    for entry in resources.files("tenantguard.db.migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise ConfigurationError("The shipped migrations are not numbered 1..N.")
    return tuple(found)


def pending(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[Migration, ...]:
    """The migrations not yet applied on `conn`'s database. Any connection role may ask.

    Raises `ConfigurationError` if an applied migration differs from the shipped file or the
    database knows a version this code does not.
    """
    shipped = load_migrations()
    exists = conn.execute("SELECT to_regclass('tenantguard.schema_migrations')").fetchone()
    if exists is None or exists[0] is None:
        return shipped
    rows = conn.execute("SELECT version, sha256 FROM tenantguard.schema_migrations").fetchall()
    applied = {int(str(v)): str(h) for v, h in rows}
    by_version = {m.version: m for m in shipped}
    for version, digest in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise ConfigurationError("The database schema is newer than this tenantguard.")
        if migration.sha256 != digest:
            raise ConfigurationError(f"Applied migration {version:04d} differs from its file.")
    return tuple(m for m in shipped if m.version not in applied)


def upgrade(owner_url: SecretStr) -> tuple[Migration, ...]:
    """Apply every pending migration as the owner role. Idempotent; returns what it applied."""
    applied: list[Migration] = []
    with psycopg.connect(owner_url.get_secret_value(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute(_BOOTSTRAP)
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA tenantguard TO {}").format(
                        sql.Identifier(APP_ROLE)
                    )
                )
                conn.execute(
                    sql.SQL("GRANT SELECT ON tenantguard.schema_migrations TO {}").format(
                        sql.Identifier(APP_ROLE)
                    )
                )
            for migration in pending(conn):
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # many statements: simple protocol
                    conn.execute(
                        "INSERT INTO tenantguard.schema_migrations (version, name, sha256)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.sha256),
                    )
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return tuple(applied)
