"""Artifacts: a tenant's files, private by default, sealed under the tenant's key, kept in an
`ObjectStore`, and downloaded only through signed URLs.

    upload(ctx, name, content_type, data)   seal, store, then record (row and audit)
    signed_url(ctx, id, seconds)            a token bound to the tenant and the artifact
    authorize_download(tenant, id, token)   verify the token
    read(tenant, artifact)                  read, open, check the digest, audit

**Signed URLs.** The token is the artifact's id and expiry sealed with the tenant's own key
(purpose `artifact-url`, the artifact's id as the record id), in base64url. It opens only
under that tenant and for that artifact: a token moved to another tenant's or another
artifact's URL, or changed in any bit, fails as `signed_url_invalid`; an authentic one past
its expiry is `signed_url_expired`. Shredding the tenant's keys kills every URL at once. URLs
last 5 minutes unless asked otherwise, at most `url_max_seconds`. Nothing is ever public.

**Consistency.** The sealed bytes are stored before the row is written, and deleted before
it is (by a person or by retention): bytes without a row arise only when a failed upload's
clean-up fails too, and stay unreadable (sealed, no row) until the tenant's purge, which
lists the store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import structlog

from tenantguard.artifacts.stores import ObjectStore, object_key
from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.pagination import decode_cursor, encode_cursor
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import DecryptionFailed, NotFound, RequestInvalid, TenantGuardError

CONTENT = "artifact"  # the key purpose of artifacts' bytes
URL = "artifact-url"  # and of their signed URLs
DEFAULT_URL_SECONDS = 300
_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,127}/[a-z0-9!#$&^_.+-]{1,127}")
_COLUMNS = "id, name, content_type, size, sha256, store, created_at, created_by"
_log = structlog.get_logger("tenantguard.artifacts")
_LINK = Principal("signed_url", "")  # whoever holds the link: the link is the credential


class ArtifactTooLarge(RequestInvalid):
    code = "artifact_too_large"
    title = "Artifact too large"
    default_detail = "The artifact is larger than this deployment accepts."


class SignedUrlInvalid(TenantGuardError):
    code = "signed_url_invalid"
    title = "Signed URL invalid"
    status = 403
    default_detail = "This link is not valid for this artifact."


class SignedUrlExpired(TenantGuardError):
    code = "signed_url_expired"
    title = "Signed URL expired"
    status = 403
    default_detail = "This link has expired; ask for a new one."


@dataclass(frozen=True, slots=True)
class Artifact:
    id: UUID
    name: str
    content_type: str
    size: int
    sha256: str
    store: str
    created_at: datetime
    created_by: str


def check_name(name: str) -> str:
    """A label, not a path: 1 to 255 characters, no control characters."""
    if not 1 <= len(name) <= 255 or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise RequestInvalid("An artifact's name is 1 to 255 characters, none of them control.")
    return name


def check_content_type(header: str | None) -> str:
    """The media type (`type/subtype`, lowercased; parameters dropped), or octet-stream."""
    if header is None or not header.strip():
        return "application/octet-stream"
    media = header.split(";", 1)[0].strip().lower()
    if not _TYPE.fullmatch(media):
        raise RequestInvalid("The Content-Type is not a media type.")
    return media


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url: one spelling per token (a changed padding bit is another token)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SignedUrlInvalid() from exc
    if _b64(raw) != text:
        raise SignedUrlInvalid()
    return raw


@dataclass
class Artifacts:
    db: Database
    keyring: Keyring
    store: ObjectStore
    store_kind: str  # local | s3, recorded on each row
    clock: Clock
    max_bytes: int = 8 * 1_048_576
    url_max_seconds: int = 3600

    def upload(self, ctx: TenantContext, name: str, content_type: str, data: bytes) -> Artifact:
        check_name(name)
        if len(data) > self.max_bytes:
            raise ArtifactTooLarge()
        artifact_id = uuid4()
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            sealed = self.keyring.seal(tx, ctx, CONTENT, data, record_id=str(artifact_id))
        key = object_key(ctx.tenant_id, artifact_id)
        self.store.put(key, sealed)
        now = self.clock.now()
        try:
            with self.db.tenant_transaction(ctx.tenant_id) as tx:
                row = tx.execute(
                    "INSERT INTO tenantguard.artifacts (tenant_id, id, name, content_type, size,"
                    f" sha256, store, created_at, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                    f" %s, %s) RETURNING {_COLUMNS}",
                    (
                        ctx.tenant_id,
                        artifact_id,
                        name,
                        content_type,
                        len(data),
                        hashlib.sha256(data).hexdigest(),
                        self.store_kind,
                        now,
                        f"{ctx.principal.type}:{ctx.principal.id}",
                    ),
                ).fetchone()
                assert row is not None  # noqa: S101 (INSERT … RETURNING)
                record_action(
                    tx,
                    ctx,
                    action="artifact.upload",
                    target_type="artifact",
                    target_id=str(artifact_id),
                    now=now,
                    payload={"size": len(data), "content_type": content_type},
                )
        except BaseException:
            try:
                self.store.delete(key)
            except Exception:  # noqa: BLE001 (sealed and unlisted: the purge lists the store)
                _log.error("artifacts.orphaned", key=key)
            raise
        return Artifact(*row)

    def list(
        self, ctx: TenantContext, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Artifact], str | None]:
        after = decode_cursor(cursor)
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            if after is None:
                rows = tx.execute(
                    f"SELECT {_COLUMNS} FROM tenantguard.artifacts WHERE tenant_id = %s"
                    " ORDER BY created_at DESC, id DESC LIMIT %s",
                    (ctx.tenant_id, limit + 1),
                ).fetchall()
            else:
                rows = tx.execute(
                    f"SELECT {_COLUMNS} FROM tenantguard.artifacts WHERE tenant_id = %s"
                    " AND (created_at, id) < (%s, %s) ORDER BY created_at DESC, id DESC LIMIT %s",
                    (ctx.tenant_id, *after, limit + 1),
                ).fetchall()
        found = [Artifact(*r) for r in rows[:limit]]
        more = len(rows) > limit
        return found, encode_cursor(found[-1].created_at, found[-1].id) if more else None

    def get(self, ctx: TenantContext, artifact_id: UUID) -> Artifact:
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            return _get(tx, ctx.tenant_id, artifact_id)

    def delete(self, ctx: TenantContext, artifact_id: UUID) -> None:
        """Remove the bytes, then the row (audited): a failure in between leaves a row whose
        download is a 404 and whose deletion can be repeated, never bytes without a row."""
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            _get(tx, ctx.tenant_id, artifact_id)  # another tenant's: 404, as missing
        self.store.delete(object_key(ctx.tenant_id, artifact_id))
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            gone = tx.execute(
                "DELETE FROM tenantguard.artifacts WHERE tenant_id = %s AND id = %s RETURNING id",
                (ctx.tenant_id, artifact_id),
            ).fetchone()
            if gone is None:
                raise NotFound()  # deleted meanwhile
            record_action(
                tx,
                ctx,
                action="artifact.delete",
                target_type="artifact",
                target_id=str(artifact_id),
                now=self.clock.now(),
            )

    def signed_url(
        self, ctx: TenantContext, artifact_id: UUID, seconds: int = DEFAULT_URL_SECONDS
    ) -> tuple[str, datetime]:
        """The download path (relative to the gateway) and when it stops working."""
        if not 1 <= seconds <= self.url_max_seconds:
            raise RequestInvalid(f"A signed URL lasts 1 to {self.url_max_seconds} seconds.")
        now = self.clock.now()
        expires = int(now.timestamp()) + seconds
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            _get(tx, ctx.tenant_id, artifact_id)
            payload = json.dumps({"a": str(artifact_id), "e": expires}).encode()
            token = _b64(self.keyring.seal(tx, ctx, URL, payload, record_id=str(artifact_id)))
            record_action(
                tx,
                ctx,
                action="artifact.url",
                target_type="artifact",
                target_id=str(artifact_id),
                now=now,
                payload={"expires_at": expires},
            )
        path = f"/api/artifact-downloads/{ctx.tenant_id}/{artifact_id}?token={token}"
        return path, datetime.fromtimestamp(expires, UTC)

    def authorize_download(self, tenant_id: UUID, artifact_id: UUID, token: str) -> Artifact:
        """The artifact, if `token` is a live signed URL of this tenant's for it."""
        now = self.clock.now()
        sealed_token = _unb64(token)
        with self.db.tenant_transaction(tenant_id) as tx:
            try:
                opened = self.keyring.open(
                    tx, tenant_id, URL, sealed_token, record_id=str(artifact_id)
                )
            except DecryptionFailed as exc:
                raise SignedUrlInvalid() from exc
            claims = json.loads(opened)
            if claims.get("a") != str(artifact_id):  # bound twice: record id and payload
                raise SignedUrlInvalid()
            if int(claims["e"]) <= int(now.timestamp()):
                raise SignedUrlExpired()
            return _get(tx, tenant_id, artifact_id)

    def read(self, tenant_id: UUID, artifact: Artifact, *, request_id: str) -> bytes:
        """An authorised download's bytes, opened and checked against the recorded digest
        (audited)."""
        sealed = self.store.get(object_key(tenant_id, artifact.id))
        ctx = TenantContext(tenant_id, _LINK, frozenset(), request_id)
        with self.db.tenant_transaction(tenant_id) as tx:
            data = self.keyring.open(tx, tenant_id, CONTENT, sealed, record_id=str(artifact.id))
            if hashlib.sha256(data).hexdigest() != artifact.sha256:
                raise DecryptionFailed()  # the bytes are not the ones recorded
            record_action(
                tx,
                ctx,
                action="artifact.download",
                target_type="artifact",
                target_id=str(artifact.id),
                now=self.clock.now(),
            )
        return data


def _get(tx: Connection, tenant_id: UUID, artifact_id: UUID) -> Artifact:
    row = tx.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.artifacts WHERE tenant_id = %s AND id = %s",
        (tenant_id, artifact_id),
    ).fetchone()
    if row is None:
        raise NotFound()
    return Artifact(*row)
