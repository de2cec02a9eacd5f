"""The AEAD recipe: known answers, and every way a ciphertext can be moved or tampered with
fails with the same opaque error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantguard.crypto import aead
from tenantguard.errors import DecryptionFailed

VECTORS = Path(__file__).parent.parent / "vectors" / "wycheproof" / "aes_gcm_test.json"
TENANT = UUID("22222222-2222-4222-8222-222222222222")


def _cases() -> list[dict[str, Any]]:
    """The Wycheproof cases in the recipe's parameters: 256-bit key, 96-bit nonce, 128-bit tag."""
    data = json.loads(VECTORS.read_text())
    return [
        case
        for group in data["testGroups"]
        if (group["keySize"], group["ivSize"], group["tagSize"]) == (256, 96, 128)
        for case in group["tests"]
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"tc{c['tcId']}")
def test_wycheproof_aes_256_gcm(case: dict[str, Any]) -> None:
    """Valid vectors decrypt to their message; invalid ones are refused."""
    key = AESGCM(bytes.fromhex(case["key"]))
    iv, aad = bytes.fromhex(case["iv"]), bytes.fromhex(case["aad"])
    sealed = bytes.fromhex(case["ct"]) + bytes.fromhex(case["tag"])
    if case["result"] == "valid":
        assert key.decrypt(iv, sealed, aad) == bytes.fromhex(case["msg"])
    else:
        with pytest.raises(InvalidTag):
            key.decrypt(iv, sealed, aad)


def test_wycheproof_cases_are_present() -> None:
    assert len(_cases()) >= 60


KEY = AESGCM(bytes(range(32)))
BINDING = aead.Binding(TENANT, "column:t.c", "row-1", b"extra")


def test_round_trip_and_header() -> None:
    """A sealed value opens with its binding and names its key version in the header."""
    sealed = aead.seal(KEY, 7, b"hello", BINDING)
    assert sealed[:2] == b"tg"
    assert aead.key_version_of(sealed) == 7
    assert aead.open_sealed(KEY, sealed, BINDING) == b"hello"


def test_nonces_are_fresh() -> None:
    assert aead.seal(KEY, 1, b"same", BINDING) != aead.seal(KEY, 1, b"same", BINDING)


@pytest.mark.parametrize(
    "other",
    [
        aead.Binding(uuid4(), "column:t.c", "row-1", b"extra"),
        aead.Binding(TENANT, "column:t.other", "row-1", b"extra"),
        aead.Binding(TENANT, "column:t.c", "row-2", b"extra"),
        aead.Binding(TENANT, "column:t.c", "row-1", b""),
    ],
    ids=["other tenant", "other purpose", "other record", "other aad"],
)
def test_wrong_binding_fails_opaquely(other: aead.Binding) -> None:
    """Moved to another tenant, column, row or context: the same opaque error."""
    sealed = aead.seal(KEY, 1, b"secret", BINDING)
    with pytest.raises(DecryptionFailed) as caught:
        aead.open_sealed(KEY, sealed, other)
    assert caught.value.detail == DecryptionFailed.default_detail


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: _flip(s, 0),  # magic
        lambda s: _flip(s, 2),  # format
        lambda s: _flip(s, 6),  # key version
        lambda s: _flip(s, aead.HEADER_LEN),  # nonce
        lambda s: _flip(s, aead.HEADER_LEN + aead.NONCE_LEN),  # ciphertext
        lambda s: _flip(s, len(s) - 1),  # tag
        lambda s: s[:-1],  # truncated
        lambda s: s + b"\x00",  # extended
        lambda _s: b"",  # empty
    ],
    ids=[
        "magic",
        "format",
        "version",
        "nonce",
        "ciphertext",
        "tag",
        "truncated",
        "extended",
        "empty",
    ],
)
def test_any_tampering_fails_opaquely(tamper: Any) -> None:
    sealed = aead.seal(KEY, 1, b"secret", BINDING)
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(KEY, tamper(sealed), BINDING)


def test_wrong_key_fails_opaquely() -> None:
    sealed = aead.seal(KEY, 1, b"secret", BINDING)
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(AESGCM(bytes(32)), sealed, BINDING)
