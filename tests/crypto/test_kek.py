"""Key-encryption keys: the local key file and a real PKCS#11 token (SoftHSM2)."""

from __future__ import annotations

import os
from pathlib import Path

import pkcs11
import pytest
from pydantic import SecretStr

from tenantguard.crypto.kek import KekProvider, LocalKek, Pkcs11Kek
from tenantguard.errors import ConfigurationError, DecryptionFailed, KeyProviderUnavailable
from tests.crypto.conftest import Token

DATA_KEY = bytes(range(32))


def _round_trip(kek: KekProvider) -> None:
    kek_id, wrapped = kek.wrap(DATA_KEY, context=b"tenant-a|purpose|1")
    assert DATA_KEY not in wrapped
    assert kek.unwrap(kek_id, wrapped, context=b"tenant-a|purpose|1") == DATA_KEY
    with pytest.raises(DecryptionFailed):
        kek.unwrap(kek_id, wrapped, context=b"tenant-b|purpose|1")


def test_local_kek_is_created_private(tmp_path: Path) -> None:
    """First start creates a 256-bit key file, 0600, in a 0700 directory."""
    kek = LocalKek(tmp_path / "keys", create=True)
    path = tmp_path / "keys" / "kek-0001.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert len(path.read_bytes()) == 32
    _round_trip(kek)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_local_kek_readable_by_others_refuses_to_load(tmp_path: Path, mode: int) -> None:
    """A key file readable by group or others is refused, not used."""
    LocalKek(tmp_path / "keys", create=True)
    (tmp_path / "keys" / "kek-0001.key").chmod(mode)
    with pytest.raises(ConfigurationError, match="group or others"):
        LocalKek(tmp_path / "keys", create=False)


def test_local_kek_open_directory_refuses(tmp_path: Path) -> None:
    LocalKek(tmp_path / "keys", create=True)
    (tmp_path / "keys").chmod(0o755)
    with pytest.raises(ConfigurationError, match="group or others"):
        LocalKek(tmp_path / "keys", create=False)


def test_missing_local_kek_fails_closed_without_create(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderUnavailable):
        LocalKek(tmp_path / "keys", create=False)


def test_rotation_adds_a_version_and_old_versions_still_unwrap(tmp_path: Path) -> None:
    """The newest KEK wraps; older ones keep unwrapping what they wrapped."""
    kek = LocalKek(tmp_path / "keys", create=True)
    old_id, old_wrapped = kek.wrap(DATA_KEY, context=b"c")
    assert kek.rotate() == "local-0002"
    new_id, _ = kek.wrap(DATA_KEY, context=b"c")
    assert (old_id, new_id) == ("local-0001", "local-0002")
    reopened = LocalKek(tmp_path / "keys", create=False)
    assert reopened.unwrap(old_id, old_wrapped, context=b"c") == DATA_KEY
    assert not os.path.exists(tmp_path / "keys" / "kek-0003.key")


def test_unknown_kek_id_fails_closed(tmp_path: Path) -> None:
    kek = LocalKek(tmp_path / "keys", create=True)
    _, wrapped = kek.wrap(DATA_KEY, context=b"c")
    with pytest.raises(KeyProviderUnavailable):
        kek.unwrap("local-0009", wrapped, context=b"c")


def test_pkcs11_kek_wraps_inside_the_token(softhsm: Token) -> None:
    """Through a real SoftHSM2 token: wrap and unwrap, bound to their context."""
    kek = Pkcs11Kek(softhsm.module, softhsm.label, softhsm.pin, create=True)
    try:
        _round_trip(kek)
        assert kek.active_id().startswith("pkcs11-")
    finally:
        kek.close()


def test_pkcs11_kek_is_not_extractable(softhsm: Token) -> None:
    """The KEK is sensitive and never extractable: its value cannot be read out."""
    kek = Pkcs11Kek(softhsm.module, softhsm.label, softhsm.pin, create=True)
    try:
        key = kek._version(kek.active_id())  # reaching in on purpose, to inspect the token key
        assert key[pkcs11.Attribute.EXTRACTABLE] is False
        assert key[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
        assert key[pkcs11.Attribute.SENSITIVE] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[pkcs11.Attribute.VALUE]
    finally:
        kek.close()


def test_pkcs11_rotation_keeps_old_versions(softhsm: Token) -> None:
    kek = Pkcs11Kek(softhsm.module, softhsm.label, softhsm.pin, create=True)
    try:
        old_id, wrapped = kek.wrap(DATA_KEY, context=b"c")
        new_id = kek.rotate()
        assert new_id != old_id
        assert kek.unwrap(old_id, wrapped, context=b"c") == DATA_KEY
    finally:
        kek.close()


def test_pkcs11_wrong_pin_fails_closed(softhsm: Token) -> None:
    with pytest.raises(KeyProviderUnavailable):
        Pkcs11Kek(softhsm.module, softhsm.label, SecretStr("00000000"), create=False)


def test_pkcs11_missing_token_fails_closed(softhsm: Token) -> None:
    with pytest.raises(KeyProviderUnavailable):
        Pkcs11Kek(softhsm.module, "no-such-token", softhsm.pin, create=False)


def test_pkcs11_missing_module_fails_closed(softhsm: Token, tmp_path: Path) -> None:
    with pytest.raises(KeyProviderUnavailable):
        Pkcs11Kek(tmp_path / "nope.so", softhsm.label, softhsm.pin, create=False)
