"""The platform's signing keys: Ed25519, sealed at rest, rotated with an overlap window.

One key signs at a time; after a rotation the previous key keeps verifying until the end of
the overlap, so tokens, checkpoints and signed URLs issued just before a rotation stay valid.
Each key's `kid` is its RFC 7638 JWK thumbprint, so any verifier can recompute it from the
public key. The private half is a sealed column (bound to the platform realm and the kid); the
public halves export as a JWKS.

Threat stopped: a long-lived signing key (rotation), a stolen database dump (sealed private
keys), a verifier trusting a retired key forever (`verify_until`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from tenantguard.audit.store import record_action
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection
from tenantguard.errors import RequestInvalid, ServiceUnavailable

PRIVATE_KEY = EncryptedColumn("signing_keys", "private_sealed", ("kid",))
DEFAULT_OVERLAP = timedelta(days=1)
MIN_OVERLAP = timedelta(minutes=15)  # at least one access token's lifetime


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def thumbprint(public_key: bytes) -> str:
    """RFC 7638: SHA-256 over the required JWK members in lexicographic order, base64url."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_key)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True, slots=True)
class PublicKey:
    kid: str
    public_key: bytes
    created_at: datetime
    verify_until: datetime | None

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(self.public_key),
            "kid": self.kid,
            "alg": "Ed25519",
            "use": "sig",
        }

    def verifies_at(self, now: datetime) -> bool:
        return self.created_at <= now and (self.verify_until is None or now < self.verify_until)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The active key, unsealed for this call: sign with it, do not keep it."""

    kid: str
    private: Ed25519PrivateKey

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _require_platform(ctx: TenantContext) -> None:
    if ctx.tenant_id != PLATFORM_TENANT_ID:
        raise RequestInvalid("Signing keys belong to the platform realm.")


def rotate(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    *,
    now: datetime,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> str:
    """Make a new signing key active; the previous one verifies until `now + overlap`."""
    _require_platform(ctx)
    if overlap < MIN_OVERLAP:
        raise RequestInvalid("The overlap must cover at least one token lifetime (15 min).")
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = thumbprint(public)
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    sealed = PRIVATE_KEY.seal(keyring, conn, ctx, (kid,), raw)
    previous = conn.execute(
        "UPDATE tenantguard.signing_keys SET superseded_at = %s, verify_until = %s"
        " WHERE tenant_id = %s AND superseded_at IS NULL RETURNING kid",
        (now, now + overlap, ctx.tenant_id),
    ).fetchone()
    conn.execute(
        "INSERT INTO tenantguard.signing_keys (tenant_id, kid, algorithm, public_key,"
        " private_sealed, created_at) VALUES (%s, %s, 'Ed25519', %s, %s, %s)",
        (ctx.tenant_id, kid, public, sealed, now),
    )
    record_action(
        conn,
        ctx,
        action="signing_key.rotate",
        target_type="signing_key",
        target_id=kid,
        now=now,
        payload={
            "superseded": previous[0] if previous else None,
            "overlap_seconds": int(overlap.total_seconds()),
        },
    )
    return kid


def active(conn: Connection, keyring: Keyring) -> SigningKey:
    """The key that signs now. None configured is a typed error: never an unsigned result."""
    row = conn.execute(
        "SELECT kid, private_sealed FROM tenantguard.signing_keys WHERE tenant_id = %s"
        " AND superseded_at IS NULL",
        (PLATFORM_TENANT_ID,),
    ).fetchone()
    if row is None:
        raise ServiceUnavailable("No signing key exists; run `tenantguard signing-keys rotate`.")
    kid, sealed = str(row[0]), bytes(row[1])
    raw = PRIVATE_KEY.open(keyring, conn, PLATFORM_TENANT_ID, (kid,), sealed)
    return SigningKey(kid, Ed25519PrivateKey.from_private_bytes(raw))


def public_keys(conn: Connection, *, now: datetime) -> list[PublicKey]:
    """Every key that verifies at `now` (the active one and those within their overlap); never
    one whose validity has not begun."""
    rows = conn.execute(
        "SELECT kid, public_key, created_at, verify_until FROM tenantguard.signing_keys"
        " WHERE tenant_id = %s AND created_at <= %s AND (verify_until IS NULL OR verify_until > %s)"
        " ORDER BY created_at DESC",
        (PLATFORM_TENANT_ID, now, now),
    ).fetchall()
    return [PublicKey(str(k), bytes(p), c, v) for k, p, c, v in rows]


def all_public_keys(conn: Connection) -> list[PublicKey]:
    """Every signing key ever made, with its window: what a verifier of old signatures (an
    audit checkpoint of last year) needs; each signature is checked against its own time."""
    rows = conn.execute(
        "SELECT kid, public_key, created_at, verify_until FROM tenantguard.signing_keys"
        " WHERE tenant_id = %s ORDER BY created_at",
        (PLATFORM_TENANT_ID,),
    ).fetchall()
    return [PublicKey(str(k), bytes(p), c, v) for k, p, c, v in rows]


def trusted_keys(document: object) -> list[PublicKey]:
    """Keys a verifier trusts, from a JWKS (`{"keys": [{"kid", "x", ...}]}`, as the gateway
    publishes: valid at any time) or from a key list with windows (as exports carry). Each
    `kid` must be the key's RFC 7638 thumbprint. Raises ValueError on anything else."""
    always = datetime.min.replace(tzinfo=UTC)
    found: list[PublicKey] = []
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        for k in document["keys"]:
            raw = base64.urlsafe_b64decode(str(k["x"]) + "==")
            found.append(PublicKey(str(k["kid"]), raw, always, None))
    elif isinstance(document, list):
        for k in document:
            value = str(k["public_key"])
            raw = bytes.fromhex(value) if len(value) == 64 else base64.b64decode(value)
            until = None if k["verify_until"] is None else _aware(k["verify_until"])
            found.append(PublicKey(str(k["kid"]), raw, _aware(k["created_at"]), until))
    else:
        raise TypeError("not a key set")
    for key in found:
        if len(key.public_key) != 32 or thumbprint(key.public_key) != key.kid:
            raise ValueError("a key's kid is not its thumbprint")
    return found


def _aware(value: object) -> datetime:
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a key's time has no zone")
    return moment


def jwks(keys: list[PublicKey]) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


def verify(
    keys: list[PublicKey], kid: str, message: bytes, signature: bytes, *, now: datetime
) -> bool:
    """True only if `kid` names a key valid at `now` and the signature verifies under it."""
    for key in keys:
        if key.kid == kid and key.verifies_at(now):
            try:
                Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, message)
            except Exception:  # noqa: BLE001 (InvalidSignature and malformed input alike)
                return False
            return True
    return False


def ensure(conn: Connection, ctx: TenantContext, keyring: Keyring, *, now: datetime) -> str:
    """The active signing key's kid, creating the first one if there is none (first start)."""
    row = conn.execute(
        "SELECT kid FROM tenantguard.signing_keys WHERE tenant_id = %s AND superseded_at IS NULL",
        (PLATFORM_TENANT_ID,),
    ).fetchone()
    return str(row[0]) if row is not None else rotate(conn, ctx, keyring, now=now)
