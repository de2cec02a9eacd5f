"""Signed checkpoints of a tenant's audit log, in the C2SP signed-note checkpoint form. Pure.

A checkpoint commits to a tree size and its RFC 6962 root:

    <origin>                      e.g. tenantguard/audit/<tenant id>
    <tree size>
    <root hash, base64>
    time <RFC 3339 UTC>           an extension line: when it was signed
                                  (a blank line ends the note's text)
    — <key name> <base64(key hash[4] || Ed25519 signature[64])>

The signature covers the text up to and including the line before the blank one; the 4-byte
key hash is SHA-256(key name || "\\n" || 0x01 || public key)[:4], as C2SP signed-note defines
for Ed25519, so witnesses and generic note verifiers can check it without tenantguard.

Threat stopped: a log rewritten or rolled back after it was checkpointed; a checkpoint forged
or signed by a key that was not the platform's at that time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tenantguard.audit.merkle import HASH_SIZE
from tenantguard.crypto.signing import PublicKey, SigningKey
from tenantguard.errors import AuditVerificationFailed

_ED25519 = b"\x01"
_DASH = "\u2014"  # the em dash that starts a signature line
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
MAX_NOTE = 4096


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    signed_at: datetime

    def text(self) -> str:
        """The signed body: every line up to the blank line, each ending in a newline."""
        moment = self.signed_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        root = base64.b64encode(self.root_hash).decode()
        return f"{self.origin}\n{self.tree_size}\n{root}\ntime {moment}\n"


def origin_of(base: str, tenant_id: object) -> str:
    return f"{base}/audit/{tenant_id}"


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key).digest()[:4]


def sign_text(text: str, key: SigningKey, *, key_name: str) -> str:
    """A signed note of `text` (non-empty lines, each ending in a newline) under `key`."""
    if not key_name or any(c.isspace() or c == "+" for c in key_name):
        raise ValueError("a note key name has no spaces and no '+'")
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise ValueError("a note's text is non-empty lines, each ending in a newline")
    signature = key_hash(key_name, key.public_bytes()) + key.sign(text.encode())
    return f"{text}\n{_DASH} {key_name} {base64.b64encode(signature).decode()}\n"


def sign(checkpoint: Checkpoint, key: SigningKey, *, key_name: str) -> str:
    """The signed note of `checkpoint` under the platform's active key."""
    return sign_text(checkpoint.text(), key, key_name=key_name)


def _failed(why: str, what: str = "checkpoint") -> AuditVerificationFailed:
    return AuditVerificationFailed(f"The {what} does not verify: {why}.")


def split_note(note: str, *, what: str = "checkpoint") -> tuple[str, list[tuple[str, bytes]]]:
    """The signed text of a note and its signature lines as (key name, signature bytes).
    Nothing here is trusted yet: `check_signatures` checks them."""
    if len(note) > MAX_NOTE or not note.endswith("\n") or "\n\n" not in note:
        raise _failed("it is not a signed note", what)
    text, _, signatures = note.partition("\n\n")
    text += "\n"
    found: list[tuple[str, bytes]] = []
    for line in signatures.split("\n")[:-1]:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise _failed("a signature line is malformed", what)
        try:
            found.append((parts[1], base64.b64decode(parts[2], validate=True)))
        except binascii.Error as exc:
            raise _failed("a signature line is malformed", what) from exc
    if not found:
        raise _failed("it carries no signature", what)
    return text, found


def parse(note: str) -> tuple[Checkpoint, list[tuple[str, bytes]], str]:
    """The checkpoint, its signature lines as (key name, signature bytes), and the signed text.
    Nothing here is trusted yet: `verify` checks the signatures."""
    text, found = split_note(note)
    lines = text.split("\n")[:-1]
    if len(lines) != 4 or not lines[3].startswith("time "):
        raise _failed("it does not have the checkpoint's four lines")
    origin, size_line, root_line, time_line = lines
    # ASCII decimal without leading zeros, below 2**63: one text per checkpoint (str.isdigit
    # would take superscripts and fullwidth digits, and int() accepts some of them).
    if not _SIZE.fullmatch(size_line) or int(size_line) >= 2**63:
        raise _failed("a line is malformed")
    try:
        root = base64.b64decode(root_line, validate=True)
        signed_at = datetime.strptime(time_line[5:], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (ValueError, binascii.Error) as exc:
        raise _failed("a line is malformed") from exc
    if len(root) != HASH_SIZE or not origin:
        raise _failed("a line is malformed")
    return Checkpoint(origin, int(size_line), root, signed_at), found, text


def check_signatures(
    text: str,
    signatures: Sequence[tuple[str, bytes]],
    keys: Sequence[PublicKey],
    *,
    key_name: str,
    at: datetime,
    what: str = "checkpoint",
) -> str:
    """Every signature under `key_name` must verify `text` with one of `keys` valid at `at`;
    there must be at least one. Signatures by other names are ignored (co-signatures).
    Returns the kid of the key that verified. Notes carry whole seconds, so a key counts
    from the start of the second it was made in."""
    ours = [sig for name, sig in signatures if name == key_name]
    if not ours:
        raise _failed("no signature by the platform's key", what)
    verified = ""
    for signature in ours:
        if len(signature) != 4 + 64:
            raise _failed("a signature has the wrong length", what)
        candidates = [
            k
            for k in keys
            if key_hash(key_name, k.public_key) == signature[:4]
            and k.created_at.replace(microsecond=0) <= at
            and (k.verify_until is None or at < k.verify_until)
        ]
        if not candidates:
            raise _failed("signed by an unknown key, or one not valid at its time", what)
        for key in candidates:
            try:
                Ed25519PublicKey.from_public_bytes(key.public_key).verify(
                    signature[4:], text.encode()
                )
                verified = key.kid
                break
            except InvalidSignature:
                continue
        else:
            raise _failed("a signature is wrong", what)
    return verified


def verify(
    note: str, keys: Sequence[PublicKey], *, key_name: str, origin: str | None = None
) -> Checkpoint:
    """The checkpoint of `note`, if a signature under `key_name` verifies with one of `keys`
    that was valid when the checkpoint says it was signed (and the origin is `origin`, when
    given). Signatures by other names are ignored (a witness's co-signature, say); one by our
    name under an unknown or out-of-window key fails the note."""
    return verify_with_kid(note, keys, key_name=key_name, origin=origin)[0]


def verify_with_kid(
    note: str, keys: Sequence[PublicKey], *, key_name: str, origin: str | None
) -> tuple[Checkpoint, str]:
    """`verify`, also naming the key that signed."""
    checkpoint, signatures, text = parse(note)
    if origin is not None and checkpoint.origin != origin:
        raise _failed("it is the checkpoint of another log")
    kid = check_signatures(text, signatures, keys, key_name=key_name, at=checkpoint.signed_at)
    return checkpoint, kid
