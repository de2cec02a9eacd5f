"""Key-encryption keys: the port, a local key-file provider and a PKCS#11 (HSM) provider.

A KEK wraps the per-tenant data keys; it never touches data. KEKs are versioned: the newest
wraps, every version still unwraps, and `rotate()` adds a version (`tenantguard keys rewrap`
then moves every data key onto it). Wrapping is AES-256-GCM with the data key's identity
(tenant, purpose, version) as associated data, so a wrapped key moved to another row does not
unwrap. The wrapped form is `nonce (12) | ciphertext and tag`.

- `local`: 32 random bytes per version in `<data_root>/keys/kek-NNNN.key`, mode 0600, in a
  0700 directory. A key file readable by group or others, or owned by another user, refuses to
  load: a KEK that has leaked to other local users is no KEK.
- `pkcs11`: AES-256 keys generated inside the token as sensitive and never extractable,
  labelled `tenantguard-kek-NNNN`; wrapping runs inside the token (CKM_AES_GCM).

Any failure to reach or use the provider is `KeyProviderUnavailable`: fail closed, nothing
written. A wrapped key that does not authenticate is `DecryptionFailed`.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from uuid import uuid4

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from tenantguard.errors import ConfigurationError, DecryptionFailed, KeyProviderUnavailable

NONCE_LEN = 12
_VERSION = r"([0-9]{4,9})"  # ASCII digits only: one spelling per version
_LOCAL_FILE = re.compile(r"kek-" + _VERSION + r"\.key")
_ROTATION_ATTEMPTS = 16
PKCS11_LABEL = "tenantguard-kek-{:04d}"
T = TypeVar("T")


class KekProvider(Protocol):
    """Wraps and unwraps data keys. Ids name a KEK version, never its material."""

    def active_id(self) -> str: ...

    def wrap(self, key: bytes, *, context: bytes) -> tuple[str, bytes]: ...

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: bytes) -> bytes: ...

    def rotate(self) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class KekConfig:
    provider: Literal["local", "pkcs11"]
    local_dir: Path
    pkcs11_module: Path | None = None
    pkcs11_token: str | None = None
    pkcs11_pin: SecretStr | None = None


def open_kek(config: KekConfig, *, create: bool) -> KekProvider:
    """The provider `config` names. With `create`, a first KEK is made if none exists (local:
    on first start; pkcs11: only by `tenantguard init`)."""
    if config.provider == "local":
        return LocalKek(config.local_dir, create=create)
    if config.pkcs11_module is None or config.pkcs11_token is None or config.pkcs11_pin is None:
        raise ConfigurationError(
            "The pkcs11 key provider needs TENANTGUARD_PKCS11_MODULE, _TOKEN and _PIN."
        )
    return Pkcs11Kek(config.pkcs11_module, config.pkcs11_token, config.pkcs11_pin, create=create)


def _pick(keys: dict[int, T], prefix: str, kek_id: str, reload: Callable[[], None]) -> T:
    """The KEK version `kek_id` names (`<prefix>-NNNN`). A version this process has not seen
    may have been added by another (`keys rewrap`): look again once, then fail closed."""
    match = re.fullmatch(prefix + "-" + _VERSION, kek_id)
    if match is None:
        raise KeyProviderUnavailable("A key-encryption key is not available.")
    version = int(match[1])
    if version not in keys:
        reload()
    key = keys.get(version)
    if key is None:
        raise KeyProviderUnavailable("A key-encryption key is not available.")
    return key


def _gcm_wrap(kek: AESGCM, key: bytes, context: bytes) -> bytes:
    nonce = os.urandom(NONCE_LEN)
    return nonce + kek.encrypt(nonce, key, context)


def _gcm_unwrap(kek: AESGCM, wrapped: bytes, context: bytes) -> bytes:
    try:
        return kek.decrypt(wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], context)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed() from exc


class LocalKek:
    """KEK versions as key files under one private directory."""

    def __init__(self, directory: Path, *, create: bool) -> None:
        self._dir = directory
        self._keys: dict[int, AESGCM] = {}
        if create:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._load()
        if not self._keys:
            if not create:
                raise KeyProviderUnavailable(
                    "No key-encryption key exists; run `tenantguard init`."
                )
            self.rotate()

    def _load(self) -> None:
        if not self._dir.is_dir():
            return
        self._check_private(self._dir, directory=True)
        for path in sorted(self._dir.iterdir()):
            match = _LOCAL_FILE.fullmatch(path.name)
            if match is None or int(match[1]) in self._keys:
                continue
            self._keys[int(match[1])] = AESGCM(self._read_key(path))

    @classmethod
    def _read_key(cls, path: Path) -> bytes:
        """Read a key file without following links, checking what was opened (not a name that
        could be swapped between the check and the read): a private regular file of 32 bytes."""
        cls._check_private(path, directory=False)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise ConfigurationError(f"Key file {path.name} cannot be opened safely.") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigurationError(f"Key file {path.name} is not a regular file.")
            if info.st_mode & 0o077 or info.st_uid != os.geteuid():
                raise ConfigurationError(f"Key file {path.name} is not private to this user.")
            material = os.read(fd, 33)
        finally:
            os.close(fd)
        if len(material) != 32:
            raise ConfigurationError(f"Key file {path.name} is not a 256-bit key.")
        return material

    @staticmethod
    def _check_private(path: Path, *, directory: bool) -> None:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            raise ConfigurationError(f"{path} is a symbolic link; refusing to use it for keys.")
        if info.st_mode & 0o077:
            kind = "directory" if directory else "file"
            raise ConfigurationError(
                f"Key {kind} {path} is accessible by group or others; chmod it to "
                f"{'0700' if directory else '0600'}."
            )
        if info.st_uid != os.geteuid():
            raise ConfigurationError(f"Key file {path} belongs to another user.")

    def active_id(self) -> str:
        return f"local-{max(self._keys):04d}"

    def _version(self, kek_id: str) -> AESGCM:
        return _pick(self._keys, "local", kek_id, self._load)

    def wrap(self, key: bytes, *, context: bytes) -> tuple[str, bytes]:
        kek_id = self.active_id()
        return kek_id, _gcm_wrap(self._version(kek_id), key, context)

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        return _gcm_unwrap(self._version(kek_id), wrapped, context)

    def rotate(self) -> str:
        """Add a KEK version. Another process may be rotating too: the file is created with
        O_EXCL, and a version someone else took is skipped, never overwritten."""
        for _ in range(_ROTATION_ATTEMPTS):
            self._load()
            version = max(self._keys, default=0) + 1
            path = self._dir / f"kek-{version:04d}.key"
            material = AESGCM.generate_key(bit_length=256)
            # Write a private temporary file, then publish it with link(): atomic, and it fails
            # rather than overwrite, so nobody ever reads a half-written key or loses one.
            staging = self._dir / f".staging-{uuid4().hex}"
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, material)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(staging, path)
            except FileExistsError:
                continue
            finally:
                staging.unlink()
            self._keys[version] = AESGCM(material)
            return f"local-{version:04d}"
        raise KeyProviderUnavailable("Could not add a key-encryption key; try again.")

    def close(self) -> None:
        self._keys.clear()


class Pkcs11Kek:
    """KEK versions as non-extractable AES keys inside a PKCS#11 token."""

    def __init__(self, module: Path, token_label: str, pin: SecretStr, *, create: bool) -> None:
        import pkcs11  # noqa: PLC0415 (only with an HSM)

        self._p11 = pkcs11
        self._lock = threading.Lock()
        try:
            lib = pkcs11.lib(str(module))
            token = lib.get_token(token_label=token_label)
            self._session = token.open(user_pin=pin.get_secret_value(), rw=True)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise KeyProviderUnavailable() from exc
        self._keys: dict[int, Any] = {}
        try:
            self._start(create=create)
        except BaseException:
            self._session.close()  # a provider that did not start leaves no login behind
            raise

    def _start(self, *, create: bool) -> None:
        self._load()
        if not self._keys:
            if not create:
                raise KeyProviderUnavailable("No key-encryption key in the token; run init.")
            self.rotate()

    def _labelled(self) -> dict[int, list[Any]]:
        p11 = self._p11
        found: dict[int, list[Any]] = {}
        with _hsm_errors(p11):
            for key in self._session.get_objects({p11.Attribute.CLASS: p11.ObjectClass.SECRET_KEY}):
                match = re.fullmatch("tenantguard-kek-" + _VERSION, str(key[p11.Attribute.LABEL]))
                if match is not None:
                    found.setdefault(int(match[1]), []).append(key)
        return found

    def _load(self) -> None:
        """Every KEK version in the token. A key under our label that could ever be read out,
        or two keys under one label, stop the provider: neither can be trusted to wrap."""
        p11 = self._p11
        with self._lock:
            labelled = self._labelled()
            for version, keys in labelled.items():
                if len(keys) != 1:
                    raise ConfigurationError(f"Two keys in the token are KEK version {version}.")
                key = keys[0]
                with _hsm_errors(p11):
                    safe = (
                        key[p11.Attribute.EXTRACTABLE] is False
                        and key[p11.Attribute.NEVER_EXTRACTABLE] is True
                        and key[p11.Attribute.SENSITIVE] is True
                        and key[p11.Attribute.ALWAYS_SENSITIVE] is True
                    )
                if not safe:
                    raise ConfigurationError(
                        f"KEK version {version} in the token could be extracted; refusing it."
                    )
                self._keys[version] = key

    def active_id(self) -> str:
        return f"pkcs11-{max(self._keys):04d}"

    def _version(self, kek_id: str) -> Any:
        return _pick(self._keys, "pkcs11", kek_id, self._load)

    def wrap(self, key: bytes, *, context: bytes) -> tuple[str, bytes]:
        from pkcs11.mechanisms import GCMParams  # noqa: PLC0415

        kek_id = self.active_id()
        nonce = os.urandom(NONCE_LEN)
        with self._lock, _hsm_errors(self._p11):
            sealed = self._version(kek_id).encrypt(
                key,
                mechanism=self._p11.Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, context, 128),
            )
        return kek_id, nonce + bytes(sealed)

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        from pkcs11.mechanisms import GCMParams  # noqa: PLC0415

        key = self._version(kek_id)
        with self._lock:
            try:
                return bytes(
                    key.decrypt(
                        wrapped[NONCE_LEN:],
                        mechanism=self._p11.Mechanism.AES_GCM,
                        mechanism_param=GCMParams(wrapped[:NONCE_LEN], context, 128),
                    )
                )
            except (
                self._p11.exceptions.GeneralError,
                self._p11.exceptions.EncryptedDataInvalid,
                self._p11.exceptions.EncryptedDataLenRange,
            ) as exc:
                raise DecryptionFailed() from exc
            except self._p11.PKCS11Error as exc:
                raise KeyProviderUnavailable() from exc

    def rotate(self) -> str:
        """Add a KEK version inside the token. PKCS#11 cannot create-if-absent, so: read what
        exists, generate the next version, then look again; if another process made the same
        version meanwhile, destroy ours and try the next one."""
        p11 = self._p11
        template = {
            p11.Attribute.EXTRACTABLE: False,
            p11.Attribute.SENSITIVE: True,
            p11.Attribute.ENCRYPT: True,
            p11.Attribute.DECRYPT: True,
            p11.Attribute.WRAP: False,
            p11.Attribute.UNWRAP: False,
        }
        for _ in range(_ROTATION_ATTEMPTS):
            self._load()
            with self._lock:
                version = max(self._labelled(), default=0) + 1
                with _hsm_errors(p11):
                    key = self._session.generate_key(
                        p11.KeyType.AES,
                        256,
                        label=PKCS11_LABEL.format(version),
                        store=True,
                        template=template,
                    )
                if len(self._labelled().get(version, [])) == 1:
                    self._keys[version] = key
                    return f"pkcs11-{version:04d}"
                with _hsm_errors(p11):
                    key.destroy()
        raise KeyProviderUnavailable("Could not add a key-encryption key; try again.")

    def close(self) -> None:
        with self._lock:
            self._session.close()


@contextlib.contextmanager
def _hsm_errors(p11: Any) -> Iterator[None]:
    """Translate the binding's errors into `KeyProviderUnavailable`: fail closed."""
    try:
        yield
    except p11.PKCS11Error as exc:
        raise KeyProviderUnavailable() from exc
