"""Evidence packs: what an auditor needs for one tenant and period, signed, checkable offline.

A pack is a tar file:

    manifest.json          every other file's SHA-256 and size; tenant, period, when, signer
    manifest.note          a signed note (Ed25519, the platform key) over manifest.json's SHA-256
    audit/segment.jsonl    the tenant's audit events of the period, with their hashes
    audit/checkpoint.note  a checkpoint signed when the pack was made, covering the segment
    audit/proofs.json      an RFC 6962 inclusion proof of every segment event in that tree
    keys.json              the platform's public signing keys, with their validity windows
    policies.json          the policy versions the segment's events name; the matrix in force
    key_events.jsonl       key rotations and shreddings of the period (tenant and platform)
    doctor.json            the doctor's findings on the serving database, when the pack was made
    security_tests.json    the security suites' results of this build (or that none were given)
    controls.json          each control mapped to SOC 2, ISO/IEC 42001, EU AI Act, NIST AI RMF

`verify_pack` checks, with nothing but the file (and, if given, keys the auditor trusts): the
note's signature, every file's hash against the manifest (none missing, none extra), the
checkpoint's signature, each event's hash and the chain within the segment, and each event's
inclusion proof against the checkpoint's root. Any changed byte fails it.

Threat stopped: evidence assembled or edited after the fact by the party being audited.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from defusedxml import ElementTree

from tenantguard.audit import checkpoint as notes
from tenantguard.audit import merkle
from tenantguard.audit.chain import GENESIS, format_time, hash_event, link
from tenantguard.audit.checkpoints import Checkpointer, leaf_hashes
from tenantguard.audit.export import _event, _event_line
from tenantguard.audit.store import EVENT_COLUMNS, event_of
from tenantguard.authz import ACTIONS, POLICY_VERSION, ROLE_ACTIONS, SENSITIVE_ACTIONS
from tenantguard.context import PLATFORM_TENANT_ID
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.doctor import DoctorReport
from tenantguard.db.pool import Database
from tenantguard.errors import AuditVerificationFailed, RequestInvalid
from tenantguard.evidence.controls import CONTROLS

FORMAT = "tenantguard-evidence/1"
MAX_MEMBER = 512 * 1024 * 1024
_KEY_ACTIONS = ("data_key.", "signing_key.", "kek.")


def _dump(value: object) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=1, default=str) + "\n").encode()


def _lines(values: Sequence[object]) -> bytes:
    return b"".join(json.dumps(v, sort_keys=True).encode() + b"\n" for v in values)


def security_results(path: Path | None) -> dict[str, Any]:
    """A summary of the security suites from a JUnit XML file of this build's test run."""
    if path is None or not path.is_file():
        return {"provided": False, "why": "no test results were given to the pack"}
    raw = path.read_bytes()
    root = ElementTree.fromstring(raw)
    cases = [
        c for c in root.iter("testcase") if c.get("classname", "").startswith("tests.security")
    ]
    failed = [
        f"{c.get('classname')}::{c.get('name')}"
        for c in cases
        if c.find("failure") is not None or c.find("error") is not None
    ]
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    return {
        "provided": True,
        "file_sha256": hashlib.sha256(raw).hexdigest(),
        "security_tests": len(cases),
        "failed": failed,
        "skipped": skipped,
        "passed": len(cases) - len(failed) - skipped,
    }


def evidence_period(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """A period [start, end) of zoned times, in UTC, start before end; anything else (naive,
    unrepresentable in UTC, reversed) is a `RequestInvalid`."""
    if start.tzinfo is None or end.tzinfo is None:
        raise RequestInvalid("The period's times need a zone.")
    try:
        begins, ends = start.astimezone(UTC), end.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise RequestInvalid("The period's times have no UTC equivalent.") from exc
    if not begins < ends:
        raise RequestInvalid("The period's start comes before its end.")
    return begins, ends


def build_pack(
    db: Database,
    keyring: Keyring,
    checkpointer: Checkpointer,
    *,
    tenant_id: UUID,
    start: datetime,
    end: datetime,
    doctor: DoctorReport,
    test_results: Path | None,
    now: datetime,
) -> bytes:
    """The signed pack of `tenant_id` for events in [start, end)."""
    made = checkpointer.checkpoint(tenant_id)  # covers everything committed until now
    assert made is not None  # noqa: S101 (only_if_grown is off: always one)
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keys = signing.all_public_keys(tx)
        key = signing.active(tx, keyring)
        platform_key_events = [
            event_of(r)
            for r in tx.execute(
                f"SELECT {EVENT_COLUMNS} FROM tenantguard.audit_events WHERE tenant_id = %s"
                " AND action LIKE 'signing_key.%%' AND occurred_at >= %s AND occurred_at < %s"
                " ORDER BY seq",
                (PLATFORM_TENANT_ID, start, end),
            ).fetchall()
        ]
    with db.tenant_transaction(tenant_id) as tx:
        # A contiguous run of the chain: from the first event of the period to its last
        # (events commit in seq order, not always in time order, so one that began earlier
        # may sit between them: it is included, and the chain checks without gaps).
        rows = tx.execute(
            f"SELECT {EVENT_COLUMNS} FROM tenantguard.audit_events WHERE tenant_id = %s"
            " AND seq BETWEEN (SELECT min(seq) FROM tenantguard.audit_events WHERE tenant_id = %s"
            "   AND occurred_at >= %s AND occurred_at < %s)"
            " AND (SELECT max(seq) FROM tenantguard.audit_events WHERE tenant_id = %s"
            "   AND occurred_at >= %s AND occurred_at < %s)"
            " AND seq < %s ORDER BY seq",
            (tenant_id, tenant_id, start, end, tenant_id, start, end, made.tree_size),
        ).fetchall()
        events = [event_of(r) for r in rows]
        previous = GENESIS
        if events and events[0].seq > 0:
            row = tx.execute(
                "SELECT chain_hash FROM tenantguard.audit_events WHERE tenant_id = %s AND seq = %s",
                (tenant_id, events[0].seq - 1),
            ).fetchone()
            previous = bytes(row[0]) if row else GENESIS
        leaves = leaf_hashes(tx, tenant_id, size=made.tree_size)
    proofs = {
        str(e.seq): [p.hex() for p in merkle.inclusion_proof(e.seq, made.tree_size, leaves)]
        for e in events
    }
    key_events = [e for e in events if e.action.startswith(_KEY_ACTIONS)] + platform_key_events
    segment = [
        {
            "kind": "segment",
            "format": FORMAT,
            "tenant_id": str(tenant_id),
            "from": format_time(start),
            "to": format_time(end),
            "previous_chain_hash": previous.hex(),
            "events": len(events),
        },
        *(_event_line(e) for e in events),
    ]
    files: dict[str, bytes] = {
        "audit/segment.jsonl": _lines(segment),
        "audit/checkpoint.note": made.note.encode(),
        "audit/proofs.json": _dump({"tree_size": made.tree_size, "inclusion": proofs}),
        "keys.json": _dump(
            [
                {
                    "kid": k.kid,
                    "public_key": k.public_key.hex(),
                    "created_at": format_time(k.created_at),
                    "verify_until": None if k.verify_until is None else format_time(k.verify_until),
                }
                for k in keys
            ]
        ),
        "policies.json": _dump(
            {
                "in_force": sorted({e.policy_version for e in events if e.policy_version}),
                "current": {
                    "version": POLICY_VERSION,
                    "actions": dict(ACTIONS),
                    "roles": {r: sorted(a) for r, a in ROLE_ACTIONS.items()},
                    "step_up": sorted(SENSITIVE_ACTIONS),
                },
            }
        ),
        "key_events.jsonl": _lines(
            [_event_line(e) | {"tenant_id": str(e.tenant_id)} for e in key_events]
        ),
        "doctor.json": _dump({"ok": doctor.ok, "findings": [asdict(f) for f in doctor.findings]}),
        "security_tests.json": _dump(security_results(test_results)),
        "controls.json": _dump(list(CONTROLS)),
    }
    manifest = _dump(
        {
            "format": FORMAT,
            "tenant_id": str(tenant_id),
            "from": format_time(start),
            "to": format_time(end),
            "created_at": format_time(now),
            "signed_by": key.kid,
            "key_name": checkpointer.key_name,
            "checkpoint_origin": checkpointer.origin(tenant_id),
            "files": {
                name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                for name, data in sorted(files.items())
            },
        }
    )
    text = (
        f"{checkpointer.key_name}/evidence/{tenant_id}\n"
        f"{hashlib.sha256(manifest).hexdigest()}\n"
        f"time {now.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
    )
    files["manifest.json"] = manifest
    files["manifest.note"] = notes.sign_text(text, key, key_name=checkpointer.key_name).encode()
    return _canonical_tar(files, int(now.timestamp()))


def _canonical_tar(files: dict[str, bytes], mtime: int) -> bytes:
    """The one byte sequence a pack of these files has: sorted names, fixed metadata. The
    verifier rebuilds it, so a change anywhere in the file (padding and headers included)
    fails, not only a change of a member's content."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), mtime, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class PackVerdict:
    tenant_id: UUID
    events: int
    tree_size: int
    signed_by: str
    security_tests: dict[str, Any]


def _fail(why: str) -> AuditVerificationFailed:
    return AuditVerificationFailed(f"The evidence pack does not verify: {why}.")


def _members(data: bytes) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                name = member.name
                plain = member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and not (
                    member.issparse() or member.pax_headers
                )
                if not plain or name.startswith("/") or ".." in name.split("/"):
                    raise _fail(f"{name!r} is not a plain file of the pack")
                # A member can hold no more than the file it is in (no sparse expansion).
                if name in found or member.size > min(MAX_MEMBER, len(data)):
                    raise _fail(f"{name!r} is repeated or too large")
                handle = tar.extractfile(member)
                found[name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _fail("it is not a readable tar file") from exc
    return found


def verify_pack(
    data: bytes, *, trusted_keys: Sequence[signing.PublicKey] | None = None
) -> PackVerdict:
    """Check a pack offline. With `trusted_keys` (e.g. from the platform's published JWKS),
    only those may have signed it; otherwise the pack's own keys.json is used and the verdict
    names the signer, for the auditor to compare with what the platform publishes."""
    files = _members(data)
    for required in ("manifest.json", "manifest.note"):
        if required not in files:
            raise _fail(f"{required} is missing")
    try:
        manifest = json.loads(files["manifest.json"])
        listed: dict[str, dict[str, Any]] = manifest["files"]
        tenant_id = UUID(manifest["tenant_id"])
        key_name = str(manifest["key_name"])
        keys = trusted_keys if trusted_keys is not None else _keys(files["keys.json"])
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise _fail("the manifest or the key list is malformed") from exc
    text, signatures = notes.split_note(
        files["manifest.note"].decode(errors="replace"), what="evidence pack"
    )
    lines = text.split("\n")[:-1]
    if len(lines) != 3 or lines[0] != f"{key_name}/evidence/{tenant_id}":
        raise _fail("the signed note is not this pack's")
    if lines[1] != hashlib.sha256(files["manifest.json"]).hexdigest():
        raise _fail("manifest.json is not the one that was signed")
    try:
        signed_at = datetime.strptime(lines[2], "time %Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise _fail("the signed note's time is malformed") from exc
    notes.check_signatures(
        text, signatures, keys, key_name=key_name, at=signed_at, what="evidence pack"
    )
    try:
        mtime = int(
            datetime.fromisoformat(str(manifest["created_at"]).replace("Z", "+00:00")).timestamp()
        )
    except (KeyError, ValueError) as exc:
        raise _fail("the manifest's time is malformed") from exc
    if _canonical_tar(files, mtime) != data:
        raise _fail("the file is not the pack as it was made (bytes were changed or added)")
    others = set(files) - {"manifest.json", "manifest.note"}
    if others != set(listed):
        raise _fail("files are missing from the pack, or not in its manifest")
    for name in sorted(others):
        if hashlib.sha256(files[name]).hexdigest() != listed[name].get("sha256"):
            raise _fail(f"{name} was changed after the pack was signed")
    return _verify_audit(files, manifest, keys, tenant_id, key_name)


def _keys(raw: bytes) -> list[signing.PublicKey]:
    return signing.trusted_keys(json.loads(raw))


def _verify_audit(
    files: dict[str, bytes],
    manifest: dict[str, Any],
    keys: Sequence[signing.PublicKey],
    tenant_id: UUID,
    key_name: str,
) -> PackVerdict:
    head = notes.verify(
        files["audit/checkpoint.note"].decode(errors="replace"),
        keys,
        key_name=key_name,
        origin=str(manifest["checkpoint_origin"]),
    )
    proofs = json.loads(files["audit/proofs.json"])
    if int(proofs["tree_size"]) != head.tree_size:
        raise _fail("the proofs are not for the pack's checkpoint")
    lines = files["audit/segment.jsonl"].decode().splitlines()
    header = json.loads(lines[0])
    if header.get("tenant_id") != str(tenant_id) or int(header["events"]) != len(lines) - 1:
        raise _fail("the audit segment's header does not match it")
    previous = bytes.fromhex(str(header["previous_chain_hash"]))
    for number, line in enumerate(lines[1:], start=2):
        event = _event(json.loads(line), tenant_id)
        where = f"audit/segment.jsonl line {number} (seq {event.seq})"
        if hash_event(event.canonical()) != event.event_hash:
            raise _fail(f"{where}: the event does not match its hash")
        if link(previous, event.event_hash) != event.chain_hash:
            raise _fail(f"{where}: the chain does not follow")
        path = [bytes.fromhex(p) for p in proofs["inclusion"].get(str(event.seq), [])]
        try:
            merkle.verify_inclusion(
                event.seq, head.tree_size, merkle.leaf_hash(event.event_hash), path, head.root_hash
            )
        except AuditVerificationFailed as exc:
            raise _fail(f"{where}: not in the checkpointed log") from exc
        previous = event.chain_hash
    return PackVerdict(
        tenant_id=tenant_id,
        events=len(lines) - 1,
        tree_size=head.tree_size,
        signed_by=str(manifest.get("signed_by", "")),
        security_tests=json.loads(files["security_tests.json"]),
    )
