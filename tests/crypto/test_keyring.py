"""The keyring on PostgreSQL: binding to rows and tenants, rotation, rewrap, re-encryption,
crypto-shredding, the unwrap cache, and failing closed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from tenantguard.audit import list_events
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.fields import reencrypt
from tenantguard.crypto.kek import KekProvider, LocalKek
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import secrets
from tenantguard.data.secrets import SECRET_VALUE
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import DecryptionFailed, KeyProviderUnavailable, NotFound
from tenantguard.testing import FakeClock

Conn = psycopg.Connection[tuple[object, ...]]


def ctx_of(tenant: NewTenant) -> TenantContext:
    return TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "keyring")


class CountingKek:
    """A real local KEK that counts unwraps (to see the cache work) and can be switched off."""

    def __init__(self, inner: LocalKek) -> None:
        self.inner = inner
        self.unwraps = 0
        self.down = False

    def active_id(self) -> str:
        return self.inner.active_id()

    def wrap(self, key: bytes, *, context: bytes) -> tuple[str, bytes]:
        if self.down:
            raise KeyProviderUnavailable()
        return self.inner.wrap(key, context=context)

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        if self.down:
            raise KeyProviderUnavailable()
        self.unwraps += 1
        return self.inner.unwrap(kek_id, wrapped, context=context)

    def rotate(self) -> str:
        return self.inner.rotate()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def kek(tmp_path: Path) -> CountingKek:
    return CountingKek(LocalKek(tmp_path / "kek", create=True))


@pytest.fixture
def ticks() -> list[float]:
    return [0.0]


@pytest.fixture
def ring(kek: CountingKek, clock: FakeClock, ticks: list[float]) -> Keyring:
    return Keyring(kek, clock=clock, cache_seconds=60, monotonic=lambda: ticks[0])


@pytest.fixture
def tenant(make_tenant: Callable[[str], NewTenant]) -> NewTenant:
    return make_tenant("keyring")


def write(
    db: Database, ring: Keyring, tenant: NewTenant, name: str, value: bytes, clock: FakeClock
) -> None:
    with db.tenant_transaction(tenant.tenant_id) as tx:
        secrets.write(tx, ctx_of(tenant), ring, name, value, now=clock.now())


def read(db: Database, ring: Keyring, tenant: NewTenant, name: str, clock: FakeClock) -> bytes:
    with db.tenant_transaction(tenant.tenant_id) as tx:
        return secrets.read(tx, ctx_of(tenant), ring, name, use="tests", now=clock.now())


def stored(owner: Conn, name: str) -> bytes:
    row = owner.execute(
        "SELECT v.value FROM tenantguard.secret_versions v JOIN tenantguard.secrets s"
        " ON s.tenant_id = v.tenant_id AND s.id = v.secret_id AND s.current_version = v.version"
        " WHERE s.name = %s AND s.deleted_at IS NULL",
        (name,),
    ).fetchone()
    assert row is not None
    assert isinstance(row[0], bytes)
    return row[0]


def test_values_are_stored_sealed(
    db: Database,
    ring: Keyring,
    tenant: NewTenant,
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    """The database holds a versioned ciphertext, never the value; reading it back works."""
    write(db, ring, tenant, "api", b"plain-value-123", clock)
    raw = stored(owner_in(tenant.tenant_id), "api")
    assert raw.startswith(b"tg\x01")
    assert b"plain-value-123" not in raw
    assert read(db, ring, tenant, "api", clock) == b"plain-value-123"


def test_ciphertext_copied_to_another_tenant_does_not_open(
    db: Database,
    ring: Keyring,
    make_tenant: Callable[[str], NewTenant],
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    """A's sealed value pasted into B's row (as the owner could) opens for nobody."""
    a, b = make_tenant("A"), make_tenant("B")
    write(db, ring, a, "api", b"a-value", clock)
    write(db, ring, b, "api", b"b-value", clock)
    stolen = stored(owner_in(a.tenant_id), "api")
    owner_in(b.tenant_id).execute(
        "UPDATE tenantguard.secret_versions SET value = %s WHERE version = 1", (stolen,)
    )
    with pytest.raises(DecryptionFailed):
        read(db, ring, b, "api", clock)


def test_ciphertext_copied_to_another_row_does_not_open(
    db: Database,
    ring: Keyring,
    tenant: NewTenant,
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    """Within one tenant, a value moved to another secret's row does not open there."""
    write(db, ring, tenant, "first", b"one", clock)
    write(db, ring, tenant, "second", b"two", clock)
    owner = owner_in(tenant.tenant_id)
    owner.execute(
        "UPDATE tenantguard.secret_versions SET value = %s WHERE secret_id ="
        " (SELECT id FROM tenantguard.secrets WHERE name = 'second')",
        (stored(owner, "first"),),
    )
    with pytest.raises(DecryptionFailed):
        read(db, ring, tenant, "second", clock)


def test_rotation_keeps_old_data_and_seals_new_data_on_the_new_version(
    db: Database,
    ring: Keyring,
    tenant: NewTenant,
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    write(db, ring, tenant, "old", b"old-value", clock)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert ring.rotate(tx, ctx_of(tenant)) == {SECRET_VALUE.purpose: 2}
    write(db, ring, tenant, "new", b"new-value", clock)
    owner = owner_in(tenant.tenant_id)
    assert stored(owner, "old")[3:7] == (1).to_bytes(4, "big")
    assert stored(owner, "new")[3:7] == (2).to_bytes(4, "big")
    assert read(db, ring, tenant, "old", clock) == b"old-value"
    assert read(db, ring, tenant, "new", clock) == b"new-value"
    with db.tenant_transaction(tenant.tenant_id) as tx:
        actions = [e.action for e in list_events(tx, tenant_id=tenant.tenant_id)]
    assert "data_key.rotate" in actions


def test_status_says_what_is_due(
    db: Database, ring: Keyring, tenant: NewTenant, clock: FakeClock
) -> None:
    """Keys are due after the tenant's rotation period (90 days unless set)."""
    write(db, ring, tenant, "s", b"v", clock)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        status = ring.status(tx, tenant.tenant_id)
        assert status.rotation == timedelta(days=90)
        assert status.due(clock.now() + timedelta(days=89)) == []
        assert status.due(clock.now() + timedelta(days=90)) == [SECRET_VALUE.purpose]
        ring.set_rotation(tx, ctx_of(tenant), timedelta(days=7))
        assert ring.status(tx, tenant.tenant_id).due(clock.now() + timedelta(days=7)) == [
            SECRET_VALUE.purpose
        ]


def test_rewrap_moves_keys_to_the_new_kek_without_touching_data(
    db: Database,
    ring: Keyring,
    kek: CountingKek,
    tenant: NewTenant,
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    write(db, ring, tenant, "s", b"value", clock)
    owner = owner_in(tenant.tenant_id)
    data_before = stored(owner, "s")
    keys_before = owner.execute("SELECT kek_id, wrapped_key FROM tenantguard.data_keys").fetchall()
    kek.rotate()
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert ring.rewrap(tx, ctx_of(tenant)) == 1
        assert ring.rewrap(tx, ctx_of(tenant)) == 0  # idempotent
    keys_after = owner.execute("SELECT kek_id, wrapped_key FROM tenantguard.data_keys").fetchall()
    assert [k for k, _ in keys_before] == ["local-0001"]
    assert [k for k, _ in keys_after] == ["local-0002"]
    assert keys_after[0][1] != keys_before[0][1]
    assert stored(owner, "s") == data_before
    fresh = Keyring(kek, clock=clock, cache_seconds=0)
    assert read(db, fresh, tenant, "s", clock) == b"value"


def test_reencryption_is_resumable_and_idempotent(
    db: Database,
    ring: Keyring,
    tenant: NewTenant,
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    """Interrupted after a batch, run again, run once more: every value ends on the newest
    version exactly once, and every value still reads back."""
    for n in range(5):
        write(db, ring, tenant, f"s{n}", f"v{n}".encode(), clock)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.rotate(tx, ctx_of(tenant))

    class Crash(Exception):
        pass

    def crash_after_first_batch(count: int) -> None:
        raise Crash

    ctx = ctx_of(tenant)
    with pytest.raises(Crash):
        reencrypt(
            db, ring, ctx, SECRET_VALUE, clock=clock, batch=2, progress=crash_after_first_batch
        )
    owner = owner_in(tenant.tenant_id)
    versions = [stored(owner, f"s{n}")[6] for n in range(5)]
    assert sorted(versions) == [1, 1, 1, 2, 2]
    first = reencrypt(db, ring, ctx, SECRET_VALUE, clock=clock, batch=2)
    assert (first.examined, first.reencrypted) == (5, 3)
    again = reencrypt(db, ring, ctx, SECRET_VALUE, clock=clock, batch=2)
    assert (again.examined, again.reencrypted) == (5, 0)
    assert [stored(owner, f"s{n}")[6] for n in range(5)] == [2] * 5
    assert [read(db, ring, tenant, f"s{n}", clock) for n in range(5)] == [
        f"v{n}".encode() for n in range(5)
    ]


def test_shredding_makes_everything_unreadable_even_for_the_owner(
    db: Database,
    ring: Keyring,
    kek: CountingKek,
    tenant: NewTenant,
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    """After destroy_all nothing opens: not through the service, not with a fresh keyring, and
    the owner finds no wrapped key left to unwrap."""
    write(db, ring, tenant, "s", b"value", clock)
    assert read(db, ring, tenant, "s", clock) == b"value"  # now in the unwrap cache
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert ring.destroy_all(tx, ctx_of(tenant)) == 1
    with pytest.raises(DecryptionFailed):
        read(db, ring, tenant, "s", clock)
    with pytest.raises(DecryptionFailed):
        read(db, Keyring(kek, clock=clock, cache_seconds=0), tenant, "s", clock)
    owner = owner_in(tenant.tenant_id)
    assert stored(owner, "s").startswith(b"tg")  # the ciphertext is still there...
    rows = owner.execute("SELECT wrapped_key, destroyed_at FROM tenantguard.data_keys").fetchall()
    assert rows
    assert all(w is None and d is not None for w, d in rows)


def test_shredding_in_another_process_takes_effect_despite_a_warm_cache(
    db: Database,
    ring: Keyring,
    kek: CountingKek,
    tenant: NewTenant,
    clock: FakeClock,
) -> None:
    """Another keyring (another gateway process) destroys the keys: this one's cache does not
    keep the data readable."""
    write(db, ring, tenant, "s", b"value", clock)
    read(db, ring, tenant, "s", clock)
    other_process = Keyring(kek, clock=clock)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        other_process.destroy_all(tx, ctx_of(tenant))
    with pytest.raises(DecryptionFailed):
        read(db, ring, tenant, "s", clock)


def test_unwraps_are_cached_for_a_bounded_time(
    db: Database,
    ring: Keyring,
    kek: CountingKek,
    tenant: NewTenant,
    clock: FakeClock,
    ticks: list[float],
) -> None:
    write(db, ring, tenant, "s", b"value", clock)
    before = kek.unwraps
    for _ in range(5):
        read(db, ring, tenant, "s", clock)
    assert kek.unwraps == before  # served from the cache
    ticks[0] += 61
    read(db, ring, tenant, "s", clock)
    assert kek.unwraps == before + 1


def test_unavailable_kek_fails_closed_and_writes_nothing(
    db: Database,
    ring: Keyring,
    kek: CountingKek,
    tenant: NewTenant,
    clock: FakeClock,
) -> None:
    kek.down = True
    with pytest.raises(KeyProviderUnavailable):
        write(db, ring, tenant, "s", b"value", clock)
    kek.down = False
    with db.tenant_transaction(tenant.tenant_id) as tx, pytest.raises(NotFound):
        secrets.read(tx, ctx_of(tenant), ring, "s", use="tests", now=clock.now())
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert ring.status(tx, tenant.tenant_id).versions == ()


def test_counting_kek_is_a_kek(kek: CountingKek) -> None:
    """(The wrapper above satisfies the port it stands in for.)"""
    provider: KekProvider = kek
    assert provider.active_id() == "local-0001"


def test_sealing_after_a_shred_uses_a_new_version(
    db: Database,
    ring: Keyring,
    tenant: NewTenant,
    clock: FakeClock,
    owner_in: Callable[[UUID], Conn],
) -> None:
    """New data after a shred gets a fresh key under a never-used version number; what was
    shredded stays unreadable."""
    write(db, ring, tenant, "old", b"old", clock)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        ring.destroy_all(tx, ctx_of(tenant))
    write(db, ring, tenant, "new", b"new", clock)
    assert stored(owner_in(tenant.tenant_id), "new")[3:7] == (2).to_bytes(4, "big")
    assert read(db, ring, tenant, "new", clock) == b"new"
    with pytest.raises(DecryptionFailed):
        read(db, ring, tenant, "old", clock)
