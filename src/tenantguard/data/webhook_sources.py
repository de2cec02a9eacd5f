"""Inbound webhooks: a tenant's sources and what they sent.

A source names a scheme (`standard`: Standard Webhooks; `stripe`: Stripe's `t=…,v1=…`) and
the vault secret that signs it. `receive` checks one request against it, over the raw bytes
(`webhooks.signing`), and keeps the verified body as a receipt, sealed under the tenant's key;
the receipt's replay key is unique per source, so a replay inside the signing window (or
after it: receipts are kept until retention removes them) is refused. A request for a source
that does not exist, or whose secret is gone, is refused like a bad signature: the answer says
nothing about which sources a tenant has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NoReturn, get_args
from uuid import UUID, uuid4

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import secrets
from tenantguard.db.pool import Connection
from tenantguard.errors import NotFound, RequestInvalid
from tenantguard.webhooks.signing import (
    Verified,
    WebhookReplayed,
    WebhookSignatureInvalid,
    secret_bytes,
    verify_standard,
    verify_stripe,
)

Scheme = Literal["standard", "stripe"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
RECEIPT_BODY = EncryptedColumn("webhook_receipts", "body", ("id",))
_COLUMNS = "name, scheme, secret_name, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    scheme: str
    secret_name: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Receipt:
    id: UUID
    source: str
    replay_key: str
    signed_at: datetime
    received_at: datetime
    body: bytes
    body_sha256: str


def put(
    conn: Connection, ctx: TenantContext, name: str, *, scheme: str, secret_name: str, now: datetime
) -> Source:
    if scheme not in SCHEMES:
        raise RequestInvalid("Unknown webhook scheme.")
    try:
        secrets.versions(conn, ctx.tenant_id, secret_name)
    except NotFound as exc:
        raise RequestInvalid("No secret of that name in this tenant's vault.") from exc
    row = conn.execute(
        "INSERT INTO tenantguard.webhook_sources (tenant_id, name, scheme, secret_name,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, name) DO UPDATE SET scheme = excluded.scheme,"
        " secret_name = excluded.secret_name, updated_at = excluded.updated_at"
        f" RETURNING {_COLUMNS}",
        (ctx.tenant_id, name, scheme, secret_name, now, now),
    ).fetchone()
    assert row is not None  # noqa: S101 (RETURNING of the row just written)
    record_action(
        conn,
        ctx,
        action="webhook_source.put",
        target_type="webhook_source",
        target_id=name,
        now=now,
        payload={"scheme": scheme, "secret_name": secret_name},
    )
    return Source(*row)


def list_sources(conn: Connection, tenant_id: UUID) -> list[Source]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.webhook_sources WHERE tenant_id = %s ORDER BY name",
        (tenant_id,),
    ).fetchall()
    return [Source(*r) for r in rows]


def get(conn: Connection, tenant_id: UUID, name: str) -> Source | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.webhook_sources WHERE tenant_id = %s AND name = %s",
        (tenant_id, name),
    ).fetchone()
    return None if row is None else Source(*row)


def delete(conn: Connection, ctx: TenantContext, name: str, *, now: datetime) -> None:
    """Delete the source and its receipts."""
    gone = conn.execute(
        "DELETE FROM tenantguard.webhook_sources WHERE tenant_id = %s AND name = %s RETURNING name",
        (ctx.tenant_id, name),
    ).fetchone()
    if gone is None:
        raise NotFound()
    record_action(
        conn,
        ctx,
        action="webhook_source.delete",
        target_type="webhook_source",
        target_id=name,
        now=now,
    )


def verify(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    source: Source | None,
    *,
    headers: dict[str, str],
    body: bytes,
    now: datetime,
    recent: secrets.RecentReads | None = None,
) -> tuple[Verified, secrets.ReadKey | None]:
    """Check a request against `source` (None: there is no such source). Returns what was
    verified, and the vault read to `recent.mark` once `conn` commits."""
    if source is None:
        raise WebhookSignatureInvalid()
    try:
        unsealed = secrets.read_current(
            conn,
            ctx,
            keyring,
            source.secret_name,
            use=f"webhook:{source.name}",
            now=now,
            recent=recent,
        )
    except NotFound as exc:
        raise WebhookSignatureInvalid() from exc
    if source.scheme == "stripe":
        keys = [unsealed.value]
    else:
        try:
            keys = [secret_bytes(unsealed.value.decode("utf-8"))]
        except (ValueError, UnicodeDecodeError) as exc:  # the vault holds no whsec_ secret
            raise WebhookSignatureInvalid() from exc
    return _check(source.scheme, keys, headers, body, now=now), unsealed.audited


def _check(
    scheme: str, keys: list[bytes], headers: dict[str, str], body: bytes, *, now: datetime
) -> Verified:
    """The one dispatch on the scheme: a known source's keys, or none for an unknown one."""
    seconds = int(now.timestamp())
    if scheme == "stripe":
        return verify_stripe(keys, headers.get("stripe-signature"), body, now=seconds)
    return verify_standard(keys, headers, body, now=seconds)


def check_unknown(scheme: str, headers: dict[str, str], body: bytes, *, now: datetime) -> NoReturn:
    """Refuse a request for a source that does not exist as one that does would be refused by
    a key that matches nothing: its form and time first, then its signature. Always raises."""
    _check(scheme, [], headers, body, now=now)
    raise WebhookSignatureInvalid()  # pragma: no cover - no key verifies anything


def keep(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    source: Source,
    *,
    verified: Verified,
    body: bytes,
    now: datetime,
) -> Receipt:
    """Keep a verified request as a receipt, or refuse it as a replay; audited."""
    receipt_id = uuid4()
    digest = hashlib.sha256(body).hexdigest()
    sealed = RECEIPT_BODY.seal(keyring, conn, ctx, (receipt_id,), body)
    signed_at = datetime.fromtimestamp(verified.timestamp, UTC)
    row = conn.execute(
        "INSERT INTO tenantguard.webhook_receipts (tenant_id, source, replay_key, id, signed_at,"
        " received_at, body, body_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, source, replay_key) DO NOTHING RETURNING id",
        (
            ctx.tenant_id,
            source.name,
            verified.replay_key,
            receipt_id,
            signed_at,
            now,
            sealed,
            digest,
        ),
    ).fetchone()
    if row is None:
        raise WebhookReplayed()
    record_action(
        conn,
        ctx,
        action="webhook.received",
        target_type="webhook_source",
        target_id=source.name,
        now=now,
        payload={"receipt_id": str(receipt_id), "body_sha256": digest, "scheme": source.scheme},
    )
    return Receipt(receipt_id, source.name, verified.replay_key, signed_at, now, body, digest)


def list_receipts(
    conn: Connection, ctx: TenantContext, keyring: Keyring, source: str, *, limit: int = 100
) -> list[Receipt]:
    if get(conn, ctx.tenant_id, source) is None:
        raise NotFound()
    rows = conn.execute(
        "SELECT id, source, replay_key, signed_at, received_at, body, body_sha256"
        " FROM tenantguard.webhook_receipts WHERE tenant_id = %s AND source = %s"
        " ORDER BY received_at DESC, id LIMIT %s",
        (ctx.tenant_id, source, limit),
    ).fetchall()
    out = []
    for r in rows:
        body = RECEIPT_BODY.open(keyring, conn, ctx.tenant_id, (r[0],), bytes(r[5]))
        out.append(Receipt(r[0], r[1], r[2], r[3], r[4], body, r[6]))
    return out
