"""The tenant vault: per-tenant secrets, write-only from the outside.

A value goes in through `write`, sealed under the tenant's data key for the
`column:secret_versions.value` purpose, and comes out only through `read`, which server-side
code paths acting for that tenant call (model routing, tools); every read is audited. There is
no global fallback: a name that the tenant has not written does not exist, whoever asks.
Deleting a secret wipes the ciphertext of every version.

A hot path that uses the same secret on every call (a model provider's key) passes
`RecentReads`: the vault then audits the first read of a (secret, version, use) in this process
and again once `RecentReads.seconds` have passed, not every call, and the caller's own event of
each call names the version it used. Every read still opens the ciphertext through the keyring
(a shredded key stops it at once), and a new version, a deleted secret or another use is a new
audited read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection
from tenantguard.errors import NotFound

SECRET_VALUE = EncryptedColumn("secret_versions", "value", ("secret_id", "version"))
MAX_VALUE_BYTES = 65_536
_COLUMNS = "id, name, current_version, created_at, updated_at, last_used_at"


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """Everything about a secret except its value."""

    id: UUID
    name: str
    current_version: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class SecretVersion:
    version: int
    created_at: datetime
    created_by: str
    wiped: bool


def _live(conn: Connection, tenant_id: UUID, name: str, *, lock: bool = False) -> SecretInfo:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.secrets WHERE tenant_id = %s AND name = %s"
        " AND deleted_at IS NULL" + (" FOR UPDATE" if lock else ""),
        (tenant_id, name),
    ).fetchone()
    if row is None:
        raise NotFound()
    return SecretInfo(*row)


def write(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    name: str,
    value: bytes,
    *,
    now: datetime,
) -> SecretInfo:
    """Create the secret or add a version; returns metadata only."""
    try:
        info = _live(conn, ctx.tenant_id, name, lock=True)
        version = info.current_version + 1
        conn.execute(
            "UPDATE tenantguard.secrets SET current_version = %s, updated_at = %s"
            " WHERE tenant_id = %s AND id = %s",
            (version, now, ctx.tenant_id, info.id),
        )
        secret_id = info.id
    except NotFound:
        secret_id, version = uuid4(), 1
        conn.execute(
            "INSERT INTO tenantguard.secrets (tenant_id, id, name, current_version, created_at,"
            " updated_at) VALUES (%s, %s, %s, 1, %s, %s)",
            (ctx.tenant_id, secret_id, name, now, now),
        )
    sealed = SECRET_VALUE.seal(keyring, conn, ctx, (secret_id, version), value)
    conn.execute(
        "INSERT INTO tenantguard.secret_versions (tenant_id, secret_id, version, value,"
        " created_at, created_by) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            ctx.tenant_id,
            secret_id,
            version,
            sealed,
            now,
            f"{ctx.principal.type}:{ctx.principal.id}",
        ),
    )
    record_action(
        conn,
        ctx,
        action="secret.write",
        target_type="secret",
        target_id=name,
        now=now,
        payload={"version": version},
    )
    return _live(conn, ctx.tenant_id, name)


def list_secrets(conn: Connection, tenant_id: UUID) -> list[SecretInfo]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.secrets WHERE tenant_id = %s"
        " AND deleted_at IS NULL ORDER BY name",
        (tenant_id,),
    ).fetchall()
    return [SecretInfo(*r) for r in rows]


def versions(
    conn: Connection, tenant_id: UUID, name: str
) -> tuple[SecretInfo, list[SecretVersion]]:
    info = _live(conn, tenant_id, name)
    rows = conn.execute(
        "SELECT version, created_at, created_by, value IS NULL FROM tenantguard.secret_versions"
        " WHERE tenant_id = %s AND secret_id = %s ORDER BY version",
        (tenant_id, info.id),
    ).fetchall()
    return info, [SecretVersion(*r) for r in rows]


def delete(conn: Connection, ctx: TenantContext, name: str, *, now: datetime) -> None:
    info = _live(conn, ctx.tenant_id, name, lock=True)
    conn.execute(
        "UPDATE tenantguard.secret_versions SET value = NULL WHERE tenant_id = %s"
        " AND secret_id = %s",
        (ctx.tenant_id, info.id),
    )
    conn.execute(
        "UPDATE tenantguard.secrets SET deleted_at = %s, updated_at = %s WHERE tenant_id = %s"
        " AND id = %s",
        (now, now, ctx.tenant_id, info.id),
    )
    record_action(
        conn,
        ctx,
        action="secret.delete",
        target_type="secret",
        target_id=name,
        now=now,
        payload={"versions_wiped": info.current_version},
    )


ReadKey = tuple[UUID, UUID, int, str]  # (tenant, secret, version, use)


class RecentReads:
    """The audited reads of this process within `seconds`, by (tenant, secret, version, use),
    bounded to `size` (the oldest forgotten first: forgetting only means one more audit)."""

    def __init__(
        self,
        seconds: float = 60.0,
        size: int = 10_000,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self._size, self._monotonic = seconds, size, monotonic
        self._lock = threading.Lock()
        self._until: OrderedDict[ReadKey, float] = OrderedDict()

    def fresh(self, key: ReadKey) -> bool:
        with self._lock:
            until = self._until.get(key)
            return until is not None and until > self._monotonic()

    def mark(self, key: ReadKey | None) -> None:
        """Remember an audited read whose transaction has committed (None: nothing to)."""
        if key is None:
            return
        with self._lock:
            self._until[key] = self._monotonic() + self.seconds
            self._until.move_to_end(key)
            while len(self._until) > self._size:
                self._until.popitem(last=False)


def _current(
    conn: Connection, tenant_id: UUID, keyring: Keyring, name: str, *, lock: bool
) -> tuple[SecretInfo, bytes]:
    """The live secret `name` and its current value, opened, in one round trip."""
    columns = ", ".join(f"s.{c.strip()}" for c in _COLUMNS.split(","))
    row = conn.execute(
        f"SELECT {columns}, v.value FROM tenantguard.secrets s"
        " LEFT JOIN tenantguard.secret_versions v ON v.tenant_id = s.tenant_id"
        " AND v.secret_id = s.id AND v.version = s.current_version"
        " WHERE s.tenant_id = %s AND s.name = %s AND s.deleted_at IS NULL"
        + (" FOR UPDATE OF s" if lock else ""),
        (tenant_id, name),
    ).fetchone()
    if row is None or row[-1] is None:
        raise NotFound()
    info = SecretInfo(*row[:-1])
    key = (info.id, info.current_version)
    return info, SECRET_VALUE.open(keyring, conn, tenant_id, key, bytes(row[-1]))


@dataclass(frozen=True, slots=True)
class Unsealed:
    """A secret's value for one server-side use. `audited`: the read this transaction audited,
    to `RecentReads.mark` once it has committed (a rolled-back audit must not count)."""

    value: bytes
    version: int
    audited: ReadKey | None


def read_current(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    name: str,
    *,
    use: str,
    now: datetime,
    recent: RecentReads | None = None,
) -> Unsealed:
    """The current value and its version, for server-side use by `ctx`'s tenant only.
    Audited with `use`, unless `recent` holds this very read (see the module's note)."""
    if recent is not None:
        info, value = _current(conn, ctx.tenant_id, keyring, name, lock=False)
        if recent.fresh((ctx.tenant_id, info.id, info.current_version, use)):
            return Unsealed(value, info.current_version, None)
    info, value = _current(conn, ctx.tenant_id, keyring, name, lock=True)
    conn.execute(
        "UPDATE tenantguard.secrets SET last_used_at = %s WHERE tenant_id = %s AND id = %s",
        (now, ctx.tenant_id, info.id),
    )
    record_action(
        conn,
        ctx,
        action="secret.read",
        target_type="secret",
        target_id=name,
        now=now,
        payload={"version": info.current_version, "use": use},
    )
    return Unsealed(
        value, info.current_version, (ctx.tenant_id, info.id, info.current_version, use)
    )


def read(
    conn: Connection, ctx: TenantContext, keyring: Keyring, name: str, *, use: str, now: datetime
) -> bytes:
    """The current value, for server-side use by `ctx`'s tenant only. Audited with `use`."""
    return read_current(conn, ctx, keyring, name, use=use, now=now).value
