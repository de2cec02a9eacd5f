"""API keys in the database: create, list, rotate, revoke, and resolve a presented key.

Every change writes an audit event in the same transaction. A key cannot widen its own
scope: the capabilities of a key it creates or rotates into are a subset of its own.
Resolution runs before the tenant is known, through the one SECURITY DEFINER function
`tenantguard.resolve_api_key`, and every failure raises the same `InvalidCredentials` outward
with the specific reason (unknown, expired, revoked, malformed) kept for the audit.

Threat stopped: a leaked or stale key acting; a key minting a stronger key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from tenantguard.audit.store import record_action
from tenantguard.authz import capability_set
from tenantguard.context import TenantContext
from tenantguard.db.pool import Connection
from tenantguard.errors import (
    CapabilityDenied,
    Conflict,
    InvalidCredentials,
    NotFound,
    RequestInvalid,
)
from tenantguard.identity import apikeys

LAST_USED_RESOLUTION = timedelta(seconds=60)  # last_used_at is written at most once a minute
MAX_LIFETIME = timedelta(days=366)

_COLUMNS = (
    "id, name, display_prefix, capabilities, created_at, expires_at, revoked_at,"
    " last_used_at, rotated_from, agent"
)


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """Everything about a key except its secret, which is never stored."""

    id: UUID
    name: str
    display_prefix: str
    capabilities: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: UUID | None
    agent: str | None = None  # bound: acts only in this agent's runs

    def active_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: its info and its secret, to be shown once."""

    info: ApiKeyInfo
    secret: str


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    tenant_id: UUID
    key_id: UUID
    capabilities: frozenset[str]
    needs_touch: bool
    agent: str | None = None
    expires_at: datetime | None = None


def _info(row: tuple[Any, ...]) -> ApiKeyInfo:
    values = list(row)
    values[3] = tuple(sorted(values[3]))
    return ApiKeyInfo(*values)


def insert_key(
    conn: Connection,
    *,
    tenant_id: UUID,
    name: str,
    capabilities: frozenset[str],
    now: datetime,
    expires_at: datetime | None = None,
    rotated_from: UUID | None = None,
    agent: str | None = None,
) -> IssuedKey:
    """Store a new key for `tenant_id` (no audit, no scope check: callers do both)."""
    new = apikeys.generate("sk")
    row = conn.execute(
        "INSERT INTO tenantguard.api_keys (tenant_id, id, name, key_hash, display_prefix,"
        " capabilities, created_at, expires_at, rotated_from, agent)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (
            tenant_id,
            uuid4(),
            name,
            new.key_hash,
            new.display_prefix,
            sorted(capabilities),
            now,
            expires_at,
            rotated_from,
            agent,
        ),
    ).fetchone()
    assert row is not None  # noqa: S101 (INSERT ... RETURNING returns its row)
    return IssuedKey(_info(row), new.secret)


def _within_scope(ctx: TenantContext, capabilities: frozenset[str], agent: str | None) -> None:
    """A credential acts only on keys no wider than itself: capabilities it holds, and, when it
    is bound to an agent, keys bound to that same agent (an unbound key reaches every run)."""
    wider = capabilities - ctx.capabilities
    if wider:
        raise CapabilityDenied(
            sorted(wider)[0], "A key cannot act on capabilities it does not hold itself."
        )
    if ctx.agent is not None and agent != ctx.agent:
        raise CapabilityDenied(
            "agent_binding", "A key bound to an agent acts only on keys bound to that agent."
        )


def _within_life(ctx: TenantContext, expires: datetime | None) -> datetime | None:
    """A key's expiry, never later than that of the credential making it (a key that expires
    in an hour cannot mint one that never does)."""
    if ctx.expires_at is None:
        return expires
    return ctx.expires_at if expires is None else min(expires, ctx.expires_at)


def create_key(
    conn: Connection,
    ctx: TenantContext,
    *,
    name: str,
    capabilities: list[str],
    lifetime: timedelta | None,
    now: datetime,
    agent: str | None = None,
) -> IssuedKey:
    """A new key; a key created by a bound credential is bound to the same agent unless it
    names one (and naming another is refused)."""
    chosen = capability_set(capabilities)
    bound = agent if agent is not None else ctx.agent
    _within_scope(ctx, chosen, bound)
    if bound is not None:
        _agent_exists(conn, ctx.tenant_id, bound)
    expires = _within_life(ctx, now + min(lifetime, MAX_LIFETIME) if lifetime is not None else None)
    issued = insert_key(
        conn,
        tenant_id=ctx.tenant_id,
        name=name,
        capabilities=chosen,
        now=now,
        expires_at=expires,
        agent=bound,
    )
    record_action(
        conn,
        ctx,
        action="api_key.create",
        target_type="api_key",
        target_id=str(issued.info.id),
        now=now,
        payload={
            "name": name,
            "capabilities": sorted(chosen),
            "expires_at": expires.isoformat() if expires else None,
            "agent": bound,
        },
    )
    return issued


def _agent_exists(conn: Connection, tenant_id: UUID, agent: str) -> None:
    row = conn.execute(
        "SELECT 1 FROM tenantguard.agents WHERE tenant_id = %s AND name = %s", (tenant_id, agent)
    ).fetchone()
    if row is None:
        raise RequestInvalid("No such agent: configure it first (PUT /api/agents/{name}).")


def list_keys(conn: Connection, tenant_id: UUID) -> list[ApiKeyInfo]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.api_keys WHERE tenant_id = %s ORDER BY created_at, id",
        (tenant_id,),
    ).fetchall()
    return [_info(r) for r in rows]


def get_key(conn: Connection, tenant_id: UUID, key_id: UUID, *, lock: bool = False) -> ApiKeyInfo:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.api_keys WHERE tenant_id = %s AND id = %s"
        + (" FOR UPDATE" if lock else ""),
        (tenant_id, key_id),
    ).fetchone()
    if row is None:
        raise NotFound()
    return _info(row)


def revoke_key(conn: Connection, ctx: TenantContext, key_id: UUID, *, now: datetime) -> None:
    """Revoke a key. A key may revoke itself or a key no stronger than itself: otherwise a
    narrow key holding `api_keys:manage` could lock the tenant's admin out."""
    info = get_key(conn, ctx.tenant_id, key_id, lock=True)
    _within_scope(ctx, frozenset(info.capabilities), info.agent)
    if info.revoked_at is not None:
        raise Conflict("The key is already revoked.")
    conn.execute(
        "UPDATE tenantguard.api_keys SET revoked_at = %s WHERE tenant_id = %s AND id = %s",
        (now, ctx.tenant_id, key_id),
    )
    record_action(
        conn,
        ctx,
        action="api_key.revoke",
        target_type="api_key",
        target_id=str(key_id),
        now=now,
        payload={"name": info.name},
    )


def rotate_key(
    conn: Connection, ctx: TenantContext, key_id: UUID, *, grace: timedelta, now: datetime
) -> IssuedKey:
    """Issue a successor with the same name, scope and lifetime; the old key stops after
    `grace` (zero: at once)."""
    old = get_key(conn, ctx.tenant_id, key_id, lock=True)
    if not old.active_at(now):
        raise Conflict("Only an active key can be rotated.")
    scope = frozenset(old.capabilities)
    _within_scope(ctx, scope, old.agent)
    lifetime = old.expires_at - old.created_at if old.expires_at is not None else None
    issued = insert_key(
        conn,
        tenant_id=ctx.tenant_id,
        name=old.name,
        capabilities=scope,
        now=now,
        expires_at=_within_life(ctx, now + lifetime if lifetime is not None else None),
        rotated_from=old.id,
        agent=old.agent,
    )
    retire_at = now + grace
    if grace <= timedelta(0):
        conn.execute(
            "UPDATE tenantguard.api_keys SET revoked_at = %s WHERE tenant_id = %s AND id = %s",
            (now, ctx.tenant_id, key_id),
        )
    elif old.expires_at is None or old.expires_at > retire_at:
        conn.execute(
            "UPDATE tenantguard.api_keys SET expires_at = %s WHERE tenant_id = %s AND id = %s",
            (retire_at, ctx.tenant_id, key_id),
        )
    record_action(
        conn,
        ctx,
        action="api_key.rotate",
        target_type="api_key",
        target_id=str(key_id),
        now=now,
        payload={"successor": str(issued.info.id), "grace_seconds": int(grace.total_seconds())},
    )
    return issued


def resolve(conn: Connection, presented: str, *, now: datetime) -> ResolvedKey:
    """Map a presented key to its tenant and scope, or raise `InvalidCredentials`.

    `conn` is a transaction with no tenant context; the lookup goes through the definer
    function, the only cross-tenant read of the service.
    """
    key_hash = apikeys.parse(presented)
    rows = conn.execute(
        "SELECT tenant_id, id, key_hash, capabilities, expires_at, revoked_at, last_used_at,"
        " agent FROM tenantguard.resolve_api_key(%s)",
        (key_hash,),
    ).fetchall()
    if len(rows) != 1:
        raise InvalidCredentials("unknown" if not rows else "ambiguous")
    tenant_id, key_id, stored_hash, capabilities, expires_at, revoked_at, last_used, agent = rows[0]
    if not hmac.compare_digest(bytes(stored_hash), key_hash):  # pragma: no cover - defence
        raise InvalidCredentials("unknown")
    who = {"tenant_id": tenant_id, "credential_id": str(key_id)}
    if revoked_at is not None:
        raise InvalidCredentials("revoked", **who)
    if expires_at is not None and expires_at <= now:
        raise InvalidCredentials("expired", **who)
    stale = last_used is None or last_used < now - LAST_USED_RESOLUTION
    return ResolvedKey(
        tenant_id,
        key_id,
        frozenset(capabilities),
        needs_touch=stale,
        agent=agent,
        expires_at=expires_at,
    )


def touch(conn: Connection, tenant_id: UUID, key_id: UUID, *, now: datetime) -> None:
    """Record use, at most once per `LAST_USED_RESOLUTION` (a write per request is waste;
    `ResolvedKey.needs_touch` says when to call this)."""
    conn.execute(
        "UPDATE tenantguard.api_keys SET last_used_at = %s WHERE tenant_id = %s AND id = %s"
        " AND (last_used_at IS NULL OR last_used_at < %s)",
        (now, tenant_id, key_id, now - LAST_USED_RESOLUTION),
    )
