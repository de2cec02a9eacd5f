"""PostgreSQL, the only store: roles, migrations, the pool, the embedded server, the doctor."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import SecretStr

from tenantguard.db import migrate
from tenantguard.db.embedded import EmbeddedServer, start_embedded
from tenantguard.db.pool import Connection, Database, map_db_errors, set_tenant
from tenantguard.db.roles import APP_ROLE, AUTH_ROLE, OWNER_ROLE, provision
from tenantguard.settings import DatabaseConfig

EMBEDDED_DATABASE = "tenantguard"

__all__ = [
    "APP_ROLE",
    "AUTH_ROLE",
    "EMBEDDED_DATABASE",
    "OWNER_ROLE",
    "Connection",
    "Database",
    "Endpoints",
    "endpoints",
    "map_db_errors",
    "set_tenant",
]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """How to reach the database: as the service, as the owner (may be unknown), and whether
    it is the embedded server (which tenantguard provisions and migrates by itself)."""

    app_url: SecretStr
    owner_url: SecretStr | None
    embedded: EmbeddedServer | None


@contextlib.contextmanager
def endpoints(config: DatabaseConfig) -> Iterator[Endpoints]:
    """Resolve the database of `config`; with no URL, start, provision and migrate the
    embedded server under `config.pg_dir`, and stop it (if this was its last user) at the end.
    """
    if config.app_url is not None:
        yield Endpoints(app_url=config.app_url, owner_url=config.owner_url, embedded=None)
        return
    server = start_embedded(config.pg_dir)
    try:
        with map_db_errors():
            provision(server.admin_url, EMBEDDED_DATABASE)
            owner_url = server.url_for(OWNER_ROLE, EMBEDDED_DATABASE)
            migrate.upgrade(owner_url)
        yield Endpoints(
            app_url=server.url_for(APP_ROLE, EMBEDDED_DATABASE),
            owner_url=owner_url,
            embedded=server,
        )
    finally:
        server.stop()
