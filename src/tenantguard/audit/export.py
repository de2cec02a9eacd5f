"""Audit exports and their offline verification: everything an auditor needs, in one file.

An export is JSON Lines: a header (format, tenant, origin, key name, counts), a seal (a note
signed by the platform key when the export was made, stating its tenant, event count, final
root and chain head: what it covers), the platform's public signing keys with their validity
windows, every signed checkpoint (stored and witnessed), then every event with its hashes, in
`seq` order. `verify_export` needs no database, no network, no tenantguard service: it
recomputes each event's hash and the chain, rebuilds the RFC 6962 tree, checks the seal and
every checkpoint (signed by a key valid at its time, each a prefix of the log), and reports the
first bad entry precisely. Signatures mean something only against keys the verifier trusts:
pass them (the platform's published keys); the export's own key list is a fallback that the
CLI uses only when told to, with a warning.

Threat stopped: an audit that can only be checked by trusting the system that wrote it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from uuid import UUID

from tenantguard.audit import checkpoint as notes
from tenantguard.audit import merkle
from tenantguard.audit.chain import GENESIS, AuditEvent, format_time, hash_event, link
from tenantguard.audit.store import iter_events
from tenantguard.crypto.signing import PublicKey, trusted_keys
from tenantguard.db.pool import Connection
from tenantguard.errors import AuditVerificationFailed

FORMAT = "tenantguard-audit-export/1"


def _event_line(event: AuditEvent) -> dict[str, Any]:
    return {
        "kind": "event",
        "seq": event.seq,
        "id": str(event.id),
        "occurred_at": format_time(event.occurred_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "outcome": event.outcome,
        "reason": event.reason,
        "request_id": event.request_id,
        "payload": event.payload,
        "event_hash": event.event_hash.hex(),
        "chain_hash": event.chain_hash.hex(),
        "format": event.format,
        "policy_version": event.policy_version,
        "source": event.source,
    }


def seal_text(
    *, key_name: str, tenant_id: UUID, events: int, root: bytes, head: bytes, at: datetime
) -> str:
    """The signed statement of what an export covers (a C2SP-style note text)."""
    moment = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"{key_name}/audit-export/{tenant_id}\n{events}\n"
        f"{base64.b64encode(root).decode()}\n{head.hex()}\ntime {moment}\n"
    )


def write_export(
    out: TextIO,
    conn: Connection,
    *,
    tenant_id: UUID,
    origin: str,
    key_name: str,
    keys: list[PublicKey],
    checkpoint_notes: list[str],
    event_count: int,
    exported_at: datetime,
    seal: str,
) -> int:
    """Write the export of `tenant_id` (read in `conn`'s transaction); returns events written."""
    header = {
        "kind": "header",
        "format": FORMAT,
        "tenant_id": str(tenant_id),
        "origin": origin,
        "key_name": key_name,
        "events": event_count,
        "exported_at": format_time(exported_at),
    }
    lines: list[dict[str, Any]] = [header, {"kind": "seal", "note": seal}]
    lines += [
        {
            "kind": "key",
            "kid": k.kid,
            "public_key": base64.b64encode(k.public_key).decode(),
            "created_at": format_time(k.created_at),
            "verify_until": None if k.verify_until is None else format_time(k.verify_until),
        }
        for k in keys
    ]
    lines += [{"kind": "checkpoint", "note": note} for note in checkpoint_notes]
    for line in lines:
        out.write(json.dumps(line, sort_keys=True) + "\n")
    written = 0
    for event in iter_events(conn, tenant_id=tenant_id):
        if written >= event_count:
            break  # events appended after the count was taken belong to a later export
        out.write(json.dumps(_event_line(event), sort_keys=True) + "\n")
        written += 1
    return written


@dataclass(frozen=True, slots=True)
class ExportVerdict:
    tenant_id: UUID
    events: int
    checkpoints: int
    head: bytes  # the chain hash of the last event
    root: bytes  # the RFC 6962 root of the whole log
    sealed_at: datetime  # when the platform signed what the export covers
    keys_pinned: bool  # checked against keys the caller trusts, not the export's own


def _fail(where: str, why: str) -> AuditVerificationFailed:
    return AuditVerificationFailed(f"{where}: {why}")


def _records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise _fail(f"line {number}", "not JSON") from exc
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            raise _fail(f"line {number}", "not a record of an export")
        yield number, record


class _Checker:
    """The state of one offline verification, fed record by record."""

    def __init__(self, header: dict[str, Any], trusted: Sequence[PublicKey] | None) -> None:
        if header.get("kind") != "header" or header.get("format") != FORMAT:
            raise _fail("line 1", f"not a {FORMAT} header")
        try:
            self.tenant_id = UUID(str(header["tenant_id"]))
            self.origin, self.key_name = str(header["origin"]), str(header["key_name"])
            self.expected = int(header["events"])
        except (KeyError, ValueError, TypeError) as exc:
            raise _fail("line 1", "the header is incomplete") from exc
        if self.origin != notes.origin_of(self.key_name, self.tenant_id):
            raise _fail("line 1", "the origin is not this tenant's log")
        self.trusted = trusted
        self.keys: list[PublicKey] = []
        self.notes: list[tuple[int, str]] = []
        self.seal: tuple[int, str] | None = None
        self.previous, self.leaves = GENESIS, list[bytes]()

    def feed(self, number: int, record: dict[str, Any]) -> None:
        kind = record["kind"]
        try:
            if kind == "seal" and self.seal is None and not self.keys and not self.leaves:
                self.seal = (number, str(record["note"]))
            elif kind == "key" and not self.leaves:
                self.keys.extend(trusted_keys([record]))
            elif kind == "checkpoint" and not self.leaves:
                self.notes.append((number, str(record["note"])))
            elif kind == "event":
                self._event(number, _event(record, self.tenant_id))
            else:
                raise _fail(f"line {number}", f"unexpected {kind!r} record here")
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise _fail(f"line {number}", f"a malformed {kind} record") from exc

    def _event(self, number: int, event: AuditEvent) -> None:
        where = f"line {number} (event seq {event.seq})"
        if event.seq != len(self.leaves):
            raise _fail(where, f"sequence gap or reorder: expected seq {len(self.leaves)}")
        if hash_event(event.canonical()) != event.event_hash:
            raise _fail(where, "the event does not match its hash (modified)")
        if link(self.previous, event.event_hash) != event.chain_hash:
            raise _fail(where, "the chain hash does not follow from the previous event")
        self.previous = event.chain_hash
        self.leaves.append(merkle.leaf_hash(event.event_hash))

    def finish(self) -> ExportVerdict:
        if len(self.leaves) != self.expected:
            raise _fail(
                "end of export", f"{len(self.leaves)} events, the header says {self.expected}"
            )
        keys = self.trusted if self.trusted is not None else self.keys
        sealed_at = self._check_seal(keys)
        roots = merkle.prefix_roots(self.leaves, [len(self.leaves)])
        for number, note in self.notes:
            where = f"line {number} (checkpoint)"
            try:
                head = notes.verify(note, keys, key_name=self.key_name, origin=self.origin)
            except AuditVerificationFailed as exc:
                raise _fail(where, exc.detail) from exc
            if head.tree_size > len(self.leaves):
                raise _fail(
                    where, f"it covers {head.tree_size} events; the log has {len(self.leaves)}"
                )
            if merkle.root(self.leaves[: head.tree_size]) != head.root_hash:
                raise _fail(where, f"the first {head.tree_size} events do not hash to its root")
        return ExportVerdict(
            self.tenant_id,
            len(self.leaves),
            len(self.notes),
            self.previous,
            roots[len(self.leaves)],
            sealed_at,
            self.trusted is not None,
        )

    def _check_seal(self, keys: Sequence[PublicKey]) -> datetime:
        """The seal must be signed, and state exactly this export's extent: a log cut back to
        an earlier checkpoint (later ones dropped) contradicts it."""
        if self.seal is None:
            raise _fail("line 2", "the export carries no seal (what it covers is not signed)")
        number, note = self.seal
        where = f"line {number} (seal)"
        try:
            text, signatures = notes.split_note(note, what="export seal")
            lines = text.split("\n")[:-1]
            if len(lines) != 5 or lines[0] != f"{self.key_name}/audit-export/{self.tenant_id}":
                raise _fail(where, "it is not this export's seal")
            at = datetime.strptime(lines[4], "time %Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            notes.check_signatures(
                text, signatures, keys, key_name=self.key_name, at=at, what="export seal"
            )
        except ValueError as exc:
            raise _fail(where, "it is malformed") from exc
        except AuditVerificationFailed as exc:
            raise _fail(where, exc.detail) from exc
        expected = [
            str(len(self.leaves)),
            base64.b64encode(merkle.root(self.leaves)).decode(),
            self.previous.hex(),
        ]
        if lines[1:4] != expected:
            raise _fail(where, "the export does not hold what its seal says (events cut or added)")
        return at


def verify_export(
    lines: Iterable[str],
    *,
    trusted_keys: Sequence[PublicKey] | None,
    progress: Callable[[int], None] | None = None,
) -> ExportVerdict:
    """Check an export offline; raise `AuditVerificationFailed` naming the first bad entry.
    `trusted_keys`: the platform keys the caller trusts (None: the export's own list, which
    proves integrity only against someone who did not also replace the keys). `progress` is
    called with the number of events checked so far."""
    records = _records(lines)
    try:
        _, header = next(records)
    except StopIteration:
        raise _fail("line 1", "the export is empty") from None
    checker = _Checker(header, trusted_keys)
    for number, record in records:
        checker.feed(number, record)
        if progress is not None and record["kind"] == "event":
            progress(len(checker.leaves))
    return checker.finish()


def _required_time(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _event(record: dict[str, Any], tenant_id: UUID) -> AuditEvent:
    return AuditEvent(
        tenant_id=tenant_id,
        seq=int(record["seq"]),
        id=UUID(str(record["id"])),
        occurred_at=_required_time(record["occurred_at"]),
        actor_type=str(record["actor_type"]),
        actor_id=str(record["actor_id"]),
        action=str(record["action"]),
        target_type=str(record["target_type"]),
        target_id=str(record["target_id"]),
        outcome=str(record["outcome"]),
        reason=str(record["reason"]),
        request_id=str(record["request_id"]),
        payload=str(record["payload"]),
        event_hash=bytes.fromhex(str(record["event_hash"])),
        chain_hash=bytes.fromhex(str(record["chain_hash"])),
        format=int(record.get("format", 1)),
        policy_version=str(record.get("policy_version", "")),
        source=str(record.get("source", "")),
    )
