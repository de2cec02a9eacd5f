"""The tenant vault: per-tenant secrets, write-only from the outside.

A value goes in through `write`, sealed under the tenant's data key for the
`column:secret_versions.value` purpose, and comes out only through `read`, which server-side
code paths acting for that tenant call (model routing, tools); every read is audited. There is
no global fallback: a name that the tenant has not written does not exist, whoever asks.
Deleting a secret wipes the ciphertext of every version.
"""

from __future__ import annotations

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


def read(
    conn: Connection, ctx: TenantContext, keyring: Keyring, name: str, *, use: str, now: datetime
) -> bytes:
    """The current value, for server-side use by `ctx`'s tenant only. Audited with `use`."""
    info = _live(conn, ctx.tenant_id, name, lock=True)
    row = conn.execute(
        "SELECT value FROM tenantguard.secret_versions WHERE tenant_id = %s AND secret_id = %s"
        " AND version = %s",
        (ctx.tenant_id, info.id, info.current_version),
    ).fetchone()
    if row is None or row[0] is None:
        raise NotFound()
    value = SECRET_VALUE.open(
        keyring, conn, ctx.tenant_id, (info.id, info.current_version), bytes(row[0])
    )
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
    return value
