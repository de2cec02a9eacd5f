"""Webhook signatures over the raw bytes of a body: the Standard Webhooks scheme (sign and
verify) and Stripe's `t=…,v1=…` scheme (verify). Pure: the caller passes the time and keeps
the ids it has seen (a replay is refused by the caller, after the signature holds, so that a
forged message cannot burn a real id).

Standard Webhooks: `webhook-signature` is a space-separated list of `v1,<base64 HMAC-SHA256 of
"<webhook-id>.<webhook-timestamp>.<body>">`; several signatures are how a secret rotates (the
sender signs with both secrets during the overlap, the receiver accepts either). Secrets are
`whsec_` and the base64 of 24 to 64 random bytes.

Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">[,v1=…]`, the
secret used as its UTF-8 bytes; `v0` and other schemes are ignored.

Every refusal is a 401 problem saying why: `webhook_malformed` (a header missing or not in
its form), `webhook_stale` (a timestamp more than `TOLERANCE_SECONDS` from now, either way),
`webhook_signature_invalid`, `webhook_replayed`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tenantguard.errors import TenantGuardError

TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"  # noqa: S105 (the scheme's prefix, not a secret)
SECRET_BYTES = 32
MAX_SIGNATURES = 8  # entries in one header: more is malformed (bounds the work per request)
# An id is what the receiver remembers: printable ASCII without "." (the signed content joins
# the parts with dots, so an id holding one could shift where the timestamp starts).
_ID = re.compile(r"[!-\-/-~]{1,256}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookRejected(TenantGuardError):
    code = "webhook_rejected"
    title = "Webhook rejected"
    status = 401
    default_detail = "The webhook was not accepted."


class WebhookMalformed(WebhookRejected):
    code = "webhook_malformed"
    title = "Webhook malformed"
    default_detail = "A signature header is missing or not in its form."


class WebhookStale(WebhookRejected):
    code = "webhook_stale"
    title = "Webhook stale"
    default_detail = f"The webhook's timestamp is more than {TOLERANCE_SECONDS} s from now."


class WebhookSignatureInvalid(WebhookRejected):
    code = "webhook_signature_invalid"
    title = "Webhook signature invalid"
    default_detail = "No signature matches the body with the configured secret."


class WebhookReplayed(WebhookRejected):
    code = "webhook_replayed"
    title = "Webhook replayed"
    default_detail = "This webhook was already received."


@dataclass(frozen=True, slots=True)
class Verified:
    """A webhook whose signature holds: `replay_key` is what the receiver must not have seen
    (the Standard Webhooks id; for Stripe, a digest of the signed content)."""

    replay_key: str
    timestamp: int


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The key of a `whsec_…` secret; `ValueError` for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as exc:  # binascii.Error, or text that is not ASCII
        raise ValueError("a Standard Webhooks secret is whsec_ and base64") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError("a Standard Webhooks secret holds 24 to 64 bytes")
    return key


def _mac(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    """HMAC-SHA256 over `id.timestamp.body`: what both signing and verifying compute."""
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode("ascii") + body, hashlib.sha256).digest()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    return "v1," + base64.b64encode(_mac(key, msg_id, timestamp, body)).decode("ascii")


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature` signed with every key (two during a rotation's overlap)."""
    if not _ID.fullmatch(msg_id):
        raise ValueError("a webhook id is printable ASCII without dots, at most 256")
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def _fresh(timestamp: str, now: int, tolerance: int) -> int:
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WebhookMalformed()
    value = int(timestamp)
    if abs(now - value) > tolerance:
        raise WebhookStale()
    return value


def verify_standard(
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int,
    tolerance: int = TOLERANCE_SECONDS,
) -> Verified:
    """Check a Standard Webhooks message (headers by lower-case name) against any of `keys`.
    Order: form, then time, then signature; a replay is the caller's to refuse."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    listed = headers.get("webhook-signature")
    if msg_id is None or stamp is None or listed is None or not _ID.fullmatch(msg_id):
        raise WebhookMalformed()
    timestamp = _fresh(stamp, now, tolerance)
    entries = listed.split()
    if not entries or len(entries) > MAX_SIGNATURES:
        raise WebhookMalformed()
    offered: list[bytes] = []
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not comma:
            raise WebhookMalformed()
        if version != "v1":
            continue  # another scheme (v1a: asymmetric) is not ours to check
        try:  # binascii.Error for bad base64, ValueError for text that is not ASCII
            decoded = base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise WebhookMalformed() from exc
        if base64.b64encode(decoded).decode("ascii") != value:  # one spelling per signature
            raise WebhookMalformed()
        offered.append(decoded)
    expected = [_mac(key, msg_id, timestamp, body) for key in keys]
    if not any(hmac.compare_digest(o, e) for o in offered for e in expected):
        raise WebhookSignatureInvalid()
    return Verified(msg_id, timestamp)


def verify_stripe(
    keys: Sequence[bytes],
    header: str | None,
    body: bytes,
    *,
    now: int,
    tolerance: int = TOLERANCE_SECONDS,
) -> Verified:
    """Check a `Stripe-Signature` header against any of `keys` (a secret's UTF-8 bytes)."""
    if header is None:
        raise WebhookMalformed()
    stamp: str | None = None
    offered: list[bytes] = []
    items = header.split(",")
    if len(items) > MAX_SIGNATURES + 2:
        raise WebhookMalformed()
    for item in items:
        name, equals, value = item.strip().partition("=")
        if not equals:
            raise WebhookMalformed()
        if name == "t":
            if stamp is not None:
                raise WebhookMalformed()
            stamp = value
        elif name == "v1":
            try:
                offered.append(bytes.fromhex(value))
            except ValueError as exc:
                raise WebhookMalformed() from exc
    if stamp is None or not offered:
        raise WebhookMalformed()
    timestamp = _fresh(stamp, now, tolerance)
    content = f"{timestamp}.".encode("ascii") + body
    expected = [hmac.new(key, content, hashlib.sha256).digest() for key in keys]
    if not any(hmac.compare_digest(o, e) for o in offered for e in expected):
        raise WebhookSignatureInvalid()
    return Verified("stripe:" + hashlib.sha256(content).hexdigest(), timestamp)
