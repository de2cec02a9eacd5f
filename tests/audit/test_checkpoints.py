"""Signed checkpoints (C2SP notes) of the Merkle log, their witness copies, the proof routes,
and the detection of rewritten or rolled-back logs against earlier checkpoints."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from tenantguard.audit import checkpoint as notes
from tenantguard.audit import merkle
from tenantguard.audit.checkpoints import Checkpointer, leaf_hashes, witnessed
from tenantguard.audit.store import AuditRecord, append, iter_events
from tenantguard.context import PLATFORM_TENANT_ID, Principal
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import AuditVerificationFailed
from tenantguard.gateway import create_app
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
TEST_ACTOR = Principal("system", "tests")
NAME = "tenantguard"


def _key() -> tuple[signing.SigningKey, signing.PublicKey, FakeClock]:
    private = Ed25519PrivateKey.generate()
    clock = FakeClock()
    key = signing.SigningKey("k", private)
    public = signing.PublicKey("k", key.public_bytes(), clock.now() - timedelta(days=1), None)
    return key, public, clock


def _note(size: int = 3, *, clock: FakeClock, key: signing.SigningKey) -> str:
    head = notes.Checkpoint(
        "tenantguard/audit/t", size, merkle.root([bytes(32)] * size), clock.now()
    )
    return notes.sign(head, key, key_name=NAME)


# -- the note, pure ------------------------------------------------------------------------


def test_a_note_has_the_c2sp_shape_and_verifies() -> None:
    key, public, clock = _key()
    note = _note(clock=clock, key=key)
    lines = note.split("\n")
    assert lines[:2] == ["tenantguard/audit/t", "3"]
    assert lines[3].startswith("time ")
    assert lines[4] == ""
    assert lines[5].startswith("\u2014 tenantguard ")
    signature = base64.b64decode(lines[5].split(" ")[2])
    assert signature[:4] == notes.key_hash(NAME, public.public_key)  # C2SP key hash
    head = notes.verify(note, [public], key_name=NAME, origin="tenantguard/audit/t")
    assert head.tree_size == 3


def test_a_cosignature_by_another_name_is_ignored() -> None:
    key, public, clock = _key()
    witness = Ed25519PrivateKey.generate()
    note = _note(clock=clock, key=key)
    text = note.split("\n\n")[0] + "\n"
    extra = base64.b64encode(b"wit!" + witness.sign(text.encode())).decode()
    notes.verify(note + f"\u2014 witness.example {extra}\n", [public], key_name=NAME)


def _mutations(note: str) -> dict[str, str]:
    text, _, signature = note.partition("\n\n")
    origin, size, root, moment = text.split("\n")
    other_root = base64.b64encode(merkle.leaf_hash(b"x")).decode()
    return {
        "size": "\n".join([origin, str(int(size) + 1), root, moment]) + "\n\n" + signature,
        "root": "\n".join([origin, size, other_root, moment]) + "\n\n" + signature,
        "time": "\n".join([origin, size, root, "time 2020-01-01T00:00:00Z"]) + "\n\n" + signature,
        "origin": "\n".join(["tenantguard/audit/u", size, root, moment]) + "\n\n" + signature,
        "no signature": text + "\n\n",
        "truncated signature": note[:-10] + "\n",
        "not a note": "hello\n",
        "leading zero": "\n".join([origin, "0" + size, root, moment]) + "\n\n" + signature,
    }


@pytest.mark.parametrize(
    "change",
    [
        "size",
        "root",
        "time",
        "origin",
        "no signature",
        "truncated signature",
        "not a note",
        "leading zero",
    ],
)
def test_any_change_to_a_note_is_refused(change: str) -> None:
    key, public, clock = _key()
    forged = _mutations(_note(clock=clock, key=key))[change]
    with pytest.raises(AuditVerificationFailed):
        notes.verify(forged, [public], key_name=NAME, origin="tenantguard/audit/t")


def test_a_checkpoint_signed_by_an_unknown_key_is_refused() -> None:
    key, public, clock = _key()
    stranger, _, _ = _key()
    with pytest.raises(AuditVerificationFailed):
        notes.verify(_note(clock=clock, key=stranger), [public], key_name=NAME)
    note = _note(clock=clock, key=key)
    late = dataclasses.replace(public, created_at=clock.now() + timedelta(seconds=1))
    with pytest.raises(AuditVerificationFailed):  # a key not yet valid when it claims to sign
        notes.verify(note, [late], key_name=NAME)
    retired = dataclasses.replace(public, verify_until=clock.now())
    with pytest.raises(AuditVerificationFailed):  # a key already retired then
        notes.verify(note, [retired], key_name=NAME)


# -- the service ---------------------------------------------------------------------------


@pytest.fixture
def checkpointer(
    db: Database, keyring: Keyring, clock: FakeClock, settings: Settings, signing_key: str
) -> Checkpointer:
    return Checkpointer(db, keyring, settings.checkpoints(), clock=clock)


def _events(client: TestClient, headers: dict[str, str], n: int) -> None:
    for _ in range(n):
        body = {"key": f"k-{uuid4().hex[:8]}", "content": "c"}
        created = client.post("/api/memory", json=body, headers=headers)
        assert created.status_code == 201


def _b64s(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def test_checkpoints_and_proofs_verify_independently(
    client: TestClient, as_tenant: AsTenant, db: Database, settings: Settings
) -> None:
    """A checkpoint on demand; then every event's inclusion proof and the consistency proof
    between two checkpoints check out with nothing but RFC 9162 and the JWKS-like key list."""
    tenant, h = as_tenant("acme")
    _events(client, h, 3)
    first = client.post("/api/audit/checkpoints", headers=h)
    assert first.status_code == 201, first.text
    _events(client, h, 4)
    second = client.post("/api/audit/checkpoints", headers=h).json()
    latest = client.get("/api/audit/checkpoints/latest", headers=h).json()
    assert latest == second
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keys = signing.all_public_keys(tx)
    origin = f"{settings.audit_origin}/audit/{tenant.tenant_id}"
    a = notes.verify(first.json()["note"], keys, key_name=NAME, origin=origin)
    b = notes.verify(second["note"], keys, key_name=NAME, origin=origin)
    assert a.tree_size < b.tree_size
    for index in range(b.tree_size):
        proof = client.get(
            f"/api/audit/proofs/inclusion?index={index}&tree_size={b.tree_size}", headers=h
        ).json()
        merkle.verify_inclusion(
            index,
            b.tree_size,
            base64.b64decode(proof["leaf_hash"]),
            _b64s(proof["audit_path"]),
            b.root_hash,
        )
    consistency = client.get(
        f"/api/audit/proofs/consistency?first={a.tree_size}&second={b.tree_size}", headers=h
    ).json()
    merkle.verify_consistency(
        a.tree_size, b.tree_size, _b64s(consistency["consistency"]), a.root_hash, b.root_hash
    )
    assert sorted(witnessed(settings.checkpoints().witness_dir, tenant.tenant_id)) == sorted(
        [first.json()["note"], second["note"]]
    )


def test_proofs_past_the_log_are_invalid_requests(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("acme")
    _events(client, h, 2)
    for url in (
        "/api/audit/proofs/inclusion?index=5&tree_size=9999",
        "/api/audit/proofs/inclusion?index=3&tree_size=2",
        "/api/audit/proofs/consistency?first=3&second=9999",
        "/api/audit/proofs/consistency?first=3&second=2",
    ):
        answer = client.get(url, headers=h)
        assert answer.status_code == 422, (url, answer.text)
    assert client.get("/api/audit/checkpoints/latest", headers=h).status_code == 404


def test_the_scheduled_pass_signs_only_grown_logs(
    checkpointer: Checkpointer, make_tenant: Callable[[str], NewTenant]
) -> None:
    tenant = make_tenant("t")  # creating it wrote audit events
    quiet = make_tenant("quiet")
    assert checkpointer.checkpoint_all([tenant.tenant_id, quiet.tenant_id]) == 2
    assert checkpointer.checkpoint_all([tenant.tenant_id, quiet.tenant_id]) == 0


def _owner_edit(owner_in: Any, tenant: NewTenant, statement: str) -> None:
    conn = owner_in(tenant.tenant_id)
    conn.execute("ALTER TABLE tenantguard.audit_events DISABLE TRIGGER audit_events_append_only")
    try:
        conn.execute(statement, (tenant.tenant_id,) * statement.count("%s"))
    finally:
        conn.execute("ALTER TABLE tenantguard.audit_events ENABLE TRIGGER audit_events_append_only")


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        (
            "DELETE FROM tenantguard.audit_events WHERE tenant_id = %s AND seq = (SELECT"
            " max(seq) FROM tenantguard.audit_events WHERE tenant_id = %s)",
            "cut back",
        ),
        (
            "UPDATE tenantguard.audit_events SET event_hash = sha256(event_hash)"
            " WHERE tenant_id = %s AND seq = 0",
            "history was changed",
        ),
    ],
    ids=["rolled back", "rewritten"],
)
def test_a_rolled_back_or_rewritten_log_fails_against_a_checkpoint(
    checkpointer: Checkpointer,
    make_tenant: Callable[[str], NewTenant],
    owner_in: Any,
    statement: str,
    why: str,
) -> None:
    """The chain of a log cut at its end still verifies by itself; a checkpoint of the longer
    log does not let it pass. Neither does one whose old events were recomputed."""
    tenant = make_tenant("t")
    assert checkpointer.checkpoint(tenant.tenant_id) is not None
    assert checkpointer.check_against(tenant.tenant_id) == 2  # the row and its witness copy
    _owner_edit(owner_in, tenant, statement)
    with pytest.raises(AuditVerificationFailed) as caught:
        checkpointer.check_against(tenant.tenant_id)
    assert why in caught.value.detail


def test_the_witness_copy_catches_a_deleted_checkpoint_row(
    checkpointer: Checkpointer, make_tenant: Callable[[str], NewTenant], owner_in: Any
) -> None:
    """An insider who drops the checkpoint rows and cuts the log back is still caught by the
    copy outside the database."""
    tenant = make_tenant("t")
    checkpointer.checkpoint(tenant.tenant_id)
    conn = owner_in(tenant.tenant_id)
    for table in ("audit_checkpoints", "audit_events"):
        conn.execute(f"ALTER TABLE tenantguard.{table} DISABLE TRIGGER {table}_append_only")
    try:
        conn.execute(
            "DELETE FROM tenantguard.audit_checkpoints WHERE tenant_id = %s", (tenant.tenant_id,)
        )
        conn.execute(
            "DELETE FROM tenantguard.audit_events WHERE tenant_id = %s AND seq > 0",
            (tenant.tenant_id,),
        )
    finally:
        for table in ("audit_checkpoints", "audit_events"):
            conn.execute(f"ALTER TABLE tenantguard.{table} ENABLE TRIGGER {table}_append_only")
    with pytest.raises(AuditVerificationFailed):
        checkpointer.check_against(tenant.tenant_id)


def test_a_checkpoint_that_cannot_be_witnessed_is_not_stored(
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    signing_key: str,
    tmp_path: Path,
    make_tenant: Callable[[str], NewTenant],
) -> None:
    blocked = tmp_path / "witness"
    blocked.write_text("a file where the directory should be")
    config = dataclasses.replace(Settings(data_root=tmp_path).checkpoints(), witness_dir=blocked)
    tenant = make_tenant("t")
    with pytest.raises(Exception, match="witnessed"):
        Checkpointer(db, keyring, config, clock=clock).checkpoint(tenant.tenant_id)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert tx.execute(
            "SELECT count(*) FROM tenantguard.audit_checkpoints WHERE tenant_id = %s",
            (tenant.tenant_id,),
        ).fetchone() == (0,)
        assert len(leaf_hashes(tx, tenant.tenant_id)) >= 1


def test_the_gateway_signs_checkpoints_on_its_schedule(
    tmp_path: Path,
    db: Database,
    clock: FakeClock,
    keyring: Keyring,
    signing_key: str,
    make_tenant: Callable[[str], NewTenant],
) -> None:
    """With a short interval the gateway's background pass signs a checkpoint for a grown log
    by itself, and stops with the gateway."""
    tenant = make_tenant("t")
    settings = Settings(data_root=tmp_path, audit_checkpoint_seconds=0.05)
    with TestClient(create_app(settings, database=db, clock=clock, keyring=keyring)):
        for _ in range(200):  # bounded wait for the background pass
            if witnessed(settings.checkpoints().witness_dir, tenant.tenant_id):
                break
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint was signed by the schedule")
    threads = [t.name for t in threading.enumerate()]
    assert "audit-checkpoints" not in threads


def test_the_verification_pass_raises_the_alarm(
    checkpointer: Checkpointer,
    make_tenant: Callable[[str], NewTenant],
    owner_in: Any,
    db: Database,
) -> None:
    """The scheduled pass finds a log cut back behind a checkpoint and an edited event, and
    says so in the platform chain and in the tenant's own; intact tenants raise nothing."""
    intact, cut, edited = make_tenant("intact"), make_tenant("cut"), make_tenant("edited")
    for tenant in (intact, cut, edited):
        checkpointer.checkpoint(tenant.tenant_id)
    _owner_edit(
        owner_in,
        cut,
        "DELETE FROM tenantguard.audit_events WHERE tenant_id = %s AND seq = 1",
    )
    _owner_edit(
        owner_in,
        edited,
        "UPDATE tenantguard.audit_events SET actor_id = 'someone' WHERE tenant_id = %s AND seq = 0",
    )
    ids = [intact.tenant_id, cut.tenant_id, edited.tenant_id]
    assert checkpointer.verify_all(ids, request_id="verify-pass") == ids[1:]
    for tenant in (cut, edited):
        for chain in (PLATFORM_TENANT_ID, tenant.tenant_id):
            with db.tenant_transaction(chain) as tx:
                alarms = [
                    e
                    for e in iter_events(tx, tenant_id=chain)
                    if e.request_id == "verify-pass" and e.target_id == str(tenant.tenant_id)
                ]
            assert [(a.action, a.outcome) for a in alarms] == [("audit.tamper_detected", "failure")]
    with db.tenant_transaction(intact.tenant_id) as tx:
        assert not [
            e for e in iter_events(tx, tenant_id=intact.tenant_id) if e.request_id == "verify-pass"
        ]


@pytest.mark.parametrize(
    "statements",
    [
        ["UPDATE tenantguard.audit_events SET reason = 'x' WHERE tenant_id = %s AND seq = 1"],
        ["DELETE FROM tenantguard.audit_events WHERE tenant_id = %s AND seq = 1"],
        [
            "INSERT INTO tenantguard.audit_events SELECT tenant_id, 3, gen_random_uuid(),"
            " occurred_at, actor_type, actor_id, action, target_type, target_id, outcome,"
            " reason, request_id, payload, event_hash, chain_hash, format, policy_version,"
            " source FROM tenantguard.audit_events WHERE tenant_id = %s AND seq = 2"
        ],
        [
            "UPDATE tenantguard.audit_events SET seq = 1000 WHERE tenant_id = %s AND seq = 0",
            "UPDATE tenantguard.audit_events SET seq = 0 WHERE tenant_id = %s AND seq = 1",
            "UPDATE tenantguard.audit_events SET seq = 1 WHERE tenant_id = %s AND seq = 1000",
        ],
    ],
    ids=["modified", "deleted", "inserted", "reordered"],
)
def test_the_scheduled_pass_finds_every_kind_of_edit(
    checkpointer: Checkpointer,
    make_tenant: Callable[[str], NewTenant],
    owner_in: Any,
    db: Database,
    clock: FakeClock,
    statements: list[str],
) -> None:
    """An owner's edit of any kind, made behind the service's back, is found by the
    in-service pass (and the same pass leaves an untouched tenant alone)."""
    tenant, untouched = make_tenant("t"), make_tenant("untouched")
    with db.tenant_transaction(tenant.tenant_id) as tx:  # a third event, so edits sit inside
        append(
            tx,
            tenant_id=tenant.tenant_id,
            request_id="edit",
            now=clock.now(),
            record=AuditRecord(action="test.event", outcome="success", actor=TEST_ACTOR),
        )
    for statement in statements:
        _owner_edit(owner_in, tenant, statement)
    assert checkpointer.verify_all([tenant.tenant_id, untouched.tenant_id]) == [tenant.tenant_id]
