"""Helpers for tests, tenantguard's own and its users': a controllable clock, a way to
stand up a provisioned, migrated database on the embedded server or an external one, and an
in-memory quota store.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from tenantguard.db import migrate
from tenantguard.db.embedded import embedded
from tenantguard.db.roles import APP_ROLE, OWNER_ROLE, drop_database, provision
from tenantguard.quotas.core import Check, Verdict, decide


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime.now(UTC)).replace(microsecond=0)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


@dataclass(frozen=True, slots=True)
class TestDatabase:
    """A provisioned and migrated database, and URLs for each role (admin: a superuser)."""

    __test__ = False  # not a pytest test class

    kind: str
    name: str
    admin_url: SecretStr
    owner_url: SecretStr
    app_url: SecretStr


def _role_url(base: SecretStr, *, user: str, dbname: str) -> SecretStr:
    return SecretStr(make_conninfo(base.get_secret_value(), user=user, dbname=dbname))


@contextlib.contextmanager
def embedded_test_database(pg_dir: Path, name: str = "tenantguard_test") -> Iterator[TestDatabase]:
    """A fresh embedded server under `pg_dir`, provisioned and migrated; stopped afterwards."""
    with embedded(pg_dir) as server:
        provision(server.admin_url, name)
        owner = server.url_for(OWNER_ROLE, name)
        migrate.upgrade(owner)
        yield TestDatabase(
            kind="embedded",
            name=name,
            admin_url=server.url_for("postgres", name),
            owner_url=owner,
            app_url=server.url_for(APP_ROLE, name),
        )


@contextlib.contextmanager
def external_test_database(admin_url: SecretStr) -> Iterator[TestDatabase]:
    """A fresh database on the server of `admin_url`, dropped afterwards (roles are kept)."""
    name = f"tenantguard_test_{uuid4().hex[:12]}"
    provision(admin_url, name)
    owner = _role_url(admin_url, user=OWNER_ROLE, dbname=name)
    try:
        migrate.upgrade(owner)
        yield TestDatabase(
            kind="external",
            name=name,
            admin_url=SecretStr(make_conninfo(admin_url.get_secret_value(), dbname=name)),
            owner_url=owner,
            app_url=_role_url(admin_url, user=APP_ROLE, dbname=name),
        )
    finally:
        drop_database(admin_url, name)


class MemoryQuotaStore:
    """The quota store port in memory, for users' tests: `quotas.core.decide` under a lock,
    with the same all-or-nothing answer as the PostgreSQL and Redis stores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state: dict[tuple[UUID, str], int] = {}

    def consume(
        self,
        tenant_id: UUID,
        checks: Sequence[Check],
        *,
        cost: int,
        now: int,
        force: bool = False,
        conn: object = None,
    ) -> Verdict:
        del conn  # nothing of this store is in a database
        with self._lock:
            mine = {
                c.key: self.state[(tenant_id, c.key)]
                for c in checks
                if (tenant_id, c.key) in self.state
            }
            verdict, new = decide(checks, mine, cost=cost, now=now, force=force)
            self.state.update({(tenant_id, k): v for k, v in new.items()})
        return verdict

    def usage(self, tenant_id: UUID, keys: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {k: self.state[(tenant_id, k)] for k in keys if (tenant_id, k) in self.state}
