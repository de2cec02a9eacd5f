"""The database roles, created once by an administrator connection.

- `tenantguard_owner` owns the schema and runs migrations. Not a superuser; it never serves.
- `tenantguard_app` is the service: NOSUPERUSER NOBYPASSRLS NOINHERIT, DML only, granted
  table by table in the migrations.
- `tenantguard_auth` cannot log in; it owns the one SECURITY DEFINER function that resolves an
  API key hash to its tenant (the tenant is unknown until the key is resolved).

Threat stopped: a service that bypasses RLS because it connects as a superuser or as the owner.
Roles are cluster-wide in PostgreSQL; databases are per deployment.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from pydantic import SecretStr

OWNER_ROLE = "tenantguard_owner"
APP_ROLE = "tenantguard_app"
AUTH_ROLE = "tenantguard_auth"

_SAFE = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
_ROLE_ATTRIBUTES = {
    OWNER_ROLE: f"LOGIN {_SAFE}",
    APP_ROLE: f"LOGIN NOINHERIT {_SAFE}",
    AUTH_ROLE: f"NOLOGIN NOINHERIT {_SAFE}",
}


def provision(
    admin_url: SecretStr,
    database: str,
    *,
    owner_password: SecretStr | None = None,
    app_password: SecretStr | None = None,
) -> None:
    """Create (or bring back in line) the three roles and the database. Idempotent.

    Attributes are re-asserted on every run, so a role that drifted (someone granted it
    BYPASSRLS) is corrected here and, between runs, caught by the doctor.
    """
    passwords = {OWNER_ROLE: owner_password, APP_ROLE: app_password}
    with psycopg.connect(admin_url.get_secret_value(), autocommit=True) as conn:
        for role, attributes in _ROLE_ATTRIBUTES.items():
            ident = sql.Identifier(role)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE ROLE {}").format(ident))
            conn.execute(sql.SQL("ALTER ROLE {} " + attributes).format(ident))
            password = passwords.get(role)
            if password is not None:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        ident, sql.Literal(password.get_secret_value())
                    )
                )
        # The owner must be able to hand the definer function to the auth role.
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(*map(sql.Identifier, (AUTH_ROLE, OWNER_ROLE)))
        )
        # Durability before acknowledgement, by construction; the doctor still checks.
        conn.execute(
            sql.SQL("ALTER ROLE {} SET synchronous_commit TO on").format(sql.Identifier(APP_ROLE))
        )
        db = sql.Identifier(database)
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if found is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    db, sql.Identifier(OWNER_ROLE)
                )
            )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, sql.Identifier(APP_ROLE))
        )
        conn.execute(
            sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                db, sql.Identifier(OWNER_ROLE)
            )
        )


def drop_database(admin_url: SecretStr, database: str) -> None:
    """Drop a database (tests and `demo` clean up with it). Roles are left: they are shared."""
    with psycopg.connect(admin_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
