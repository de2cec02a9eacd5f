"""API key format, generation and hashing. Pure.

A key reads `tg_<kind>_<32 random base62 chars><6 base62 chars of checksum>`:

- the fixed `tg_` prefix lets secret scanners recognise a leaked key;
- the CRC32 checksum over everything before it lets a typo fail fast, without a lookup;
- 32 base62 characters carry 190 bits from `secrets`;
- only SHA-256(key) is stored; the key itself is shown once and never again.

Threat stopped: a leaked database revealing usable keys; keys guessed or brute-forced.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

from tenantguard.errors import InvalidCredentials

# sk: a tenant's service (API) key; rt: a session's refresh token. An unknown kind is refused,
# and each resolution path accepts only its own kind.
KINDS = frozenset({"sk", "rt", "ml"})  # ml: a magic-link sign-in token
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_LEN = 32
_CHECK_LEN = 6
_FORMAT = re.compile(r"tg_([a-z]{2,8})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})")
MAX_KEY_LENGTH = 64
DISPLAY_PREFIX_LEN = 10


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LEN)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly generated key: the secret (show once), its hash and a display prefix."""

    secret: str
    key_hash: bytes
    display_prefix: str


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def generate(kind: str = "sk") -> NewApiKey:
    if kind not in KINDS:
        raise ValueError(f"unknown API key kind: {kind!r}")
    body = f"tg_{kind}_" + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LEN))
    secret = body + _checksum(body)
    return NewApiKey(secret, hash_key(secret), secret[:DISPLAY_PREFIX_LEN])


def parse(candidate: str, *, kind: str = "sk") -> bytes:
    """Check `candidate`'s form, kind and checksum and return its hash for the lookup.

    Raises `InvalidCredentials("malformed")` for anything that is not a well-formed credential
    of `kind`.
    """
    if len(candidate) > MAX_KEY_LENGTH:
        raise InvalidCredentials("malformed")
    match = _FORMAT.fullmatch(candidate)
    if match is None or match[1] != kind or kind not in KINDS:
        raise InvalidCredentials("malformed")
    body = candidate[:-_CHECK_LEN]
    if not hmac.compare_digest(_checksum(body), match[3]):
        raise InvalidCredentials("malformed")
    return hash_key(candidate)
