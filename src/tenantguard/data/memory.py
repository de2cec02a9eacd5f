"""Memory entries: an agent's durable notes, with soft delete, restore and version history.

Every change writes a version row and an audit event in the same transaction. Content stays
out of the audit (it is customer data): events carry the entry id and version only. A live key
is unique within a tenant only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID, uuid4

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.data.pagination import MAX_PAGE, decode_cursor, encode_cursor
from tenantguard.db.pool import Connection
from tenantguard.errors import Conflict, NotFound

Change = Literal["created", "updated", "deleted", "restored"]
_ACTIONS: dict[Change, str] = {
    "created": "memory.create",
    "updated": "memory.update",
    "deleted": "memory.delete",
    "restored": "memory.restore",
}
_COLUMNS = "id, key, content, version, created_at, updated_at, deleted_at"


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    id: UUID
    key: str
    content: str
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemoryVersion:
    version: int
    change: str
    key: str
    content: str
    changed_at: datetime
    actor: str


def _entry(row: tuple[object, ...] | None) -> MemoryEntry:
    if row is None:
        raise NotFound()
    return MemoryEntry(*row)  # type: ignore[arg-type]


def get(
    conn: Connection,
    tenant_id: UUID,
    entry_id: UUID,
    *,
    include_deleted: bool = False,
    lock: bool = False,
) -> MemoryEntry:
    entry = _entry(
        conn.execute(
            f"SELECT {_COLUMNS} FROM tenantguard.memory_entries WHERE tenant_id = %s AND id = %s"
            + (" FOR UPDATE" if lock else ""),
            (tenant_id, entry_id),
        ).fetchone()
    )
    if entry.deleted_at is not None and not include_deleted:
        raise NotFound()
    return entry


def list_entries(
    conn: Connection,
    tenant_id: UUID,
    *,
    include_deleted: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[MemoryEntry], str | None]:
    after = decode_cursor(cursor)
    limit = max(1, min(limit, MAX_PAGE))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.memory_entries WHERE tenant_id = %s"
        " AND (%s OR deleted_at IS NULL)"
        " AND (%s::timestamptz IS NULL OR (created_at, id) > (%s::timestamptz, %s::uuid))"
        " ORDER BY created_at, id LIMIT %s",
        (
            tenant_id,
            include_deleted,
            *((after[0], after[0], after[1]) if after else (None, None, None)),
            limit + 1,
        ),
    ).fetchall()
    entries = [_entry(r) for r in rows[:limit]]
    more = len(rows) > limit
    return entries, encode_cursor(entries[-1].created_at, entries[-1].id) if more else None


def _record(
    conn: Connection, ctx: TenantContext, entry: MemoryEntry, change: Change, now: datetime
) -> None:
    conn.execute(
        "INSERT INTO tenantguard.memory_versions (tenant_id, entry_id, version, change, key,"
        " content, changed_at, actor) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            ctx.tenant_id,
            entry.id,
            entry.version,
            change,
            entry.key,
            entry.content,
            now,
            f"{ctx.principal.type}:{ctx.principal.id}",
        ),
    )
    record_action(
        conn,
        ctx,
        action=_ACTIONS[change],
        target_type="memory_entry",
        target_id=str(entry.id),
        now=now,
        payload={"version": entry.version},
    )


def create(
    conn: Connection, ctx: TenantContext, *, key: str, content: str, now: datetime
) -> MemoryEntry:
    entry = _entry(
        conn.execute(
            "INSERT INTO tenantguard.memory_entries (tenant_id, id, key, content, version,"
            f" created_at, updated_at) VALUES (%s, %s, %s, %s, 1, %s, %s) RETURNING {_COLUMNS}",
            (ctx.tenant_id, uuid4(), key, content, now, now),
        ).fetchone()
    )
    _record(conn, ctx, entry, "created", now)
    return entry


def update(
    conn: Connection,
    ctx: TenantContext,
    entry_id: UUID,
    *,
    key: str | None,
    content: str | None,
    expected_version: int | None,
    now: datetime,
) -> MemoryEntry:
    current = get(conn, ctx.tenant_id, entry_id, lock=True)
    if expected_version is not None and expected_version != current.version:
        raise Conflict("The entry has changed since that version.")
    entry = _entry(
        conn.execute(
            "UPDATE tenantguard.memory_entries SET key = %s, content = %s, version = version + 1,"
            f" updated_at = %s WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}",
            (
                key if key is not None else current.key,
                content if content is not None else current.content,
                now,
                ctx.tenant_id,
                entry_id,
            ),
        ).fetchone()
    )
    _record(conn, ctx, entry, "updated", now)
    return entry


def delete(conn: Connection, ctx: TenantContext, entry_id: UUID, *, now: datetime) -> None:
    get(conn, ctx.tenant_id, entry_id, lock=True)
    entry = _entry(
        conn.execute(
            "UPDATE tenantguard.memory_entries SET deleted_at = %s, version = version + 1,"
            f" updated_at = %s WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}",
            (now, now, ctx.tenant_id, entry_id),
        ).fetchone()
    )
    _record(conn, ctx, entry, "deleted", now)


def restore(conn: Connection, ctx: TenantContext, entry_id: UUID, *, now: datetime) -> MemoryEntry:
    current = get(conn, ctx.tenant_id, entry_id, include_deleted=True, lock=True)
    if current.deleted_at is None:
        raise Conflict("The entry is not deleted.")
    entry = _entry(
        conn.execute(
            "UPDATE tenantguard.memory_entries SET deleted_at = NULL, version = version + 1,"
            f" updated_at = %s WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}",
            (now, ctx.tenant_id, entry_id),
        ).fetchone()
    )
    _record(conn, ctx, entry, "restored", now)
    return entry


def versions(conn: Connection, tenant_id: UUID, entry_id: UUID) -> list[MemoryVersion]:
    get(conn, tenant_id, entry_id, include_deleted=True)
    rows = conn.execute(
        "SELECT version, change, key, content, changed_at, actor FROM tenantguard.memory_versions"
        " WHERE tenant_id = %s AND entry_id = %s ORDER BY version",
        (tenant_id, entry_id),
    ).fetchall()
    return [MemoryVersion(*r) for r in rows]
