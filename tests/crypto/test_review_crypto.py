"""Adversarial review of envelope encryption: header and binding confusion, races, shredding,
key files, HSM labels, re-encryption and signing-key overlap.

Tests marked `xfail(strict=True)` demonstrate a defect; remove the marker with the fix.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, get_args
from uuid import UUID

import pkcs11
import psycopg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, TypeAdapter, ValidationError

from tenantguard.audit import list_events
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto import aead, signing
from tenantguard.crypto import keyring as keyring_module
from tenantguard.crypto.fields import EncryptedColumn, ReencryptResult, reencrypt
from tenantguard.crypto.kek import PKCS11_LABEL, LocalKek, Pkcs11Kek
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import secrets
from tenantguard.data.secrets import SECRET_VALUE
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import (
    ConfigurationError,
    DecryptionFailed,
    KeyProviderUnavailable,
    RequestInvalid,
    TenantGuardError,
)
from tenantguard.gateway.routes import model_providers as provider_routes
from tenantguard.gateway.routes import secrets as secret_routes
from tenantguard.testing import FakeClock
from tests.crypto.conftest import Token

TENANT = UUID("33333333-3333-4333-8333-333333333333")
KEY = AESGCM(bytes(range(32)))
DATA_KEY = bytes(range(32))


def ctx_of(tenant_id: UUID) -> TenantContext:
    return TenantContext(tenant_id, Principal("system", "review"), frozenset(), "review")


@pytest.fixture
def tenant(make_tenant: Callable[[str], NewTenant]) -> NewTenant:
    return make_tenant("review")


@pytest.fixture
def kek_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def ring(kek_dir: Path, clock: FakeClock) -> Keyring:
    return Keyring(LocalKek(kek_dir, create=True), clock=clock, cache_seconds=0)


def write(db: Database, ring: Keyring, tenant_id: UUID, name: str, value: bytes) -> None:
    with db.tenant_transaction(tenant_id) as tx:
        secrets.write(tx, ctx_of(tenant_id), ring, name, value, now=FakeClock().now())


def read(db: Database, ring: Keyring, tenant_id: UUID, name: str) -> bytes:
    with db.tenant_transaction(tenant_id) as tx:
        return secrets.read(tx, ctx_of(tenant_id), ring, name, use="review", now=FakeClock().now())


def stored(db: Database, tenant_id: UUID, name: str) -> bytes:
    """The current sealed value of secret `name`, as the database holds it."""
    with db.tenant_transaction(tenant_id) as tx:
        row = tx.execute(
            "SELECT v.value FROM tenantguard.secret_versions v JOIN tenantguard.secrets s"
            " ON s.tenant_id = v.tenant_id AND s.id = v.secret_id"
            " AND s.current_version = v.version WHERE s.name = %s AND s.deleted_at IS NULL",
            (name,),
        ).fetchone()
    assert row is not None
    assert isinstance(row[0], bytes)
    return row[0]


def relabel(sealed: bytes, *, fmt: int = aead.FORMAT, version: int) -> bytes:
    return aead.MAGIC + bytes([fmt]) + version.to_bytes(4, "big") + sealed[aead.HEADER_LEN :]


# -- the AEAD recipe ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sealed_as", "opened_as"),
    [
        (("ab", "c", b""), ("a", "bc", b"")),
        (("p", "r1", b"x"), ("p", "r", b"1x")),
        (("p", "", b"rx"), ("p", "rx", b"")),
        (("column:t.c", "1|2", b""), ("column:t.c|1", "2", b"")),
    ],
    ids=["purpose/record", "record/extra", "empty record", "pipe"],
)
def test_associated_data_is_injective(
    sealed_as: tuple[str, str, bytes], opened_as: tuple[str, str, bytes]
) -> None:
    """Bindings whose fields concatenate to the same bytes still authenticate differently."""
    first, second = aead.Binding(TENANT, *sealed_as), aead.Binding(TENANT, *opened_as)
    header = aead.seal(KEY, 1, b"", first)[: aead.HEADER_LEN]
    assert first.associated_data(header) != second.associated_data(header)
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(KEY, aead.seal(KEY, 1, b"secret", first), second)


# -- the keyring on PostgreSQL -----------------------------------------------------------------


def test_header_confusion_fails_opaquely_through_the_keyring(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """A stored value relabelled to version 0, to another live version, to a version beyond any
    integer column, or to another format, fails with `DecryptionFailed` only."""
    write(db, ring, tenant.tenant_id, "s", b"value")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.rotate(tx, ctx_of(tenant.tenant_id))
    sealed = stored(db, tenant.tenant_id, "s")
    forged = [
        relabel(sealed, version=0),
        relabel(sealed, version=2),
        relabel(sealed, version=2**31),
        relabel(sealed, version=2**32 - 1),
        relabel(sealed, fmt=0, version=1),
        relabel(sealed, fmt=2, version=1),
    ]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        secret_id = tx.execute("SELECT id FROM tenantguard.secrets WHERE name = 's'").fetchone()
        assert secret_id is not None
        for candidate in forged:
            with pytest.raises(DecryptionFailed):
                SECRET_VALUE.open(ring, tx, tenant.tenant_id, (secret_id[0], 1), candidate)
        assert SECRET_VALUE.open(ring, tx, tenant.tenant_id, (secret_id[0], 1), sealed) == b"value"


def test_ciphertext_does_not_open_under_another_purpose(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """A value sealed for one purpose does not open for another, same tenant, version and row."""
    ctx = ctx_of(tenant.tenant_id)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        sealed = ring.seal(tx, ctx, "review:a", b"value", record_id="row")
        ring.seal(tx, ctx, "review:b", b"other", record_id="row")  # creates review:b version 1
        with pytest.raises(DecryptionFailed):
            ring.open(tx, tenant.tenant_id, "review:b", sealed, record_id="row")
        assert ring.open(tx, tenant.tenant_id, "review:a", sealed, record_id="row") == b"value"


def test_first_key_created_by_a_racing_writer_is_used(
    db: Database, ring: Keyring, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another transaction commits the first data key while this one is creating it, the
    seal uses the committed key instead of failing."""
    original = Keyring._active_row
    raced: list[bool] = []
    ctx = ctx_of(tenant.tenant_id)

    def racing(conn: Any, tenant_id: UUID, purpose: str) -> tuple[int, str, bytes] | None:
        found = original(conn, tenant_id, purpose)
        if not raced:
            raced.append(True)
            with db.tenant_transaction(tenant_id) as other:  # another request, committed now
                ring.seal(other, ctx, purpose, b"first", record_id="r0")
        return found

    monkeypatch.setattr(Keyring, "_active_row", staticmethod(racing))
    with db.tenant_transaction(tenant.tenant_id) as tx:
        sealed = ring.seal(tx, ctx, "review:race", b"second", record_id="r1")
    assert raced
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert ring.open(tx, tenant.tenant_id, "review:race", sealed, record_id="r1") == b"second"


def test_destroyed_data_key_cannot_be_resurrected(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """Once shredded, a data key stays destroyed: restoring its old row is refused."""
    write(db, ring, tenant.tenant_id, "s", b"shredded-value")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        backup = tx.execute(
            "SELECT purpose, version, wrapped_key FROM tenantguard.data_keys"
        ).fetchall()
        ring.destroy_all(tx, ctx_of(tenant.tenant_id))
    try:
        with db.tenant_transaction(tenant.tenant_id) as tx:
            for purpose, version, wrapped in backup:
                tx.execute(
                    "UPDATE tenantguard.data_keys SET wrapped_key = %s, destroyed_at = NULL"
                    " WHERE purpose = %s AND version = %s",
                    (wrapped, purpose, version),
                )
    except TenantGuardError:
        pass  # refused: what must hold
    try:
        recovered: bytes | None = read(db, ring, tenant.tenant_id, "s")
    except DecryptionFailed:
        recovered = None
    assert recovered is None


def test_shredding_is_not_undone_by_rotation_rewrap_or_new_seals(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """After a shred, rotating, rewrapping under a new KEK and sealing again never bring a
    destroyed version back."""
    ctx = ctx_of(tenant.tenant_id)
    write(db, ring, tenant.tenant_id, "old", b"old")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.destroy_all(tx, ctx)
    write(db, ring, tenant.tenant_id, "new", b"new")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert ring.rotate(tx, ctx) == {SECRET_VALUE.purpose: 3}
    ring.kek.rotate()
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert ring.rewrap(tx, ctx) == 2  # versions 2 and 3, never the destroyed 1
        rows = tx.execute(
            "SELECT version, wrapped_key IS NULL, destroyed_at IS NOT NULL"
            " FROM tenantguard.data_keys ORDER BY version"
        ).fetchall()
    assert rows == [(1, True, True), (2, False, False), (3, False, False)]
    with pytest.raises(DecryptionFailed):
        read(db, ring, tenant.tenant_id, "old")
    assert read(db, ring, tenant.tenant_id, "new") == b"new"


def test_no_key_material_reaches_audit_payloads(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """Creating, rotating, rewrapping and destroying data keys audits ids and counts, never a
    wrapped or unwrapped key."""
    ctx = ctx_of(tenant.tenant_id)
    write(db, ring, tenant.tenant_id, "s", b"value")
    ring.kek.rotate()
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.rotate(tx, ctx)
        ring.rewrap(tx, ctx)
        keys = tx.execute(
            "SELECT purpose, version, kek_id, wrapped_key FROM tenantguard.data_keys"
        ).fetchall()
    material: list[bytes] = []
    for purpose, version, kek_id, wrapped in keys:
        assert isinstance(wrapped, bytes)
        context = keyring_module.wrap_context(tenant.tenant_id, str(purpose), int(str(version)))
        material += [wrapped, ring.kek.unwrap(str(kek_id), wrapped, context=context)]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.destroy_all(tx, ctx)
        events = list_events(tx, tenant_id=tenant.tenant_id, limit=1000)
    text = "".join(e.payload + e.target_id + e.reason for e in events)
    assert {"data_key.create", "data_key.rotate", "data_key.rewrap", "data_key.destroy"} <= {
        e.action for e in events
    }
    for blob in material:
        for form in (blob.hex(), base64.b64encode(blob), base64.urlsafe_b64encode(blob)):
            assert (form if isinstance(form, str) else form.decode()) not in text


def test_rotating_a_purpose_named_twice_rotates_and_audits_once(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """`keys rotate --purpose p --purpose p` makes one new version and one audit event."""
    ctx = ctx_of(tenant.tenant_id)
    write(db, ring, tenant.tenant_id, "s", b"value")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        try:
            ring.rotate(tx, ctx, [SECRET_VALUE.purpose, SECRET_VALUE.purpose])
        except RequestInvalid:
            return  # refusing the duplicate is also fine
        events = list_events(tx, tenant_id=tenant.tenant_id, limit=1000)
    assert [e.action for e in events].count("data_key.rotate") == 1


@pytest.mark.parametrize(
    ("table", "column", "python_accepts"),
    [
        ("data_keys", "purpose", lambda s: keyring_module._PURPOSE.fullmatch(s) is not None),
        (
            "secrets",
            "name",
            lambda s: _pydantic_accepts(_route_pattern(secret_routes.Name), s),
        ),
        (
            "model_providers",
            "name",
            lambda s: _pydantic_accepts(_route_pattern(provider_routes.Name), s),
        ),
    ],
    ids=["purpose", "secret name", "provider name"],
)
def test_python_and_database_agree_on_names(
    db: Database, table: str, column: str, python_accepts: Callable[[str], bool]
) -> None:
    """Every tricky name the Python validation accepts, the table's CHECK accepts, and the
    other way round: a mismatch would be a 500 or a silently different rule."""
    with db.system_transaction() as tx:
        row = tx.execute(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contype = 'c'"
            " AND c.conrelid = %s::regclass AND pg_get_constraintdef(c.oid) LIKE %s",
            (f"tenantguard.{table}", f"%({column} ~ %"),
        ).fetchone()
        assert row is not None
        pattern = str(row[0]).split(" ~ '", 1)[1].rsplit("'::text", 1)[0]
        tricky = [
            "a",
            "a\n",
            "\na",
            "a ",
            "A",
            "Ab",
            "é",
            "aé",
            "a\u0131",
            "a\u212a",
            "a٣",
            "a1",
            "1a",
            "-a",
            "a-",
            "a:b",
            "a.b",
            "a_b",
            "a/b",
            "a|b",
            "a" * 63,
            "a" * 64,
            "a" * 100,
            "a" * 101,
            "a" * 128,
            "a" * 129,
            "",
        ]
        for name in tricky:
            in_db = tx.execute("SELECT %s ~ %s", (name, pattern)).fetchone()
            assert in_db is not None
            assert python_accepts(name) is bool(in_db[0]), repr(name)


def _route_pattern(annotated: object) -> str:
    """The `pattern` FastAPI validates an `Annotated[str, Path(pattern=...)]` with."""
    return str(get_args(annotated)[1].metadata[0].pattern)


def _pydantic_accepts(pattern: str, value: str) -> bool:
    try:
        TypeAdapter(Annotated[str, Field(pattern=pattern)]).validate_python(value)
    except ValidationError:
        return False
    return True


# -- field encryption and re-encryption ----------------------------------------------------------


def test_values_of_rows_with_text_keys_do_not_open_in_each_other(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """A sealed column with text keys binds each value to its own row, whatever the keys hold."""
    column = EncryptedColumn("review_notes", "body", ("folder", "name"))
    ctx = ctx_of(tenant.tenant_id)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        sealed = column.seal(ring, tx, ctx, ("x|y", "z"), b"row one")
        try:
            moved: bytes | None = column.open(ring, tx, tenant.tenant_id, ("x", "y|z"), sealed)
        except DecryptionFailed:
            moved = None
    assert moved is None


def test_reencryption_gets_past_values_under_a_shredded_key(
    db: Database, ring: Keyring, tenant: NewTenant
) -> None:
    """After a shred, the values sealed since still move to the newest version; the unreadable
    ones are left as they are."""
    ctx = ctx_of(tenant.tenant_id)
    write(db, ring, tenant.tenant_id, "before-shred", b"gone")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.destroy_all(tx, ctx)
    write(db, ring, tenant.tenant_id, "after-shred", b"kept")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.rotate(tx, ctx)
    reencrypt(db, ring, ctx, SECRET_VALUE, clock=FakeClock())
    assert aead.key_version_of(stored(db, tenant.tenant_id, "after-shred")) == 3
    assert read(db, ring, tenant.tenant_id, "after-shred") == b"kept"


def _reencrypt_while_a_writer_replaces_the_value(
    db: Database, ring: Keyring, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch
) -> ReencryptResult:
    """Re-encrypt one value while another transaction commits a new value for its row."""
    ctx = ctx_of(tenant.tenant_id)
    write(db, ring, tenant.tenant_id, "s", b"old")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.rotate(tx, ctx)
        secret_id = tx.execute("SELECT id FROM tenantguard.secrets").fetchone()
    assert secret_id is not None
    original = EncryptedColumn.seal

    def seal_while_a_writer_commits(
        self: EncryptedColumn, keyring: Keyring, conn: Any, c: Any, keys: Any, value: bytes
    ) -> bytes:
        with db.tenant_transaction(tenant.tenant_id) as other:
            fresh = original(self, keyring, other, ctx, keys, b"new")
            other.execute(
                "UPDATE tenantguard.secret_versions SET value = %s WHERE secret_id = %s",
                (fresh, secret_id[0]),
            )
        return original(self, keyring, conn, c, keys, value)

    monkeypatch.setattr(EncryptedColumn, "seal", seal_while_a_writer_commits)
    result = reencrypt(db, ring, ctx, SECRET_VALUE, clock=FakeClock())
    monkeypatch.undo()
    return result


def test_reencryption_does_not_overwrite_a_value_rewritten_mid_batch(
    db: Database, ring: Keyring, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value replaced by a concurrent writer while its batch runs keeps the new value."""
    _reencrypt_while_a_writer_replaces_the_value(db, ring, tenant, monkeypatch)
    assert read(db, ring, tenant.tenant_id, "s") == b"new"


def test_reencryption_counts_only_rows_it_rewrote(
    db: Database, ring: Keyring, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result and the audit count only values this run actually replaced."""
    result = _reencrypt_while_a_writer_replaces_the_value(db, ring, tenant, monkeypatch)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list_events(tx, tenant_id=tenant.tenant_id, limit=1000)
    assert result.reencrypted == 0
    assert "data_key.reencrypt" not in [e.action for e in events]


# -- key-encryption keys: local key files --------------------------------------------------------


def test_a_kek_added_by_another_process_is_found(
    db: Database, kek_dir: Path, clock: FakeClock, tenant: NewTenant
) -> None:
    """A running keyring keeps opening values after the CLI rotated the KEK and rewrapped."""
    gateway = Keyring(LocalKek(kek_dir, create=True), clock=clock, cache_seconds=0)
    write(db, gateway, tenant.tenant_id, "s", b"value")
    cli = Keyring(LocalKek(kek_dir, create=False), clock=clock)
    cli.kek.rotate()
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert cli.rewrap(tx, ctx_of(tenant.tenant_id)) == 1
    assert read(db, gateway, tenant.tenant_id, "s") == b"value"


def _private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _symlinked_key(keys: Path) -> None:
    target = keys.parent / "elsewhere.key"
    _private_file(target, os.urandom(32))
    (keys / "kek-0002.key").symlink_to(target)


def _foreign_key(keys: Path) -> None:
    _private_file(keys / "kek-0002.key", os.urandom(32))
    os.chown(keys / "kek-0002.key", 54321, 54321)


def _foreign_directory(keys: Path) -> None:
    os.chown(keys, 54321, 54321)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_symlinked_key, "symbolic link"),
        (_foreign_key, "another user"),
        (_foreign_directory, "another user"),
        (lambda keys: _private_file(keys / "kek-0002.key", os.urandom(31)), "256-bit"),
        (lambda keys: _private_file(keys / "kek-0002.key", os.urandom(33)), "256-bit"),
        (lambda keys: _private_file(keys / "kek-0002.key", b""), "256-bit"),
        (lambda keys: (keys / "kek-0001.key").chmod(0o620), "group or others"),
        (lambda keys: keys.chmod(0o701), "group or others"),
    ],
    ids=[
        "symlink",
        "file of another user",
        "directory of another user",
        "short",
        "long",
        "empty",
        "group-writable",
        "dir others-x",
    ],
)
def test_unsafe_key_files_refuse_to_load(
    kek_dir: Path, tamper: Callable[[Path], object], message: str
) -> None:
    """A symlinked, foreign-owned, wrongly sized or exposed key file is refused, not used."""
    if os.geteuid() != 0 and "another user" in message:
        pytest.skip("changing a file's owner needs root")
    LocalKek(kek_dir, create=True)
    tamper(kek_dir)
    with pytest.raises(ConfigurationError, match=message):
        LocalKek(kek_dir, create=False)


def test_a_key_path_that_is_not_a_regular_file_is_refused(kek_dir: Path) -> None:
    """Only regular files are key files; anything else is a ConfigurationError."""
    LocalKek(kek_dir, create=True)
    (kek_dir / "kek-0002.key").mkdir(mode=0o700)
    with pytest.raises(ConfigurationError):
        LocalKek(kek_dir, create=False)


def test_key_files_stay_private_under_a_permissive_umask(tmp_path: Path) -> None:
    """With umask 000 the key directory is still 0700 and every key file 0600."""
    previous = os.umask(0)
    try:
        kek = LocalKek(tmp_path / "deep" / "keys", create=True)
        kek.rotate()
    finally:
        os.umask(previous)
    keys = tmp_path / "deep" / "keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert sorted(p.stat().st_mode & 0o777 for p in keys.iterdir()) == [0o600, 0o600]
    LocalKek(keys, create=False)


def test_kek_versions_beyond_9999_still_work(kek_dir: Path) -> None:
    """Rotation past version 9999 yields a KEK that wraps now and unwraps after a restart."""
    LocalKek(kek_dir, create=True)
    _private_file(kek_dir / "kek-9999.key", os.urandom(32))
    kek = LocalKek(kek_dir, create=False)
    kek.rotate()
    kek_id, wrapped = kek.wrap(DATA_KEY, context=b"c")
    assert LocalKek(kek_dir, create=False).unwrap(kek_id, wrapped, context=b"c") == DATA_KEY


# -- key-encryption keys: PKCS#11 ----------------------------------------------------------------

_ROTATE_AND_WRAP = """
import sys
from pathlib import Path
from pydantic import SecretStr
from tenantguard.crypto.kek import Pkcs11Kek
kek = Pkcs11Kek(Path(sys.argv[1]), sys.argv[2], SecretStr(sys.argv[3]), create=False)
try:
    kek.rotate()
    kek_id, wrapped = kek.wrap(bytes(range(32)), context=b"review")
    print(kek_id, wrapped.hex())
finally:
    kek.close()
"""

_UNWRAP = """
import sys
from pathlib import Path
from pydantic import SecretStr
from tenantguard.crypto.kek import Pkcs11Kek
from tenantguard.errors import TenantGuardError
kek = Pkcs11Kek(Path(sys.argv[1]), sys.argv[2], SecretStr(sys.argv[3]), create=False)
try:
    for kek_id, wrapped in zip(sys.argv[4::2], sys.argv[5::2]):
        try:
            ok = kek.unwrap(kek_id, bytes.fromhex(wrapped), context=b"review") == bytes(range(32))
        except TenantGuardError:
            ok = False
        print("ok" if ok else "failed")
finally:
    kek.close()
"""

_DESTROY = """
import sys
from pathlib import Path
import pkcs11
from pydantic import SecretStr
from tenantguard.crypto.kek import PKCS11_LABEL, Pkcs11Kek
kek = Pkcs11Kek(Path(sys.argv[1]), sys.argv[2], SecretStr(sys.argv[3]), create=False)
try:
    for kek_id in set(sys.argv[4:]):
        label = PKCS11_LABEL.format(int(kek_id.rsplit("-", 1)[1]))
        for key in kek._session.get_objects({pkcs11.Attribute.LABEL: label}):
            key.destroy()
finally:
    kek.close()
"""


def _in_another_process(script: str, token: Token, *args: str) -> list[str]:
    """Run `script` in a fresh interpreter (another process with its own HSM session)."""
    done = subprocess.run(  # noqa: S603 (our own script and arguments)
        [
            sys.executable,
            "-c",
            script,
            str(token.module),
            token.label,
            token.pin.get_secret_value(),
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return done.stdout.split()


def test_pkcs11_rotations_in_two_processes_both_stay_usable(softhsm: Token) -> None:
    """When another process rotates the HSM KEK after this one started, and then this one
    rotates too, a fresh provider unwraps what each of them wrapped."""
    here = Pkcs11Kek(softhsm.module, softhsm.label, softhsm.pin, create=True)
    created: list[str] = []
    try:
        theirs = _in_another_process(_ROTATE_AND_WRAP, softhsm)
        created.append(theirs[0])
        created.append(here.rotate())
        ours_id, ours = here.wrap(DATA_KEY, context=b"review")
    finally:
        here.close()
    try:
        verdicts = _in_another_process(_UNWRAP, softhsm, *theirs, ours_id, ours.hex())
    finally:
        _in_another_process(_DESTROY, softhsm, *created)
    assert verdicts == ["ok", "ok"]


def _destroy_labelled(token: Token, label: str) -> None:
    """Remove this test's objects from the session-wide token (no provider may be open)."""
    lib = pkcs11.lib(str(token.module))
    with lib.get_token(token_label=token.label).open(
        user_pin=token.pin.get_secret_value(), rw=True
    ) as session:
        for key in session.get_objects({pkcs11.Attribute.LABEL: label}):
            key.destroy()


def test_pkcs11_extractable_key_is_never_used_as_a_kek(softhsm: Token) -> None:
    """A key in the token whose value could be read out is never loaded as a KEK."""
    probe = Pkcs11Kek(softhsm.module, softhsm.label, softhsm.pin, create=True)
    planted = PKCS11_LABEL.format(int(probe.active_id().rsplit("-", 1)[1]) + 1)
    probe.close()
    lib = pkcs11.lib(str(softhsm.module))
    with lib.get_token(token_label=softhsm.label).open(
        user_pin=softhsm.pin.get_secret_value(), rw=True
    ) as session:
        session.generate_key(
            pkcs11.KeyType.AES,
            256,
            label=planted,
            store=True,
            template={pkcs11.Attribute.EXTRACTABLE: True, pkcs11.Attribute.SENSITIVE: False},
        )
    try:
        try:
            kek = Pkcs11Kek(softhsm.module, softhsm.label, softhsm.pin, create=False)
        except (ConfigurationError, KeyProviderUnavailable):
            return  # refusing to start is also fine
        try:
            active = kek._version(kek.active_id())
            extractable = active[pkcs11.Attribute.EXTRACTABLE]
            sensitive = active[pkcs11.Attribute.SENSITIVE]
        finally:
            kek.close()
    finally:
        _destroy_labelled(softhsm, planted)
    assert extractable is False
    assert sensitive is True


# -- signing keys --------------------------------------------------------------------------------

PLATFORM = ctx_of(PLATFORM_TENANT_ID)


@pytest.fixture
def platform_ring(db: Database, ring: Keyring) -> Iterator[Keyring]:
    """The platform realm with its data keys shredded and signing keys retired (the realm
    outlives tests, each of which brings its own KEK); the keys a test makes are retired after
    it, so that no later test sees them verifying."""
    retire = (
        "UPDATE tenantguard.signing_keys SET superseded_at = created_at,"
        " verify_until = created_at WHERE superseded_at IS NULL OR verify_until > created_at"
    )
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        ring.destroy_all(tx, PLATFORM)
        tx.execute(retire)
    yield ring
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        tx.execute(retire)


def test_rotations_inside_an_overlap_keep_each_keys_own_window(
    db: Database, platform_ring: Keyring, clock: FakeClock
) -> None:
    """Two rotations within one overlap: each retired key verifies exactly until its own end
    (end exclusive), and the second rotation does not cut the first key's window short."""
    ring, t0 = platform_ring, clock.now()
    signatures: dict[str, bytes] = {}
    kids: list[str] = []
    for offset in (timedelta(0), timedelta(hours=1), timedelta(minutes=90)):
        with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            kid = signing.rotate(tx, PLATFORM, ring, now=t0 + offset, overlap=timedelta(hours=2))
            signatures[kid] = signing.active(tx, ring).sign(b"m")
        kids.append(kid)
    first, second, third = kids
    expectations = {
        t0 + timedelta(minutes=179): {first, second, third},
        t0 + timedelta(hours=3): {second, third},
        t0 + timedelta(minutes=209): {second, third},
        t0 + timedelta(minutes=210): {third},
    }
    for at, valid in expectations.items():
        with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            keys = [k for k in signing.public_keys(tx, now=at) if k.kid in kids]
        assert {k.kid for k in keys} == valid, at
        for kid in kids:
            assert signing.verify(keys, kid, b"m", signatures[kid], now=at) is (kid in valid)
            for other in set(kids) - {kid}:
                assert not signing.verify(keys, kid, b"m", signatures[other], now=at)


def test_a_private_signing_key_does_not_open_under_another_kid(
    db: Database, platform_ring: Keyring, clock: FakeClock
) -> None:
    """Swapping two signing keys' sealed private halves makes neither usable."""
    ring = platform_ring
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        old = signing.rotate(tx, PLATFORM, ring, now=clock.now())
        new = signing.rotate(tx, PLATFORM, ring, now=clock.now() + timedelta(hours=1))
        rows = dict(
            tx.execute(
                "SELECT kid, private_sealed FROM tenantguard.signing_keys WHERE kid IN (%s, %s)",
                (old, new),
            ).fetchall()
        )
        with tx.transaction():  # a savepoint: the realm is shared, the swap is undone below
            tx.execute(
                "UPDATE tenantguard.signing_keys SET private_sealed = %s WHERE kid = %s",
                (rows[old], new),
            )
            with pytest.raises(DecryptionFailed):
                signing.active(tx, ring)
            raise psycopg.Rollback
        assert signing.active(tx, ring).kid == new
