"""Signing, storing and witnessing audit checkpoints; serving proofs from the live log.

`Checkpointer.checkpoint` reads a tenant's leaves in one statement (a consistent prefix: appends
of a tenant commit one at a time, in `seq` order), signs the RFC 6962 root with the platform's
active key as a C2SP checkpoint, stores it (append-only, like the events) and writes it with
fsync to the witness directory, all before the transaction commits: a checkpoint that could not
be witnessed is not stored. The gateway runs `checkpoint_all` every few minutes for each tenant
whose log grew; anyone with `audit:checkpoint` can ask for one now.

`check_against` is the rollback and rewrite detector: every stored or witnessed checkpoint must
be a prefix of the live log (same root at its size). A log shorter than a checkpoint, or one
whose old part changed, fails.

Threat stopped: a rewritten or truncated log going unnoticed; a checkpoint that lives only in
the database an insider controls (the witness copy is outside it).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import structlog

from tenantguard.audit import checkpoint as notes
from tenantguard.audit import merkle
from tenantguard.audit.publish import JetStreamPublisher
from tenantguard.audit.store import AuditRecord, append, verify_tenant
from tenantguard.clock import Clock
from tenantguard.context import PLATFORM_TENANT_ID, Principal
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import AuditUnavailable, AuditVerificationFailed, NotFound
from tenantguard.settings import CheckpointConfig

_log = structlog.get_logger("tenantguard.audit")
_VERIFIER = Principal("system", "audit-verifier")


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    id: UUID
    tree_size: int
    root_hash: bytes
    signed_at: datetime
    kid: str
    note: str


_COLUMNS = "id, tree_size, root_hash, signed_at, kid, note"


def _stored(row: tuple[Any, ...]) -> StoredCheckpoint:
    id_, size, root_hash, signed_at, kid, note = row
    return StoredCheckpoint(id_, int(size), bytes(root_hash), signed_at, str(kid), str(note))


def leaf_hashes(conn: Connection, tenant_id: UUID, *, size: int | None = None) -> list[bytes]:
    """The Merkle leaves of the tenant's log (of its first `size` events), in `seq` order."""
    rows = conn.execute(
        "SELECT event_hash FROM tenantguard.audit_events WHERE tenant_id = %s"
        " AND (%s::bigint IS NULL OR seq < %s::bigint) ORDER BY seq",
        (tenant_id, size, size),
    ).fetchall()
    return [merkle.leaf_hash(bytes(r[0])) for r in rows]


def latest(conn: Connection, tenant_id: UUID) -> StoredCheckpoint:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.audit_checkpoints WHERE tenant_id = %s"
        " ORDER BY signed_at DESC, tree_size DESC LIMIT 1",
        (tenant_id,),
    ).fetchone()
    if row is None:
        raise NotFound()
    return _stored(row)


def stored(conn: Connection, tenant_id: UUID) -> list[StoredCheckpoint]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.audit_checkpoints WHERE tenant_id = %s"
        " ORDER BY signed_at, tree_size",
        (tenant_id,),
    ).fetchall()
    return [_stored(r) for r in rows]


def _write_durably(path: Path, data: str) -> None:
    """Write `data` to `path` atomically and durably: temp file, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, data.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def witnessed(witness_dir: Path, tenant_id: UUID) -> list[str]:
    """The tenant's witnessed notes. A witness entry that is not a small regular file of UTF-8
    text is evidence of tampering, not something to skip: it fails verification."""
    folder = witness_dir / str(tenant_id)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.checkpoint")):
        if path.is_symlink() or not path.is_file():
            raise AuditVerificationFailed(f"The witness entry {path.name} is not a plain file.")
        with path.open("rb") as handle:
            raw = handle.read(notes.MAX_NOTE + 1)
        try:
            found.append(raw.decode())
        except UnicodeDecodeError as exc:
            raise AuditVerificationFailed(
                f"The witness copy {path.name} is not a checkpoint note."
            ) from exc
    return found


class Checkpointer:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        config: CheckpointConfig,
        *,
        clock: Clock,
        publisher: JetStreamPublisher | None = None,
    ) -> None:
        self._db, self._keyring, self._config, self._clock = db, keyring, config, clock
        self._publisher = publisher

    @property
    def key_name(self) -> str:
        return self._config.origin

    def origin(self, tenant_id: UUID) -> str:
        return notes.origin_of(self._config.origin, tenant_id)

    def checkpoint(
        self, tenant_id: UUID, *, only_if_grown: bool = False
    ) -> StoredCheckpoint | None:
        """Sign, store and witness a checkpoint of the tenant's log now (with `only_if_grown`,
        only when the log is larger than at the latest checkpoint). The witness copy (and the
        stream's acknowledgement) come before the commit; a copy whose row did not commit is
        removed again."""
        with self._db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            key = signing.active(tx, self._keyring)  # fetched first: no key, no checkpoint
        now = self._clock.now().replace(microsecond=0)  # the note's precision, in the row too
        witness: Path | None = None
        try:
            with self._db.tenant_transaction(tenant_id) as tx:
                found = self._sign_and_store(tx, tenant_id, key, now, only_if_grown)
                if found is None:
                    return None
                stamp = now.strftime("%Y%m%dT%H%M%SZ")
                name = f"{found.tree_size:016d}-{stamp}-{found.id.hex[:8]}.checkpoint"
                witness = self._config.witness_dir / str(tenant_id) / name
                try:
                    _write_durably(witness, found.note)
                except OSError as exc:
                    raise AuditUnavailable("The checkpoint could not be witnessed.") from exc
                if self._publisher is not None:  # acknowledged by the stream, or not stored
                    self._publisher.publish(tenant_id, found.id, found.note)
        except BaseException:
            if witness is not None:  # written, but the row did not commit: no orphan copy
                with contextlib.suppress(OSError):
                    witness.unlink(missing_ok=True)
            raise
        return found

    def _sign_and_store(
        self,
        tx: Connection,
        tenant_id: UUID,
        key: signing.SigningKey,
        now: datetime,
        only_if_grown: bool,
    ) -> StoredCheckpoint | None:
        leaves = leaf_hashes(tx, tenant_id)
        if only_if_grown:
            try:
                if latest(tx, tenant_id).tree_size >= len(leaves):
                    return None
            except NotFound:
                if not leaves:
                    return None
        head = notes.Checkpoint(self.origin(tenant_id), len(leaves), merkle.root(leaves), now)
        note = notes.sign(head, key, key_name=self.key_name)
        row = tx.execute(
            "INSERT INTO tenantguard.audit_checkpoints (tenant_id, id, tree_size, root_hash,"
            f" signed_at, kid, note) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (tenant_id, uuid4(), head.tree_size, head.root_hash, now, key.kid, note),
        ).fetchone()
        assert row is not None  # noqa: S101 (RETURNING of the row just written)
        return _stored(row)

    def checkpoint_all(self, tenant_ids: Iterable[UUID]) -> int:
        """One scheduled pass: a checkpoint for each tenant whose log grew. A tenant that
        fails is logged and skipped (the next pass retries); the count of new ones returns."""
        made = 0
        for tenant_id in tenant_ids:
            try:
                made += self.checkpoint(tenant_id, only_if_grown=True) is not None
            except Exception:  # noqa: BLE001 (a scheduled pass goes on to the next tenant)
                _log.exception("audit.checkpoint_failed", tenant_id=str(tenant_id))
        return made

    def check_against(self, tenant_id: UUID) -> int:
        return verify_checkpoints(self._db, self._config, tenant_id)

    def _problem_of(self, tenant_id: UUID) -> str | None:
        """What is wrong with the tenant's log, or None. Anything that keeps the check from
        completing is itself a problem (fail closed): one poisoned tenant cannot end the pass
        or silence it."""
        try:
            with self._db.tenant_transaction(tenant_id) as tx:
                verdict = verify_tenant(tx, tenant_id=tenant_id)
            if not verdict.ok:
                return f"seq {verdict.first_bad_seq}: {verdict.problem}"
            self.check_against(tenant_id)
        except AuditVerificationFailed as exc:
            return exc.detail
        except Exception as exc:  # noqa: BLE001 (the check could not complete: that is the alarm)
            return f"the log could not be verified ({type(exc).__name__})"
        return None

    def verify_all(
        self, tenant_ids: Iterable[UUID], *, request_id: str = "audit-verifier"
    ) -> list[UUID]:
        """The scheduled verification pass: each tenant's chain, and every checkpoint against
        its log. A failure raises the alarm, as an `audit.tamper_detected` event in the
        platform chain (for the operators) and in the tenant's own (for the customer), and an
        error log line. Returns the tenants whose log failed."""
        failed: list[UUID] = []
        for tenant_id in tenant_ids:
            problem = self._problem_of(tenant_id)
            if problem is None:
                continue
            failed.append(tenant_id)
            _log.error("audit.tamper_detected", tenant_id=str(tenant_id), problem=problem)
            for chain in dict.fromkeys((PLATFORM_TENANT_ID, tenant_id)):
                with self._db.tenant_transaction(chain) as tx:
                    append(
                        tx,
                        tenant_id=chain,
                        request_id=request_id,
                        now=self._clock.now(),
                        record=AuditRecord(
                            action="audit.tamper_detected",
                            outcome="failure",
                            actor=_VERIFIER,
                            reason=problem[:500],
                            target_type="tenant",
                            target_id=str(tenant_id),
                        ),
                    )
        return failed


def verify_checkpoints(db: Database, config: CheckpointConfig, tenant_id: UUID) -> int:
    """Verify every stored and witnessed checkpoint of the tenant and that each is a prefix of
    the live log: its signature (by a platform key valid at its time) and origin; each stored
    row's columns equal to what its note says; every stored note witnessed and every witness
    copy stored; and each one's root equal to the root of the log's prefix of its size (all
    roots computed in one pass). Returns how many notes were checked; raises
    `AuditVerificationFailed` at the first that fails."""
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keys = signing.all_public_keys(tx)
    with db.tenant_transaction(tenant_id) as tx:
        leaves = leaf_hashes(tx, tenant_id)
        rows = stored(tx, tenant_id)
    copies = witnessed(config.witness_dir, tenant_id)
    origin = notes.origin_of(config.origin, tenant_id)
    signed: dict[str, tuple[notes.Checkpoint, str]] = {}  # each distinct note checked once
    for note in dict.fromkeys([*(r.note for r in rows), *copies]):
        signed[note] = notes.verify_with_kid(note, keys, key_name=config.origin, origin=origin)
    heads = {note: head for note, (head, _) in signed.items()}
    for row in rows:
        head, kid = signed[row.note]
        if (row.tree_size, row.root_hash, row.kid) != (head.tree_size, head.root_hash, kid) or (
            row.signed_at.replace(microsecond=0) != head.signed_at
        ):
            raise AuditVerificationFailed(
                f"A stored checkpoint row ({row.id}) says other than its signed note."
            )
    missing = {r.note for r in rows} - set(copies)
    orphans = set(copies) - {r.note for r in rows}
    if missing:
        raise AuditVerificationFailed(
            f"{len(missing)} stored checkpoints have no witness copy (removed, or this is not"
            " the deployment's witness directory)."
        )
    if orphans:
        raise AuditVerificationFailed(
            f"{len(orphans)} witnessed checkpoints have no stored row: rows were removed."
        )
    roots = merkle.prefix_roots(leaves, [h.tree_size for h in heads.values()])
    for head in heads.values():
        if head.tree_size > len(leaves):
            raise AuditVerificationFailed(
                f"The log has {len(leaves)} events, fewer than the {head.tree_size} a"
                " signed checkpoint covers: it was cut back."
            )
        if roots[head.tree_size] != head.root_hash:
            raise AuditVerificationFailed(
                f"The first {head.tree_size} events no longer hash to the signed root:"
                " history was changed."
            )
    return len(rows) + len(copies)


class Periodic:
    """A background pass of the gateway (checkpoints, verification) every `interval` seconds,
    stopped with the gateway. A failing pass is logged and retried at the next interval."""

    def __init__(self, name: str, run: Callable[[], object], interval: float) -> None:
        self._run, self._interval = run, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._run()
            except Exception:  # noqa: BLE001 (the schedule never dies: log, retry next time)
                _log.exception("audit.pass_failed", thread=self._thread.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
