"""Adversarial review of the tamper-evident audit log: the C2SP note parser, key windows at
second precision, the scheduled verification pass, stored rows that contradict their notes,
witness copies, offline export verification (trust anchors, truncation, record order) and the
proof routes (odd sizes, isolation)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import shutil
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from tenantguard.audit import checkpoint as notes
from tenantguard.audit import merkle
from tenantguard.audit.chain import GENESIS, encode_event, hash_event, link, verify_chain
from tenantguard.audit.checkpoints import (
    Checkpointer,
    leaf_hashes,
    stored,
    verify_checkpoints,
    witnessed,
)
from tenantguard.audit.export import seal_text, verify_export, write_export
from tenantguard.audit.store import AuditRecord, append, iter_events
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import AuditVerificationFailed
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
MakeTenant = Callable[[str], NewTenant]
NAME = "tenantguard"
ACTOR = Principal(type="system", id="review")


# -- helpers -------------------------------------------------------------------------------


def _key(clock: FakeClock) -> tuple[signing.SigningKey, signing.PublicKey]:
    key = signing.SigningKey("k", Ed25519PrivateKey.generate())
    public = signing.PublicKey("k", key.public_bytes(), clock.now() - timedelta(days=1), None)
    return key, public


def _signed(text: str, key: signing.SigningKey, name: str = NAME) -> str:
    """A note over an arbitrary `text` (its four lines, each ending in a newline)."""
    signature = notes.key_hash(name, key.public_bytes()) + key.sign(text.encode())
    return f"{text}\n\u2014 {name} {base64.b64encode(signature).decode()}\n"


def _add_events(db: Database, tenant_id: UUID, n: int, now: datetime) -> None:
    for i in range(n):
        with db.tenant_transaction(tenant_id) as tx:
            append(
                tx,
                tenant_id=tenant_id,
                request_id="review",
                now=now,
                record=AuditRecord(action=f"review.event{i}", outcome="success", actor=ACTOR),
            )


@pytest.fixture
def checkpointer(
    db: Database, keyring: Keyring, clock: FakeClock, settings: Settings, signing_key: str
) -> Checkpointer:
    return Checkpointer(db, keyring, settings.checkpoints(), clock=clock)


def _export(
    db: Database, settings: Settings, tenant_id: UUID, clock: FakeClock, keyring: Keyring
) -> list[str]:
    """The export of `tenant_id`, as the CLI writes it (stored and witnessed notes, all keys,
    and a seal by the platform's key)."""
    config = settings.checkpoints()
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keys = signing.all_public_keys(tx)
        key = signing.active(tx, keyring)
    out = io.StringIO()
    with db.tenant_transaction(tenant_id) as tx:
        found = [c.note for c in stored(tx, tenant_id)]
        found += [n for n in witnessed(config.witness_dir, tenant_id) if n not in found]
        leaves = leaf_hashes(tx, tenant_id)
        count = len(leaves)
        events = list(iter_events(tx, tenant_id=tenant_id))
        seal = notes.sign_text(
            seal_text(
                key_name=config.origin,
                tenant_id=tenant_id,
                events=count,
                root=merkle.root(leaves),
                head=events[-1].chain_hash if events else GENESIS,
                at=clock.now(),
            ),
            key,
            key_name=config.origin,
        )
        write_export(
            out,
            tx,
            tenant_id=tenant_id,
            origin=notes.origin_of(config.origin, tenant_id),
            key_name=config.origin,
            keys=keys,
            checkpoint_notes=found,
            event_count=count,
            exported_at=clock.now(),
            seal=seal,
        )
    return out.getvalue().splitlines(keepends=True)


def _trusted(db: Database) -> list[signing.PublicKey]:
    """The platform's keys, pinned as an auditor would (from its published key list)."""
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        return signing.all_public_keys(tx)


def _kinds(lines: list[str]) -> list[str]:
    return [json.loads(line)["kind"] for line in lines]


@pytest.fixture
def exported(
    db: Database,
    settings: Settings,
    clock: FakeClock,
    checkpointer: Checkpointer,
    make_tenant: MakeTenant,
) -> tuple[NewTenant, list[str]]:
    """A tenant with two checkpoints (after 2 and after 6 events) and its verified export."""
    tenant = make_tenant("acme")
    checkpointer.checkpoint(tenant.tenant_id)
    _add_events(db, tenant.tenant_id, 4, clock.now())
    checkpointer.checkpoint(tenant.tenant_id)
    lines = _export(db, settings, tenant.tenant_id, clock, checkpointer._keyring)
    assert verify_export(lines, trusted_keys=_trusted(db)).events == 6
    return tenant, lines


# -- the note parser -----------------------------------------------------------------------


@pytest.mark.parametrize("digit", ["\u00b2", "\u2460"])
def test_a_note_whose_size_is_a_unicode_digit_fails_closed(digit: str) -> None:
    """Verification fails closed: any malformed note is `AuditVerificationFailed`, never a
    stray ValueError (which the scheduled pass and the CLI do not catch)."""
    clock = FakeClock()
    key, public = _key(clock)
    note = notes.sign(
        notes.Checkpoint("o", 3, merkle.root([bytes(32)] * 3), clock.now()), key, key_name=NAME
    )
    with pytest.raises(AuditVerificationFailed):
        notes.verify(note.replace("\n3\n", f"\n{digit}\n", 1), [public], key_name=NAME)


def test_the_size_line_is_ascii_decimal_only() -> None:
    """C2SP: the tree size is ASCII decimal. A note whose size is written in other digits
    (one text for two encodings of the same checkpoint) is refused."""
    clock = FakeClock()
    key, public = _key(clock)
    good = notes.sign(
        notes.Checkpoint("o", 3, merkle.root([bytes(32)] * 3), clock.now()), key, key_name=NAME
    )
    lines = good.split("\n")
    text = "\n".join([lines[0], "\uff13", lines[2], lines[3]]) + "\n"
    with pytest.raises(AuditVerificationFailed):
        notes.verify(_signed(text, key), [public], key_name=NAME)


@pytest.mark.parametrize(
    "change",
    ["crlf", "en dash", "extra text line", "padding stripped", "space in signature", "trailing"],
)
def test_note_encoding_tricks_are_refused(change: str) -> None:
    """Line endings, look-alike dashes, a fifth text line, unpadded or split base64, and text
    after the signatures all fail verification (never a crash, never a pass)."""
    clock = FakeClock()
    key, public = _key(clock)
    note = notes.sign(
        notes.Checkpoint("o", 3, merkle.root([bytes(32)] * 3), clock.now()), key, key_name=NAME
    )
    text, _, sig_line = note.partition("\n\n")
    sig = sig_line.rstrip("\n").split(" ")[2]
    forged = {
        "crlf": note.replace("\n", "\r\n"),
        "en dash": note.replace("\u2014", "\u2013"),
        "extra text line": _signed(text + "\nextra\n", key),
        "padding stripped": note.replace(sig, sig.rstrip("=")),
        "space in signature": note.replace(sig, sig[:10] + " " + sig[10:]),
        "trailing": note + "junk",
    }[change]
    with pytest.raises(AuditVerificationFailed):
        notes.verify(forged, [public], key_name=NAME, origin="o")


def test_a_second_signature_by_our_name_with_a_foreign_key_fails_the_note() -> None:
    """A genuine signature plus one more under the platform's key name by a stranger's key
    fails the whole note (no "one good signature is enough")."""
    clock = FakeClock()
    key, public = _key(clock)
    stranger, _ = _key(clock)
    note = notes.sign(
        notes.Checkpoint("o", 3, merkle.root([bytes(32)] * 3), clock.now()), key, key_name=NAME
    )
    text = note.partition("\n\n")[0] + "\n"
    extra = notes.key_hash(NAME, stranger.public_bytes()) + stranger.sign(text.encode())
    with pytest.raises(AuditVerificationFailed):
        notes.verify(
            note + f"\u2014 {NAME} {base64.b64encode(extra).decode()}\n", [public], key_name=NAME
        )


def test_a_note_by_our_key_under_another_name_does_not_count() -> None:
    """A signature with the platform's key but another key name is not the platform's."""
    clock = FakeClock()
    key, public = _key(clock)
    head = notes.Checkpoint("o", 1, merkle.root([bytes(32)]), clock.now())
    with pytest.raises(AuditVerificationFailed):
        notes.verify(notes.sign(head, key, key_name="other"), [public], key_name=NAME)


# -- key windows at second precision -------------------------------------------------------


def test_a_checkpoint_signed_just_after_a_key_rotation_verifies(
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    settings: Settings,
    signing_key: str,
    make_tenant: MakeTenant,
) -> None:
    """A key rotated at hh:mm:ss.6 and a checkpoint signed with it at hh:mm:ss.7 (real clocks
    have microseconds): the checkpoint verifies. It is append-only: if it did not, the log
    would be reported as tampered with forever."""
    tenant = make_tenant("t")
    clock.advance(timedelta(microseconds=600_000))
    platform = TenantContext(PLATFORM_TENANT_ID, ACTOR, frozenset(), "review-rotate")
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        signing.rotate(tx, platform, keyring, now=clock.now())
    clock.advance(timedelta(microseconds=100_000))
    Checkpointer(db, keyring, settings.checkpoints(), clock=clock).checkpoint(tenant.tenant_id)
    assert verify_checkpoints(db, settings.checkpoints(), tenant.tenant_id) == 2


# -- the scheduled verification pass -------------------------------------------------------


def _cut_back(owner_in: Any, tenant_id: UUID) -> None:
    conn = owner_in(tenant_id)
    conn.execute("ALTER TABLE tenantguard.audit_events DISABLE TRIGGER audit_events_append_only")
    try:
        conn.execute(
            "DELETE FROM tenantguard.audit_events WHERE tenant_id = %s AND seq = (SELECT"
            " max(seq) FROM tenantguard.audit_events WHERE tenant_id = %s)",
            (tenant_id, tenant_id),
        )
    finally:
        conn.execute("ALTER TABLE tenantguard.audit_events ENABLE TRIGGER audit_events_append_only")


def _poison_row(db: Database, tenant_id: UUID) -> None:
    """What the app role may do: INSERT a checkpoint row, here one whose note crashes parse."""
    note = f"tenantguard/audit/{tenant_id}\n\u00b2\n{'A' * 43}=\ntime 2020-01-01T00:00:00Z\n\n"
    note += f"\u2014 {NAME} {'A' * 92}\n"
    with db.tenant_transaction(tenant_id) as tx:
        tx.execute(
            "INSERT INTO tenantguard.audit_checkpoints (tenant_id, id, tree_size, root_hash,"
            " signed_at, kid, note) VALUES (%s, %s, 0, %s, now(), 'x', %s)",
            (tenant_id, uuid4(), bytes(32), note),
        )


def _poison_witness(settings: Settings, tenant_id: UUID) -> None:
    """What anyone who can write the witness directory may do: drop a non-UTF-8 file."""
    folder = settings.checkpoints().witness_dir / str(tenant_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0000000000000000-x.checkpoint").write_bytes(b"\xff\xfe not a note\n")


@pytest.mark.parametrize("poison", ["stored row", "witness file"])
def test_one_poisoned_tenant_does_not_silence_the_alarm_for_the_others(
    db: Database,
    settings: Settings,
    checkpointer: Checkpointer,
    make_tenant: MakeTenant,
    owner_in: Any,
    poison: str,
) -> None:
    """The verification pass fails closed per tenant: a checkpoint that cannot even be
    parsed is itself an alarm, and the next tenant (whose log was cut back) is still checked
    and reported."""
    poisoned, cut = make_tenant("poisoned"), make_tenant("cut")
    for tenant in (poisoned, cut):
        checkpointer.checkpoint(tenant.tenant_id)
    if poison == "stored row":
        _poison_row(db, poisoned.tenant_id)
    else:
        _poison_witness(settings, poisoned.tenant_id)
    _cut_back(owner_in, cut.tenant_id)
    ids = [poisoned.tenant_id, cut.tenant_id]
    assert checkpointer.verify_all(ids, request_id="review-pass") == ids


# -- stored rows that contradict their notes -----------------------------------------------


def test_a_row_whose_columns_contradict_its_note_is_caught_or_harmless(
    db: Database,
    clock: FakeClock,
    settings: Settings,
    checkpointer: Checkpointer,
    make_tenant: MakeTenant,
) -> None:
    """An insider with the app role INSERTs a checkpoint row that copies a genuine note but
    claims tree_size 10**15 and a signing time in 2999. Either the verifier reports the row,
    or it changes nothing: the scheduled pass still signs a grown log."""
    tenant = make_tenant("t")
    genuine = checkpointer.checkpoint(tenant.tenant_id)
    assert genuine is not None
    with db.tenant_transaction(tenant.tenant_id) as tx:
        tx.execute(
            "INSERT INTO tenantguard.audit_checkpoints (tenant_id, id, tree_size, root_hash,"
            " signed_at, kid, note) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                tenant.tenant_id,
                uuid4(),
                10**15,
                genuine.root_hash,
                datetime(2999, 1, 1, tzinfo=clock.now().tzinfo),
                genuine.kid,
                genuine.note,
            ),
        )
    _add_events(db, tenant.tenant_id, 3, clock.now())
    try:
        verify_checkpoints(db, settings.checkpoints(), tenant.tenant_id)
        flagged = False
    except AuditVerificationFailed:
        flagged = True
    assert flagged or checkpointer.checkpoint_all([tenant.tenant_id]) == 1


# -- witness copies ------------------------------------------------------------------------


def test_a_missing_witness_copy_is_reported(
    settings: Settings, db: Database, checkpointer: Checkpointer, make_tenant: MakeTenant
) -> None:
    """Every stored checkpoint was written to the witness directory before it committed; a
    stored one without its witness copy means the copy outside the database was removed."""
    tenant = make_tenant("t")
    checkpointer.checkpoint(tenant.tenant_id)
    shutil.rmtree(settings.checkpoints().witness_dir / str(tenant.tenant_id))
    with pytest.raises(AuditVerificationFailed):
        verify_checkpoints(db, settings.checkpoints(), tenant.tenant_id)


def test_a_checkpoint_of_another_tenant_in_the_witness_folder_is_an_alarm(
    settings: Settings, db: Database, checkpointer: Checkpointer, make_tenant: MakeTenant
) -> None:
    """A's genuine note copied into B's witness folder (same key, same size) fails on origin."""
    a, b = make_tenant("a"), make_tenant("b")
    made = checkpointer.checkpoint(a.tenant_id)
    checkpointer.checkpoint(b.tenant_id)
    assert made is not None
    folder = settings.checkpoints().witness_dir / str(b.tenant_id)
    (folder / "9999999999999999-copied.checkpoint").write_text(made.note)
    with pytest.raises(AuditVerificationFailed, match="another log"):
        verify_checkpoints(db, settings.checkpoints(), b.tenant_id)


def test_checkpoints_taken_during_appends_are_real_prefixes(
    db: Database,
    clock: FakeClock,
    settings: Settings,
    checkpointer: Checkpointer,
    make_tenant: MakeTenant,
) -> None:
    """Checkpoints signed while another thread appends each cover an actual prefix of the
    log: all of them verify against the final log."""
    tenant = make_tenant("busy")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while not stop.is_set():
                _add_events(db, tenant.tenant_id, 1, clock.now())
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(15):
            checkpointer.checkpoint(tenant.tenant_id)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors
    assert verify_checkpoints(db, settings.checkpoints(), tenant.tenant_id) == 30


def test_verification_work_does_not_grow_with_events_times_checkpoints(
    db: Database,
    clock: FakeClock,
    settings: Settings,
    checkpointer: Checkpointer,
    make_tenant: MakeTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checking c checkpoints of a log of n events needs about one pass over the log (the
    roots of all prefixes can be had in one sweep), not c full Merkle tree computations."""
    tenant = make_tenant("big")
    _add_events(db, tenant.tenant_id, 254, clock.now())
    for _ in range(10):
        checkpointer.checkpoint(tenant.tenant_id)
    calls = [0]
    real = merkle.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        calls[0] += 1
        return real(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting)
    assert verify_checkpoints(db, settings.checkpoints(), tenant.tenant_id) == 20
    n = 256
    assert calls[0] <= 2 * n + 20 * 2 * 8, calls[0]


# -- offline export verification -----------------------------------------------------------


def _forge(lines: list[str], tenant_id: UUID, attacker: signing.SigningKey) -> list[str]:
    """Rewrite event seq 1 (actor), recompute every hash after it, replace the platform's
    keys by the attacker's and re-sign every checkpoint over the rewritten log."""
    records = [json.loads(line) for line in lines]
    header = records[0]
    previous, leaves = GENESIS, []
    events: list[dict[str, Any]] = []
    for record in records:
        if record["kind"] != "event":
            continue
        if record["seq"] == 1:
            record["actor_id"] = "nobody-did-this"
        fields = {
            k: record[k]
            for k in (
                "seq",
                "actor_type",
                "actor_id",
                "action",
                "target_type",
                "target_id",
                "outcome",
                "reason",
                "request_id",
                "payload",
            )
        }
        for extra in ("format", "policy_version", "source"):  # fields of later event formats
            if extra in record:
                fields[extra] = record[extra]
        event_hash = hash_event(
            encode_event(
                tenant_id=tenant_id,
                id=UUID(record["id"]),
                occurred_at=datetime.fromisoformat(record["occurred_at"].replace("Z", "+00:00")),
                **fields,
            )
        )
        previous = link(previous, event_hash)
        record["event_hash"], record["chain_hash"] = event_hash.hex(), previous.hex()
        leaves.append(merkle.leaf_hash(event_hash))
        events.append(record)
    key = {
        "kind": "key",
        "kid": signing.thumbprint(attacker.public_bytes()),  # a careful forger
        "public_key": base64.b64encode(attacker.public_bytes()).decode(),
        "created_at": "2000-01-01T00:00:00.000000Z",
        "verify_until": None,
    }
    seal_note = notes.sign_text(
        seal_text(
            key_name=header["key_name"],
            tenant_id=tenant_id,
            events=len(leaves),
            root=merkle.root(leaves),
            head=previous,
            at=datetime.fromisoformat(header["exported_at"].replace("Z", "+00:00")),
        ),
        attacker,
        key_name=header["key_name"],
    )
    checkpoints = []
    for record in records:
        if record["kind"] == "checkpoint":
            head, _, _ = notes.parse(record["note"])
            forged = dataclasses.replace(head, root_hash=merkle.root(leaves[: head.tree_size]))
            note = notes.sign(forged, attacker, key_name=header["key_name"])
            checkpoints.append({"kind": "checkpoint", "note": note})
    seal = {"kind": "seal", "note": seal_note}
    return [json.dumps(r) + "\n" for r in [header, seal, key, *checkpoints, *events]]


def test_an_export_resigned_with_a_key_of_the_forgers_verifies_not(
    exported: tuple[NewTenant, list[str]], db: Database
) -> None:
    """An export whose history was rewritten and whose checkpoints were re-signed by a key
    that was never the platform's does not verify."""
    tenant, lines = exported
    attacker = signing.SigningKey("attacker", Ed25519PrivateKey.generate())
    forged = _forge(lines, tenant.tenant_id, attacker)
    assert verify_export(forged, trusted_keys=None).events == 6  # self-consistent, unpinned
    with pytest.raises(AuditVerificationFailed):
        verify_export(forged, trusted_keys=_trusted(db))


def test_an_export_cut_back_with_its_checkpoint_dropped_verifies_not(
    exported: tuple[NewTenant, list[str]], db: Database
) -> None:
    """An export of the whole log cut back to the first checkpoint (later checkpoints and
    events dropped, header count fixed) is not accepted as the tenant's full log."""
    _, lines = exported
    kinds = _kinds(lines)
    first_note = json.loads(lines[kinds.index("checkpoint")])["note"]
    first_size = notes.parse(first_note)[0].tree_size
    kept = [lines[0], *[line for line, kind in zip(lines, kinds, strict=True) if kind == "key"]]
    kept += [json.dumps({"kind": "checkpoint", "note": first_note}) + "\n"]
    kept += [line for line, kind in zip(lines, kinds, strict=True) if kind == "event"][:first_size]
    kept[0] = json.dumps({**json.loads(lines[0]), "events": first_size}) + "\n"
    assert first_size < _kinds(lines).count("event")
    with pytest.raises(AuditVerificationFailed):  # without its seal
        verify_export(kept, trusted_keys=_trusted(db))
    with_seal = [kept[0], lines[kinds.index("seal")], *kept[1:]]
    with pytest.raises(AuditVerificationFailed):  # with the seal of the whole export
        verify_export(with_seal, trusted_keys=_trusted(db))


@pytest.mark.parametrize("change", ["naive key time", "null event count"])
def test_a_malformed_export_fails_closed(
    exported: tuple[NewTenant, list[str]], change: str, db: Database
) -> None:
    """A key line whose `created_at` has no time zone, or a header whose event count is
    null, is a malformed export, reported as `AuditVerificationFailed` (no TypeError)."""
    _, lines = exported
    forged = []
    for line in lines:
        record = json.loads(line)
        if record["kind"] == "key" and change == "naive key time":  # every key: the signer too
            record["created_at"] = "2000-01-01T00:00:00"
        if record["kind"] == "header" and change == "null event count":
            record["events"] = None
        forged.append(json.dumps(record) + "\n")
    with pytest.raises(AuditVerificationFailed):
        verify_export(forged, trusted_keys=_trusted(db))


def test_export_record_order_and_foreign_records_are_refused(
    db: Database,
    clock: FakeClock,
    settings: Settings,
    exported: tuple[NewTenant, list[str]],
    checkpointer: Checkpointer,
    make_tenant: MakeTenant,
) -> None:
    """A second header, a key or a checkpoint after the events, an event of another tenant
    in place of one of ours, a header that names another tenant: each is refused."""
    _, lines = exported
    other = make_tenant("other")
    other_lines = _export(db, settings, other.tenant_id, clock, checkpointer._keyring)
    kinds = _kinds(lines)
    events = [i for i, k in enumerate(kinds) if k == "event"]
    key = lines[kinds.index("key")]
    checkpoint = lines[kinds.index("checkpoint")]
    other_event = other_lines[_kinds(other_lines).index("event")]
    header = json.loads(lines[0])
    cases = {
        "second header": [*lines, lines[0]],
        "key after events": [*lines, key],
        "checkpoint after events": [*lines, checkpoint],
        "foreign event": [*lines[: events[0]], other_event, *lines[events[0] + 1 :]],
        "header lies": [
            json.dumps({**header, "tenant_id": str(other.tenant_id)}) + "\n",
            *lines[1:],
        ],
        "origin lies": [
            json.dumps({**header, "origin": f"{NAME}/audit/{other.tenant_id}"}) + "\n",
            *lines[1:],
        ],
    }
    accepted = []
    for name, forged in cases.items():
        try:
            verify_export(forged, trusted_keys=_trusted(db))
        except AuditVerificationFailed:
            continue
        accepted.append(name)
    assert not accepted


# -- the proof routes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "inclusion?index=0&tree_size=9223372036854775808",
        "inclusion?index=0&tree_size=100000000000000000000000000000",
        "consistency?first=1&second=9223372036854775808",
    ],
)
def test_a_tree_size_past_bigint_is_a_client_error(
    client: TestClient, as_tenant: AsTenant, query: str
) -> None:
    """A proof asked for a tree size no log can have (>= 2**63) is a 4xx, not a 500."""
    _, h = as_tenant("acme")
    answer = client.get(f"/api/audit/proofs/{query}", headers=h)
    assert 400 <= answer.status_code < 500, (query, answer.status_code, answer.text)


@pytest.mark.parametrize(
    "query",
    [
        "inclusion?index=9223372036854775808&tree_size=1",
        "inclusion?index=-1&tree_size=1",
        "inclusion?index=0&tree_size=0",
        "consistency?first=0&second=1",
        "inclusion?index=0&tree_size=1.5",
        "inclusion?index=0",
    ],
)
def test_odd_proof_queries_are_client_errors(
    client: TestClient, as_tenant: AsTenant, query: str
) -> None:
    """Out-of-range, huge indexes, zero, fractional or missing sizes are 4xx, never a 500."""
    _, h = as_tenant("acme")
    answer = client.get(f"/api/audit/proofs/{query}", headers=h)
    assert 400 <= answer.status_code < 500, (query, answer.status_code, answer.text)


def test_proofs_and_checkpoints_never_show_another_tenants_log(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    """A tenant's proofs are over its own leaves only: B's longer log does not let A ask for
    sizes beyond A's own, and A's latest checkpoint is A's."""
    a, ha = as_tenant("a")
    b, hb = as_tenant("b")
    _add_events(db, b.tenant_id, 5, clock.now())
    with db.tenant_transaction(a.tenant_id) as tx:
        size_a = len(leaf_hashes(tx, a.tenant_id))
    too_far = client.get(f"/api/audit/proofs/inclusion?index=0&tree_size={size_a + 1}", headers=ha)
    assert too_far.status_code == 422
    own = client.get(f"/api/audit/proofs/inclusion?index=0&tree_size={size_a}", headers=ha)
    assert own.status_code == 200
    with db.tenant_transaction(a.tenant_id) as tx:
        assert base64.b64decode(own.json()["leaf_hash"]) == leaf_hashes(tx, a.tenant_id)[0]
    assert client.post("/api/audit/checkpoints", headers=hb).status_code == 201
    assert client.get("/api/audit/checkpoints/latest", headers=ha).status_code == 404


def test_concurrent_appends_to_one_chain_stay_one_chain(
    db: Database, clock: FakeClock, make_tenant: MakeTenant
) -> None:
    """Eight writers appending to the same tenant at once: every append lands, the sequence
    has no gap or duplicate, and the chain verifies (each append read the head only once it
    held the tenant's lock)."""
    tenant = make_tenant("contended")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        before = len(list(iter_events(tx, tenant_id=tenant.tenant_id)))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            barrier.wait()
            _add_events(db, tenant.tenant_id, 25, clock.now())
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list(iter_events(tx, tenant_id=tenant.tenant_id))
    assert len(events) == before + 200
    verdict = verify_chain(events)
    assert verdict.ok, verdict.problem
