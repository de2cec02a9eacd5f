"""Tenant users and their roles. A user's capabilities are the role's row of the matrix
(`authz.ROLE_ACTIONS`); removing a user revokes every session it has, at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from tenantguard.audit.store import record_action
from tenantguard.authz import roles_of
from tenantguard.context import TenantContext
from tenantguard.db.pool import Connection
from tenantguard.errors import CapabilityDenied, Conflict, NotFound, RequestInvalid

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_COLUMNS = "id, email, role, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    email: str
    role: str
    created_at: datetime
    updated_at: datetime


def normal_email(email: str) -> str:
    """Lower-cased ASCII only: `str.lower` maps look-alikes such as the Kelvin sign onto
    ASCII letters, so a non-ASCII address could become someone else's."""
    value = email.strip()
    if not value.isascii():
        raise RequestInvalid("An email address is required.")
    value = value.lower()
    if not _EMAIL.fullmatch(value):
        raise RequestInvalid("An email address is required.")
    return value


def _role(role: str, tenant_id: UUID) -> str:
    """A role of the realm: tenant roles in a tenant, `operator` in the platform realm."""
    if role not in roles_of(tenant_id):
        raise RequestInvalid("Unknown role.")
    return role


def add(conn: Connection, ctx: TenantContext, *, email: str, role: str, now: datetime) -> User:
    if role == "owner":
        _only_owners_manage_owners(conn, ctx)
    row = conn.execute(
        "INSERT INTO tenantguard.users (tenant_id, id, email, role, created_at, updated_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (ctx.tenant_id, uuid4(), normal_email(email), _role(role, ctx.tenant_id), now, now),
    ).fetchone()
    assert row is not None  # noqa: S101 (RETURNING of the row just written)
    user = User(*row)
    record_action(
        conn,
        ctx,
        action="user.add",
        target_type="user",
        target_id=str(user.id),
        now=now,
        payload={"role": role},
    )
    return user


def get(conn: Connection, tenant_id: UUID, user_id: UUID) -> User:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.users WHERE tenant_id = %s AND id = %s"
        " AND deleted_at IS NULL",
        (tenant_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound()
    return User(*row)


def find(conn: Connection, tenant_id: UUID, email: str) -> User | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.users WHERE tenant_id = %s AND email = %s"
        " AND deleted_at IS NULL",
        (tenant_id, normal_email(email)),
    ).fetchone()
    return None if row is None else User(*row)


def list_users(conn: Connection, tenant_id: UUID) -> list[User]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.users WHERE tenant_id = %s AND deleted_at IS NULL"
        " ORDER BY email",
        (tenant_id,),
    ).fetchall()
    return [User(*r) for r in rows]


def find_by_id(conn: Connection, tenant_id: UUID, user_id: UUID) -> User | None:
    try:
        return get(conn, tenant_id, user_id)
    except NotFound:
        return None


def _owners(conn: Connection, tenant_id: UUID) -> int:
    """Owners, counted with their rows locked: two concurrent demotions serialise here, and
    the second sees the first one's result (so a tenant always keeps an owner)."""
    rows = conn.execute(
        "SELECT id FROM tenantguard.users WHERE tenant_id = %s AND role = 'owner'"
        " AND deleted_at IS NULL ORDER BY id FOR UPDATE",
        (tenant_id,),
    ).fetchall()
    return len(rows)


def require_owner(conn: Connection, ctx: TenantContext, *, why: str) -> None:
    """Some decisions are an owner's alone (an admin must not be able to take the tenant from
    its owner, or weaken its MFA policy). The tenant's own API keys are its root."""
    if ctx.principal.type != "user":
        return
    actor = find_by_id(conn, ctx.tenant_id, UUID(ctx.principal.id))
    if actor is None or actor.role != "owner":
        raise CapabilityDenied("users:manage", why)


def _only_owners_manage_owners(conn: Connection, ctx: TenantContext) -> None:
    require_owner(conn, ctx, why="Only an owner grants, changes or removes owners.")


def set_role(
    conn: Connection, ctx: TenantContext, user_id: UUID, role: str, *, now: datetime
) -> User:
    current = get(conn, ctx.tenant_id, user_id)
    if "owner" in (current.role, role):
        _only_owners_manage_owners(conn, ctx)
    if current.role == "owner" and role != "owner" and _owners(conn, ctx.tenant_id) <= 1:
        raise Conflict("A tenant keeps at least one owner.")
    row = conn.execute(
        f"UPDATE tenantguard.users SET role = %s, updated_at = %s WHERE tenant_id = %s AND id = %s"
        f" RETURNING {_COLUMNS}",
        (_role(role, ctx.tenant_id), now, ctx.tenant_id, user_id),
    ).fetchone()
    assert row is not None  # noqa: S101
    record_action(
        conn,
        ctx,
        action="user.role",
        target_type="user",
        target_id=str(user_id),
        now=now,
        payload={"from": current.role, "to": role},
    )
    return User(*row)


def remove(conn: Connection, ctx: TenantContext, user_id: UUID, *, now: datetime) -> None:
    """Remove a user; every session of theirs is revoked in the same transaction."""
    current = get(conn, ctx.tenant_id, user_id)
    if current.role == "owner":
        _only_owners_manage_owners(conn, ctx)
    if current.role == "owner" and _owners(conn, ctx.tenant_id) <= 1:
        raise Conflict("A tenant keeps at least one owner.")
    conn.execute(
        "UPDATE tenantguard.users SET deleted_at = %s, updated_at = %s WHERE tenant_id = %s"
        " AND id = %s",
        (now, now, ctx.tenant_id, user_id),
    )
    conn.execute(
        "UPDATE tenantguard.sessions SET revoked_at = %s, revoke_reason = 'user_removed'"
        " WHERE tenant_id = %s AND user_id = %s AND revoked_at IS NULL",
        (now, ctx.tenant_id, user_id),
    )
    record_action(
        conn, ctx, action="user.remove", target_type="user", target_id=str(user_id), now=now
    )
