"""Outbound webhooks: a tenant's endpoints and their signing secrets.

An endpoint is a URL and the event types it subscribes to. Its URL is attacker-controlled
input: it is checked by the egress guard's rules when it is registered (scheme, port, the
tenant's host lists, and an address written as a literal), and every delivery goes through the
guard again, names resolved then. Its signing secret (Standard Webhooks, `whsec_…`) is shown
once, when it is made, and stored sealed under the tenant's key. A rotation makes a new one
and retires the previous at the end of an overlap (a day by default): until then deliveries
carry both signatures, so a receiver switches whenever it likes.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection
from tenantguard.egress.check import EgressDenied, EgressPolicy, check_addresses, check_url
from tenantguard.errors import NotFound, RequestInvalid
from tenantguard.webhooks.signing import new_secret, secret_bytes

# The events a tenant may subscribe to, and where each is produced (in the transaction of its
# cause). Bodies carry ids and outcomes, never a call's arguments: a receiver that needs more
# reads it through the API, with its own credential.
EVENT_TYPES = (
    "approval.decided",  # a person approved or denied a pending tool call (routes/tools.py)
    "approval.requested",  # a sensitive or destructive tool call waits for a person
    "webhook.test",  # POST /api/webhook-endpoints/{id}/test
)
MAX_OVERLAP = timedelta(days=7)
ENDPOINT_SECRET = EncryptedColumn("webhook_endpoint_secrets", "secret", ("endpoint_id", "version"))
_COLUMNS = "id, url, event_types, description, created_at"


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: UUID
    url: str
    event_types: tuple[str, ...]
    description: str
    created_at: datetime


def _endpoint(row: tuple[object, ...]) -> Endpoint:
    values = list(row)
    values[2] = tuple(values[2])  # type: ignore[arg-type]
    return Endpoint(*values)  # type: ignore[arg-type]


def check_endpoint_url(url: str, policy: EgressPolicy) -> str:
    """`url` if the egress guard's rules allow it as far as can be told without resolving:
    http(s), an allowed port, no credentials, the tenant's host lists, and an address written
    as a literal not internal. A name is resolved, and checked again, at each delivery."""
    try:
        target = check_url(url, policy)
        try:
            literal = ipaddress.ip_address(target.host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            check_addresses(target, [literal], policy)
    except EgressDenied as refused:
        raise RequestInvalid(f"The egress guard refuses this URL ({refused.rule}).") from refused
    return url


def _new_version(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    endpoint_id: UUID,
    *,
    version: int,
    now: datetime,
) -> str:
    secret = new_secret()
    sealed = ENDPOINT_SECRET.seal(
        keyring, conn, ctx, (endpoint_id, version), secret.encode("ascii")
    )
    conn.execute(
        "INSERT INTO tenantguard.webhook_endpoint_secrets (tenant_id, endpoint_id, version,"
        " secret, created_at) VALUES (%s, %s, %s, %s, %s)",
        (ctx.tenant_id, endpoint_id, version, sealed, now),
    )
    return secret


def create(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    *,
    url: str,
    event_types: list[str],
    description: str,
    policy: EgressPolicy,
    now: datetime,
) -> tuple[Endpoint, str]:
    """A new endpoint and its signing secret (returned this once)."""
    unknown = set(event_types) - set(EVENT_TYPES)
    if unknown or not event_types:
        raise RequestInvalid(f"Event types are among: {', '.join(EVENT_TYPES)}.")
    check_endpoint_url(url, policy)
    row = conn.execute(
        "INSERT INTO tenantguard.webhook_endpoints (tenant_id, id, url, event_types, description,"
        f" created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (ctx.tenant_id, uuid4(), url, sorted(set(event_types)), description, now),
    ).fetchone()
    assert row is not None  # noqa: S101 (RETURNING of the row just written)
    endpoint = _endpoint(row)
    secret = _new_version(conn, ctx, keyring, endpoint.id, version=1, now=now)
    record_action(
        conn,
        ctx,
        action="webhook_endpoint.create",
        target_type="webhook_endpoint",
        target_id=str(endpoint.id),
        now=now,
        payload={"url": url, "event_types": list(endpoint.event_types)},
    )
    return endpoint, secret


def list_endpoints(conn: Connection, tenant_id: UUID) -> list[Endpoint]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.webhook_endpoints WHERE tenant_id = %s"
        " AND deleted_at IS NULL ORDER BY created_at, id",
        (tenant_id,),
    ).fetchall()
    return [_endpoint(r) for r in rows]


def get(conn: Connection, tenant_id: UUID, endpoint_id: UUID, *, lock: bool = False) -> Endpoint:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.webhook_endpoints WHERE tenant_id = %s AND id = %s"
        " AND deleted_at IS NULL" + (" FOR UPDATE" if lock else ""),
        (tenant_id, endpoint_id),
    ).fetchone()
    if row is None:
        raise NotFound()
    return _endpoint(row)


def delete(conn: Connection, ctx: TenantContext, endpoint_id: UUID, *, now: datetime) -> None:
    get(conn, ctx.tenant_id, endpoint_id, lock=True)
    conn.execute(
        "UPDATE tenantguard.webhook_endpoints SET deleted_at = %s WHERE tenant_id = %s AND id = %s",
        (now, ctx.tenant_id, endpoint_id),
    )
    record_action(
        conn,
        ctx,
        action="webhook_endpoint.delete",
        target_type="webhook_endpoint",
        target_id=str(endpoint_id),
        now=now,
    )


def rotate_secret(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    endpoint_id: UUID,
    *,
    overlap: timedelta,
    now: datetime,
) -> tuple[str, datetime]:
    """A new signing secret (returned this once); the live ones retire when `overlap` ends."""
    if not timedelta(0) <= overlap <= MAX_OVERLAP:
        raise RequestInvalid("An overlap is from 0 seconds to 7 days.")
    get(conn, ctx.tenant_id, endpoint_id, lock=True)  # one rotation at a time
    retires = now + overlap
    conn.execute(
        "UPDATE tenantguard.webhook_endpoint_secrets SET retires_at = %s WHERE tenant_id = %s"
        " AND endpoint_id = %s AND (retires_at IS NULL OR retires_at > %s)",
        (retires, ctx.tenant_id, endpoint_id, retires),
    )
    row = conn.execute(
        "SELECT max(version) FROM tenantguard.webhook_endpoint_secrets WHERE tenant_id = %s"
        " AND endpoint_id = %s",
        (ctx.tenant_id, endpoint_id),
    ).fetchone()
    version = int(str(row[0])) + 1 if row is not None and row[0] is not None else 1
    secret = _new_version(conn, ctx, keyring, endpoint_id, version=version, now=now)
    record_action(
        conn,
        ctx,
        action="webhook_endpoint.rotate_secret",
        target_type="webhook_endpoint",
        target_id=str(endpoint_id),
        now=now,
        payload={"version": version, "previous_retire_at": retires.isoformat()},
    )
    return secret, retires


def signing_keys(
    conn: Connection, ctx: TenantContext, keyring: Keyring, endpoint_id: UUID, *, now: datetime
) -> list[bytes]:
    """The keys a delivery is signed with now: every secret not yet retired, newest first."""
    rows = conn.execute(
        "SELECT version, secret FROM tenantguard.webhook_endpoint_secrets WHERE tenant_id = %s"
        " AND endpoint_id = %s AND (retires_at IS NULL OR retires_at > %s) ORDER BY version DESC",
        (ctx.tenant_id, endpoint_id, now),
    ).fetchall()
    keys = []
    for version, sealed in rows:
        text = ENDPOINT_SECRET.open(
            keyring, conn, ctx.tenant_id, (endpoint_id, version), bytes(sealed)
        )
        keys.append(secret_bytes(text.decode("ascii")))
    return keys


# Deliveries: the transactional outbox of outbound events, and its log.
DELIVERY_BODY = EncryptedColumn("webhook_deliveries", "body", ("id",))


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    started_at: datetime
    status_code: int | None
    error: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    id: UUID
    endpoint_id: UUID
    event_type: str
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    finished_at: datetime | None

    @property
    def message_id(self) -> str:
        """The `webhook-id`: the same on every attempt (receivers deduplicate by it)."""
        return f"msg_{self.id.hex}"


_DELIVERY = (
    "id, endpoint_id, event_type, created_at, status, attempts, next_attempt_at, finished_at"
)


def emit(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    event_type: str,
    data: dict[str, object],
    *,
    now: datetime,
    endpoint_id: UUID | None = None,
) -> list[UUID]:
    """Queue `event_type` for every live endpoint of the tenant subscribed to it (or for
    `endpoint_id` only), in the caller's transaction: it is sent only if that commits."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    body = json.dumps(
        {"type": event_type, "timestamp": now.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
    rows = conn.execute(
        "SELECT id FROM tenantguard.webhook_endpoints WHERE tenant_id = %s AND deleted_at IS NULL"
        " AND %s = ANY (event_types) AND (%s::uuid IS NULL OR id = %s) ORDER BY id",
        (ctx.tenant_id, event_type, endpoint_id, endpoint_id),
    ).fetchall()
    queued = []
    for (target,) in rows:
        delivery_id = uuid4()
        sealed = DELIVERY_BODY.seal(keyring, conn, ctx, (delivery_id,), body)
        conn.execute(
            "INSERT INTO tenantguard.webhook_deliveries (tenant_id, id, endpoint_id, event_type,"
            " body, created_at, status, attempts, next_attempt_at) VALUES"
            " (%s, %s, %s, %s, %s, %s, 'pending', 0, %s)",
            (ctx.tenant_id, delivery_id, target, event_type, sealed, now, now),
        )
        queued.append(delivery_id)
    return queued


def list_deliveries(
    conn: Connection, tenant_id: UUID, endpoint_id: UUID, *, limit: int = 100
) -> list[tuple[Delivery, list[Attempt]]]:
    """An endpoint's deliveries, newest first, each with its attempts (the delivery log)."""
    get(conn, tenant_id, endpoint_id)
    rows = conn.execute(
        f"SELECT {_DELIVERY} FROM tenantguard.webhook_deliveries WHERE tenant_id = %s"
        " AND endpoint_id = %s ORDER BY created_at DESC, id LIMIT %s",
        (tenant_id, endpoint_id, limit),
    ).fetchall()
    deliveries = [Delivery(*r) for r in rows]
    attempts = conn.execute(
        "SELECT delivery_id, attempt, started_at, status_code, error, duration_ms"
        " FROM tenantguard.webhook_attempts WHERE tenant_id = %s AND delivery_id = ANY (%s)"
        " ORDER BY delivery_id, attempt",
        (tenant_id, [d.id for d in deliveries]),
    ).fetchall()
    by: dict[UUID, list[Attempt]] = {}
    for delivery_id, *rest in attempts:
        by.setdefault(delivery_id, []).append(Attempt(*rest))
    return [(d, by.get(d.id, [])) for d in deliveries]
