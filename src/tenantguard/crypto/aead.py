"""AES-256-GCM with a versioned header and associated data that binds where a value belongs.

A sealed value reads `b"tg" | format (1 byte) | key version (4 bytes, big-endian) | nonce (12
bytes) | ciphertext and 16-byte tag`. The associated data is always, length-prefixed: the
header, the tenant, the purpose (which column or use), the record id, and whatever the caller
adds. So a ciphertext copied to another tenant, column or row, or relabelled with another key
version, does not open. Nonces are 96 random bits: under one key, stay well below 2^32 seals
(rotation does that).

Every failure to open is the same `DecryptionFailed`, with nothing in it that says why.
Threat stopped: a stolen database dump, and ciphertexts moved between tenants or rows.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantguard.errors import DecryptionFailed

MAGIC = b"tg"
FORMAT = 1
HEADER_LEN = len(MAGIC) + 1 + 4
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
_HEADER = struct.Struct(">2sBI")
_DOMAIN = b"tenantguard.aead.v1"


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a sealed value belongs. All of it is authenticated, none of it is stored."""

    tenant_id: UUID
    purpose: str
    record_id: str
    extra: bytes = b""

    def associated_data(self, header: bytes) -> bytes:
        parts = (
            _DOMAIN,
            header,
            self.tenant_id.bytes,
            self.purpose.encode(),
            self.record_id.encode(),
            self.extra,
        )
        return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def key_version_of(sealed: bytes) -> int:
    """The key version a sealed value names (for routing to the key); raises if malformed."""
    if len(sealed) < HEADER_LEN + NONCE_LEN + TAG_LEN:
        raise DecryptionFailed()
    magic, fmt, version = _HEADER.unpack_from(sealed)
    if magic != MAGIC or fmt != FORMAT or version < 1:
        raise DecryptionFailed()
    return int(version)


def seal(key: AESGCM, version: int, plaintext: bytes, binding: Binding) -> bytes:
    header = _HEADER.pack(MAGIC, FORMAT, version)
    nonce = os.urandom(NONCE_LEN)
    return header + nonce + key.encrypt(nonce, plaintext, binding.associated_data(header))


def open_sealed(key: AESGCM, sealed: bytes, binding: Binding) -> bytes:
    key_version_of(sealed)  # validates the header's form
    view = memoryview(sealed)  # no copy of a large payload before decryption
    header = sealed[:HEADER_LEN]
    nonce = view[HEADER_LEN : HEADER_LEN + NONCE_LEN]
    try:
        return key.decrypt(nonce, view[HEADER_LEN + NONCE_LEN :], binding.associated_data(header))
    except InvalidTag as exc:
        raise DecryptionFailed() from exc


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_LEN * 8)
