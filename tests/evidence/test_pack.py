"""Evidence packs: built by the API and the CLI, verified offline from the file alone; any
changed byte breaks them; a pack re-signed by another key fails against the trusted keys."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tenantguard.audit import checkpoint as notes
from tenantguard.cli import app as cli
from tenantguard.crypto import signing
from tenantguard.crypto.kek import LocalKek
from tenantguard.data.tenants import NewTenant
from tenantguard.errors import AuditVerificationFailed
from tenantguard.evidence.pack import _canonical_tar, verify_pack
from tenantguard.testing import FakeClock, TestDatabase

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.security.test_rls" name="test_a"/>
<testcase classname="tests.security.test_routes" name="test_b"><failure message="x"/></testcase>
<testcase classname="tests.identity.test_totp" name="test_c"/>
</testsuite></testsuites>
"""


def _pack(client: TestClient, tenant: NewTenant, clock: FakeClock) -> bytes:
    h = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    assert client.post("/api/memory", json={"key": "k", "content": "c"}, headers=h).is_success
    start = (clock.now() - timedelta(hours=1)).isoformat()
    end = (clock.now() + timedelta(hours=1)).isoformat()
    answer = client.get("/api/audit/evidence", params={"from": start, "to": end}, headers=h)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-tar"
    return answer.content


@pytest.fixture
def pack(
    client: TestClient, make_tenant: Callable[[str], NewTenant], clock: FakeClock
) -> tuple[bytes, NewTenant]:
    tenant = make_tenant("acme")
    return _pack(client, tenant, clock), tenant


def _files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_a_pack_verifies_from_the_file_alone(pack: tuple[bytes, NewTenant]) -> None:
    data, tenant = pack
    verdict = verify_pack(data)
    assert verdict.tenant_id == tenant.tenant_id
    assert verdict.events >= 3  # the tenant's creation, its key, the memory entry
    files = _files(data)
    assert set(files) == {
        "manifest.json",
        "manifest.note",
        "audit/segment.jsonl",
        "audit/checkpoint.note",
        "audit/proofs.json",
        "keys.json",
        "policies.json",
        "key_events.jsonl",
        "doctor.json",
        "security_tests.json",
        "controls.json",
    }
    controls = json.loads(files["controls.json"])
    assert {"soc2", "iso42001", "eu_ai_act", "nist_ai_rmf"} <= set(controls[0])
    assert json.loads(files["doctor.json"]) == {"ok": True, "findings": []}
    assert json.loads(files["security_tests.json"])["provided"] is False
    assert json.loads(files["policies.json"])["in_force"]


def test_any_changed_byte_breaks_it(pack: tuple[bytes, NewTenant]) -> None:
    """Every byte position is tried (headers, contents, padding): each change is refused."""
    data, _ = pack
    step = max(1, len(data) // 600)
    for position in range(0, len(data), step):
        forged = data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
        with pytest.raises(AuditVerificationFailed):
            verify_pack(forged)
    with pytest.raises(AuditVerificationFailed):
        verify_pack(data + b"\0" * 512)
    with pytest.raises(AuditVerificationFailed):
        verify_pack(data[: len(data) // 2])


def test_a_pack_re_signed_by_another_key_fails_against_the_trusted_keys(
    pack: tuple[bytes, NewTenant], client: TestClient
) -> None:
    """A forger who swaps keys.json for their own key and re-signs the manifest gets a pack
    whose checkpoint no longer verifies; with the platform's published keys as the trusted
    ones, the forged signature itself is refused too."""
    data, _ = pack
    files = _files(data)
    forger = signing.SigningKey("forger", Ed25519PrivateKey.generate())
    manifest = json.loads(files["manifest.json"])
    files["keys.json"] = json.dumps(
        [
            {
                "kid": "forger",
                "public_key": forger.public_bytes().hex(),
                "created_at": "2000-01-01T00:00:00.000000Z",
                "verify_until": None,
            }
        ]
    ).encode()
    manifest["files"]["keys.json"]["sha256"] = hashlib.sha256(files["keys.json"]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    text, _ = notes.split_note(files["manifest.note"].decode())
    lines = text.split("\n")
    lines[1] = hashlib.sha256(files["manifest.json"]).hexdigest()
    name = manifest["key_name"]
    files["manifest.note"] = notes.sign_text("\n".join(lines), forger, key_name=name).encode()
    created = datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    forged = _canonical_tar(files, int(created.timestamp()))
    with pytest.raises(AuditVerificationFailed):  # the checkpoint is still the platform's
        verify_pack(forged)
    always = datetime.fromisoformat("0001-01-01T00:00:00+00:00")
    trusted = [
        signing.PublicKey(k["kid"], base64.urlsafe_b64decode(k["x"] + "=="), always, None)
        for k in client.get("/.well-known/jwks.json").json()["keys"]
    ]
    with pytest.raises(AuditVerificationFailed):
        verify_pack(forged, trusted_keys=trusted)
    assert verify_pack(data, trusted_keys=trusted).events >= 3


def test_the_cli_builds_and_verifies_a_pack_with_test_results(
    pg: TestDatabase,
    shared_kek: LocalKek,
    signing_key: str,
    make_tenant: Callable[[str], NewTenant],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(shared_kek._dir.parent))
    monkeypatch.setenv("TENANTGUARD_LOG_LEVEL", "warning")
    tenant = make_tenant("acme")
    results = tmp_path / "junit.xml"
    results.write_text(JUNIT)
    path = tmp_path / "pack.tar"
    runner = CliRunner()
    built = runner.invoke(
        cli,
        [
            "evidence",
            "export",
            "--tenant",
            str(tenant.tenant_id),
            "--from",
            (clock.now() - timedelta(days=1)).isoformat(),
            "--to",
            (clock.now() + timedelta(days=1)).isoformat(),
            "--output",
            str(path),
            "--test-results",
            str(results),
        ],
    )
    assert built.exit_code == 0, built.output
    summary = json.loads(_files(path.read_bytes())["security_tests.json"])
    assert (summary["security_tests"], summary["passed"], summary["failed"]) == (
        2,
        1,
        ["tests.security.test_routes::test_b"],
    )
    assert runner.invoke(cli, ["evidence", "verify", str(path)]).exit_code == 2  # no anchor
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(json.loads(_files(path.read_bytes())["keys.json"])))
    checked = runner.invoke(cli, ["evidence", "verify", str(path), "--trusted-keys", str(keys)])
    assert checked.exit_code == 0, checked.output
    said = " ".join(checked.stdout.split())
    assert "evidence pack verifies" in said
    assert "1 security tests passed, 1 failed" in said
    path.write_bytes(path.read_bytes()[:-1024] + b"\1" * 1024)
    broken = runner.invoke(cli, ["evidence", "verify", str(path), "--trust-embedded-keys"])
    assert broken.exit_code == 1
