"""Per-tenant data keys: the envelope-encryption recipe, rotation, rewrap and shredding.

`Keyring.seal(conn, ctx, purpose, plaintext, record_id=…)` and `Keyring.open(…)` are the
whole API most code needs. Each (tenant, purpose) has one active key version that seals; every
older version still opens what it sealed; a version is named in each ciphertext's header.

The data key's row is read in the caller's transaction on every seal and open (so a key
shredded by any process stops opening at once, everywhere); only the unwrap, which may be an
HSM round trip, is cached: per process, bounded in size and lifetime, with the cached copy of
the key zeroised on eviction where Python allows (the AES context inside `cryptography` keeps
its own copy until it is freed).

Every rotation, rewrap and destruction writes an audit event in the same transaction.
Threat stopped: a stolen database dump (data keys are stored wrapped only); a tenant whose data
must become unreadable (crypto-shredding).
"""

from __future__ import annotations

import re
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import TenantContext
from tenantguard.crypto import aead
from tenantguard.crypto.kek import KekProvider, open_kek
from tenantguard.db.pool import Connection
from tenantguard.errors import DecryptionFailed, RequestInvalid

if TYPE_CHECKING:
    from tenantguard.settings import Settings

DEFAULT_ROTATION = timedelta(days=90)
_DEK_DOMAIN = b"tenantguard.dek.v1"
_PURPOSE = re.compile(r"[a-z][a-z0-9_.:-]{0,99}")  # the same rule as the table's CHECK


def wrap_context(tenant_id: UUID, purpose: str, version: int) -> bytes:
    """Associated data of a wrapped data key: it unwraps only in its own row."""
    parts = (_DEK_DOMAIN, tenant_id.bytes, purpose.encode(), struct.pack(">I", version))
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


@dataclass(frozen=True, slots=True)
class KeyVersion:
    purpose: str
    version: int
    kek_id: str
    created_at: datetime
    retired_at: datetime | None
    destroyed_at: datetime | None

    @property
    def active(self) -> bool:
        return self.retired_at is None and self.destroyed_at is None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """What `tenantguard keys status` shows for one tenant."""

    rotation: timedelta
    versions: tuple[KeyVersion, ...]

    def due(self, now: datetime) -> list[str]:
        """Purposes whose active key is older than the rotation period."""
        return sorted(
            v.purpose for v in self.versions if v.active and now - v.created_at >= self.rotation
        )


class _UnwrapCache:
    """A bounded, time-limited LRU of unwrapped data keys."""

    def __init__(self, *, size: int, lifetime: float, monotonic: Callable[[], float]) -> None:
        self._size = size
        self._lifetime = lifetime
        self._monotonic = monotonic
        self._entries: OrderedDict[tuple[object, ...], tuple[AESGCM, bytearray, float]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> AESGCM | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[2] <= self._monotonic():
                self._evict(key)
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[object, ...], material: bytes) -> AESGCM:
        aes = AESGCM(material)
        if self._size <= 0 or self._lifetime <= 0:
            return aes
        with self._lock:
            self._entries[key] = (aes, bytearray(material), self._monotonic() + self._lifetime)
            while len(self._entries) > self._size:
                self._evict(next(iter(self._entries)))
        return aes

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._evict(key)

    def evict_tenant(self, tenant_id: UUID) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == tenant_id]:
                self._evict(key)

    def _evict(self, key: tuple[object, ...]) -> None:
        _, copy, _ = self._entries.pop(key)
        copy[:] = bytes(len(copy))  # zeroise our copy


class Keyring:
    """Envelope encryption under per-tenant, per-purpose data keys wrapped by a KEK."""

    def __init__(
        self,
        kek: KekProvider,
        *,
        clock: Clock,
        cache_seconds: float = 60.0,
        cache_size: int = 1024,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kek = kek
        self._clock = clock
        self._cache = _UnwrapCache(size=cache_size, lifetime=cache_seconds, monotonic=monotonic)

    @property
    def kek(self) -> KekProvider:
        return self._kek

    def close(self) -> None:
        """Drop cached keys and release the KEK (an HSM session is logged out)."""
        self._cache.clear()
        self._kek.close()

    # -- the recipe ------------------------------------------------------------------------

    def seal(
        self,
        conn: Connection,
        ctx: TenantContext,
        purpose: str,
        plaintext: bytes,
        *,
        record_id: str,
        aad: bytes = b"",
    ) -> bytes:
        """Encrypt `plaintext` for `ctx`'s tenant, bound to `purpose` and `record_id`."""
        version, key = self._active_key(conn, ctx, purpose)
        binding = aead.Binding(ctx.tenant_id, purpose, record_id, aad)
        return aead.seal(key, version, plaintext, binding)

    def open(
        self,
        conn: Connection,
        tenant_id: UUID,
        purpose: str,
        sealed: bytes,
        *,
        record_id: str,
        aad: bytes = b"",
    ) -> bytes:
        """Decrypt, or raise the one opaque `DecryptionFailed`."""
        version = aead.key_version_of(sealed)
        row = conn.execute(
            "SELECT kek_id, wrapped_key FROM tenantguard.data_keys WHERE tenant_id = %s"
            " AND purpose = %s AND version = %s AND destroyed_at IS NULL",
            (tenant_id, purpose, version),
        ).fetchone()
        if row is None or row[1] is None:
            raise DecryptionFailed()
        key = self._unwrap(tenant_id, purpose, version, str(row[0]), bytes(row[1]))
        return aead.open_sealed(key, sealed, aead.Binding(tenant_id, purpose, record_id, aad))

    # -- key management ----------------------------------------------------------------------

    def _active_key(self, conn: Connection, ctx: TenantContext, purpose: str) -> tuple[int, AESGCM]:
        _check_purpose(purpose)
        row = self._active_row(conn, ctx.tenant_id, purpose)
        if row is None:
            # The first key, or the first after a shred: versions are never reused, so a
            # ciphertext can never name a destroyed version that a new key now answers to.
            latest = conn.execute(
                "SELECT coalesce(max(version), 0) FROM tenantguard.data_keys"
                " WHERE tenant_id = %s AND purpose = %s",
                (ctx.tenant_id, purpose),
            ).fetchone()
            self._create(conn, ctx, purpose, int(str(latest[0] if latest else 0)) + 1)
            row = self._active_row(conn, ctx.tenant_id, purpose)
            if row is None:  # pragma: no cover - created just above, or by a racing writer
                raise DecryptionFailed()
        version, kek_id, wrapped = row
        return version, self._unwrap(ctx.tenant_id, purpose, version, kek_id, wrapped)

    @staticmethod
    def _active_row(
        conn: Connection, tenant_id: UUID, purpose: str
    ) -> tuple[int, str, bytes] | None:
        row = conn.execute(
            "SELECT version, kek_id, wrapped_key FROM tenantguard.data_keys"
            " WHERE tenant_id = %s AND purpose = %s AND retired_at IS NULL"
            " AND destroyed_at IS NULL",
            (tenant_id, purpose),
        ).fetchone()
        return None if row is None else (int(str(row[0])), str(row[1]), bytes(row[2]))

    def _create(self, conn: Connection, ctx: TenantContext, purpose: str, version: int) -> None:
        material = aead.new_key()
        kek_id, wrapped = self._kek.wrap(
            material, context=wrap_context(ctx.tenant_id, purpose, version)
        )
        now = self._clock.now()
        inserted = conn.execute(
            "INSERT INTO tenantguard.data_keys (tenant_id, purpose, version, kek_id, wrapped_key,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s)"
            # No conflict target: a racing writer may have taken the version number or become
            # the active key (the partial unique index); either way its key is the one to use.
            " ON CONFLICT DO NOTHING RETURNING version",
            (ctx.tenant_id, purpose, version, kek_id, wrapped, now),
        ).fetchone()
        if inserted is not None:
            record_action(
                conn,
                ctx,
                action="data_key.create",
                target_type="data_key",
                target_id=f"{purpose}#{version}",
                now=now,
                payload={"kek_id": kek_id},
            )

    def _unwrap(
        self, tenant_id: UUID, purpose: str, version: int, kek_id: str, wrapped: bytes
    ) -> AESGCM:
        cache_key = (tenant_id, purpose, version, kek_id, wrapped)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        material = self._kek.unwrap(
            kek_id, wrapped, context=wrap_context(tenant_id, purpose, version)
        )
        return self._cache.put(cache_key, material)

    def rotate(
        self, conn: Connection, ctx: TenantContext, purposes: list[str] | None = None
    ) -> dict[str, int]:
        """Give each purpose (default: every active one) a new key version. Old versions keep
        opening old data. Returns purpose -> new version."""
        rows = conn.execute(
            "SELECT purpose, version FROM tenantguard.data_keys WHERE tenant_id = %s"
            " AND retired_at IS NULL AND destroyed_at IS NULL ORDER BY purpose FOR UPDATE",
            (ctx.tenant_id,),
        ).fetchall()
        active = {str(p): int(str(v)) for p, v in rows}
        chosen = sorted(set(purposes)) if purposes is not None else sorted(active)
        now = self._clock.now()
        rotated: dict[str, int] = {}
        for purpose in chosen:
            _check_purpose(purpose)
            current = active.get(purpose)
            if current is None:
                raise RequestInvalid(f"No active key for purpose {purpose!r}.")
            conn.execute(
                "UPDATE tenantguard.data_keys SET retired_at = %s WHERE tenant_id = %s"
                " AND purpose = %s AND version = %s",
                (now, ctx.tenant_id, purpose, current),
            )
            self._create(conn, ctx, purpose, current + 1)
            record_action(
                conn,
                ctx,
                action="data_key.rotate",
                target_type="data_key",
                target_id=f"{purpose}#{current + 1}",
                now=now,
                payload={"retired_version": current},
            )
            rotated[purpose] = current + 1
        return rotated

    def rewrap(self, conn: Connection, ctx: TenantContext) -> int:
        """Rewrap every live data key of the tenant under the active KEK. Data is untouched."""
        target = self._kek.active_id()
        rows = conn.execute(
            "SELECT purpose, version, kek_id, wrapped_key FROM tenantguard.data_keys"
            " WHERE tenant_id = %s AND destroyed_at IS NULL AND kek_id <> %s FOR UPDATE",
            (ctx.tenant_id, target),
        ).fetchall()
        for purpose, version, kek_id, wrapped in rows:
            assert isinstance(wrapped, bytes)  # noqa: S101 (destroyed keys are excluded above)
            context = wrap_context(ctx.tenant_id, str(purpose), int(str(version)))
            material = self._kek.unwrap(str(kek_id), wrapped, context=context)
            new_id, rewrapped = self._kek.wrap(material, context=context)
            conn.execute(
                "UPDATE tenantguard.data_keys SET kek_id = %s, wrapped_key = %s"
                " WHERE tenant_id = %s AND purpose = %s AND version = %s",
                (new_id, rewrapped, ctx.tenant_id, purpose, version),
            )
        record_action(
            conn,
            ctx,
            action="data_key.rewrap",
            target_type="tenant",
            target_id=str(ctx.tenant_id),
            now=self._clock.now(),
            payload={"kek_id": target, "rewrapped": len(rows)},
        )
        return len(rows)

    def destroy_all(self, conn: Connection, ctx: TenantContext) -> int:
        """Crypto-shred: destroy every data key of the tenant. Nothing they sealed opens again."""
        now = self._clock.now()
        destroyed = conn.execute(
            "UPDATE tenantguard.data_keys SET wrapped_key = NULL, destroyed_at = %s"
            " WHERE tenant_id = %s AND destroyed_at IS NULL RETURNING purpose",
            (now, ctx.tenant_id),
        ).fetchall()
        self._cache.evict_tenant(ctx.tenant_id)
        record_action(
            conn,
            ctx,
            action="data_key.destroy",
            target_type="tenant",
            target_id=str(ctx.tenant_id),
            now=now,
            payload={"destroyed": len(destroyed)},
        )
        return len(destroyed)

    def set_rotation(self, conn: Connection, ctx: TenantContext, period: timedelta) -> None:
        days = period.days
        if not 1 <= days <= 3650 or period != timedelta(days=days):
            raise RequestInvalid("A rotation period is a whole number of days, 1 to 3650.")
        now = self._clock.now()
        conn.execute(
            "INSERT INTO tenantguard.key_policies (tenant_id, rotation_days, updated_at)"
            " VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE"
            " SET rotation_days = EXCLUDED.rotation_days, updated_at = EXCLUDED.updated_at",
            (ctx.tenant_id, days, now),
        )
        record_action(
            conn,
            ctx,
            action="key_policy.update",
            target_type="tenant",
            target_id=str(ctx.tenant_id),
            now=now,
            payload={"rotation_days": days},
        )

    @staticmethod
    def status(conn: Connection, tenant_id: UUID) -> KeyStatus:
        policy = conn.execute(
            "SELECT rotation_days FROM tenantguard.key_policies WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
        rows = conn.execute(
            "SELECT purpose, version, kek_id, created_at, retired_at, destroyed_at"
            " FROM tenantguard.data_keys WHERE tenant_id = %s ORDER BY purpose, version",
            (tenant_id,),
        ).fetchall()
        rotation = timedelta(days=int(str(policy[0]))) if policy else DEFAULT_ROTATION
        return KeyStatus(rotation, tuple(KeyVersion(*r) for r in rows))


def _check_purpose(purpose: str) -> None:
    if not _PURPOSE.fullmatch(purpose):
        raise RequestInvalid("A key purpose is a short lowercase name.")


def open_keyring(settings: Settings, *, clock: Clock, create: bool | None = None) -> Keyring:
    """The keyring `settings` describe. The local provider makes its first KEK on first start;
    an HSM's is made only by `tenantguard init` (`create=True`)."""
    config = settings.kek()
    make = create if create is not None else config.provider == "local"
    return Keyring(
        open_kek(config, create=make), clock=clock, cache_seconds=settings.key_cache_seconds
    )
