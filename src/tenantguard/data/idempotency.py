"""Idempotency keys, stored: claim a key, keep the answer (sealed), replay it, expire it.

The decisions are `tenantguard.idempotency`'s; this module is their SQL. A claim is one
`INSERT … ON CONFLICT DO NOTHING` on (tenant, principal, key): of concurrent duplicates exactly
one inserts, and the others find its record (in progress) once it commits. A record past its
retention is deleted before the claim, so the key may be used afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import structlog
from psycopg.types.json import Jsonb

from tenantguard.context import TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection
from tenantguard.idempotency import LEASE, Found, IdempotencyInProgress, Pending, Stored, decide

RESPONSE_BODY = EncryptedColumn("idempotency_keys", "response_body", ("id",))
_log = structlog.get_logger("tenantguard.idempotency")


@dataclass(frozen=True, slots=True)
class Claim:
    """A key this request holds: it runs, then leaves its answer (or is marked interrupted)."""

    tenant_id: UUID
    id: UUID
    key: str


def principal_of(ctx: TenantContext) -> str:
    return f"{ctx.principal.type}:{ctx.principal.id}"


def claim(
    tx: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    pending: Pending,
    *,
    now: datetime,
    retention: timedelta,
) -> Claim | Stored:
    """Claim `pending`'s key for `ctx`, or return the answer kept for the same request; raise
    what a different, running or interrupted request under the key means."""
    principal = principal_of(ctx)
    where = (ctx.tenant_id, principal, pending.key)
    tx.execute(
        "DELETE FROM tenantguard.idempotency_keys WHERE tenant_id = %s AND principal = %s"
        " AND key = %s AND expires_at <= %s",
        (*where, now),
    )
    new_id = uuid4()
    inserted = tx.execute(
        "INSERT INTO tenantguard.idempotency_keys (tenant_id, principal, key, id, fingerprint,"
        " method, path, state, created_at, lease_until, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, 'in_progress', %s, %s, %s)"
        " ON CONFLICT (tenant_id, principal, key) DO NOTHING RETURNING id",
        (
            *where,
            new_id,
            pending.fingerprint,
            pending.method,
            pending.path,
            now,
            now + LEASE,
            now + retention,
        ),
    ).fetchone()
    if inserted is not None:
        return Claim(ctx.tenant_id, new_id, pending.key)
    row = tx.execute(
        "SELECT id, fingerprint, state, lease_until, status, headers, response_body"
        " FROM tenantguard.idempotency_keys WHERE tenant_id = %s AND principal = %s AND key = %s",
        where,
    ).fetchone()
    if row is None:  # expired and taken again in between: as good as running
        raise IdempotencyInProgress()
    record_id, print_, state, lease_until, status, headers, sealed = row
    decide(Found(bytes(print_), state, lease_until, sealed is not None), pending.fingerprint, now)
    body = RESPONSE_BODY.open(keyring, tx, ctx.tenant_id, (record_id,), bytes(sealed))
    _log.info("idempotency.replayed", key_record=str(record_id), status=status)
    return Stored(int(status), tuple((str(k), str(v)) for k, v in headers), body)


def complete(
    tx: Connection, ctx: TenantContext, keyring: Keyring, held: Claim, answer: Stored
) -> bool:
    """Keep `answer` as the claim's outcome; False if the claim was no longer in progress."""
    sealed = RESPONSE_BODY.seal(keyring, tx, ctx, (held.id,), answer.body)
    done = tx.execute(
        "UPDATE tenantguard.idempotency_keys SET state = 'done', status = %s, headers = %s,"
        " response_body = %s WHERE tenant_id = %s AND id = %s AND state = 'in_progress'",
        (answer.status, Jsonb([list(h) for h in answer.headers]), sealed, held.tenant_id, held.id),
    )
    return done.rowcount == 1


def interrupt(tx: Connection, held: Claim) -> None:
    """Mark the claim's request as ended without an answer to keep: never run again."""
    tx.execute(
        "UPDATE tenantguard.idempotency_keys SET state = 'interrupted'"
        " WHERE tenant_id = %s AND id = %s AND state = 'in_progress'",
        (held.tenant_id, held.id),
    )


def release(tx: Connection, held: Claim) -> None:
    """Give the key back (the request was refused with no effect): a retry runs afresh."""
    tx.execute(
        "DELETE FROM tenantguard.idempotency_keys WHERE tenant_id = %s AND id = %s"
        " AND state = 'in_progress'",
        (held.tenant_id, held.id),
    )


def expire(tx: Connection, tenant_id: UUID, now: datetime) -> int:
    """Delete the tenant's records past their retention; how many."""
    gone = tx.execute(
        "DELETE FROM tenantguard.idempotency_keys WHERE tenant_id = %s AND expires_at <= %s",
        (tenant_id, now),
    )
    return gone.rowcount
