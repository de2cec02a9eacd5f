"""Audit exports verified offline: an intact export verifies with nothing but the file; every
kind of change (an edited, dropped, reordered or added event, a cut-back log with a fixed-up
header, a swapped key, a forged checkpoint) is refused, naming the first bad entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tenantguard.audit.checkpoints import Checkpointer
from tenantguard.audit.export import verify_export
from tenantguard.cli import app
from tenantguard.context import PLATFORM_TENANT_ID
from tenantguard.crypto import signing
from tenantguard.crypto.kek import LocalKek
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import AuditVerificationFailed
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock, TestDatabase

runner = CliRunner()


@pytest.fixture
def exported(
    pg: TestDatabase,
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    shared_kek: LocalKek,
    signing_key: str,
    make_tenant: Callable[[str], NewTenant],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> list[str]:
    """A tenant with a checkpoint after its first events and one after more, exported by the
    CLI: the file's lines."""
    data_root = shared_kek._dir.parent
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(data_root))
    monkeypatch.setenv("TENANTGUARD_LOG_LEVEL", "warning")
    tenant = make_tenant("acme")
    checkpointer = Checkpointer(
        db, keyring, Settings(data_root=data_root).checkpoints(), clock=clock
    )
    checkpointer.checkpoint(tenant.tenant_id)
    for i in range(3):
        added = runner.invoke(
            app,
            [
                "users",
                "add",
                "--tenant",
                str(tenant.tenant_id),
                "--email",
                f"u{i}@acme.example",
                "--role",
                "member",
            ],
        )
        assert added.exit_code == 0, added.output
    checkpointer.checkpoint(tenant.tenant_id)
    path = tmp_path / "audit.jsonl"
    result = runner.invoke(
        app, ["audit", "export", "--tenant", str(tenant.tenant_id), "--output", str(path)]
    )
    assert result.exit_code == 0, result.output
    unpinned = runner.invoke(app, ["audit", "verify", str(path)])
    assert unpinned.exit_code == 2  # no trust anchor, no verdict
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(_key_list(db)))
    checked = runner.invoke(app, ["audit", "verify", str(path), "--trusted-keys", str(keys)])
    assert checked.exit_code == 0, checked.output
    assert "export verifies" in " ".join(checked.stdout.split())
    return path.read_text().splitlines(keepends=True)


def _key_list(db: Database) -> list[dict[str, Any]]:
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keys = signing.all_public_keys(tx)
    return [
        {
            "kid": k.kid,
            "public_key": k.public_key.hex(),
            "created_at": k.created_at.isoformat(),
            "verify_until": None if k.verify_until is None else k.verify_until.isoformat(),
        }
        for k in keys
    ]


@pytest.fixture
def trusted(db: Database) -> list[signing.PublicKey]:
    """The platform's keys, as an auditor would pin them."""
    return signing.trusted_keys(_key_list(db))


def _kinds(lines: list[str]) -> list[str]:
    return [json.loads(line)["kind"] for line in lines]


def test_an_intact_export_verifies_from_the_file_alone(
    exported: list[str], trusted: list[signing.PublicKey]
) -> None:
    verdict = verify_export(exported, trusted_keys=trusted)
    assert verdict.keys_pinned
    kinds = _kinds(exported)
    assert verdict.events == kinds.count("event") == 5  # tenant creation (2) and three users
    # Two, each stored and witnessed: the export carries each note once.
    assert verdict.checkpoints == kinds.count("checkpoint") == 2
    assert kinds.count("key") >= 1


def _edit(lines: list[str], index: int, **changes: Any) -> list[str]:
    record = {**json.loads(lines[index]), **changes}
    return [*lines[:index], json.dumps(record) + "\n", *lines[index + 1 :]]


def _event_lines(lines: list[str]) -> list[int]:
    return [i for i, kind in enumerate(_kinds(lines)) if kind == "event"]


def _cases(lines: list[str]) -> dict[str, tuple[list[str], str]]:
    events = _event_lines(lines)
    first, second, last = events[0], events[1], events[-1]
    header = json.loads(lines[0])
    checkpoint = _kinds(lines).index("checkpoint")
    key = _kinds(lines).index("key")
    note = json.loads(lines[checkpoint])["note"]
    cut = [*lines[:last], *lines[last + 1 :]]
    cut[0] = json.dumps({**header, "events": header["events"] - 1}) + "\n"
    return {
        "edited event": (_edit(lines, second, actor_id="someone-else"), f"line {second + 1}"),
        "dropped event": ([*lines[:second], *lines[second + 1 :]], f"line {second + 1}"),
        "reordered": (
            [*lines[:first], lines[second], lines[first], *lines[second + 1 :]],
            f"line {first + 1}",
        ),
        "added event": ([*lines, lines[last]], f"line {len(lines) + 1}"),
        "cut back, header fixed up": (cut, "seal"),
        "swapped key": (_edit(lines, key, public_key="A" * 43 + "="), f"line {key + 1}"),
        "forged checkpoint": (
            _edit(lines, checkpoint, note=note.replace("\n5\n", "\n4\n").replace("\n2\n", "\n1\n")),
            f"line {checkpoint + 1}",
        ),
        "not JSON": ([*lines[:second], "{oops\n", *lines[second + 1 :]], f"line {second + 1}"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "edited event",
        "dropped event",
        "reordered",
        "added event",
        "cut back, header fixed up",
        "swapped key",
        "forged checkpoint",
        "not JSON",
    ],
)
def test_every_change_is_refused_at_the_first_bad_entry(
    exported: list[str], trusted: list[signing.PublicKey], case: str
) -> None:
    forged, where = _cases(exported)[case]
    with pytest.raises(AuditVerificationFailed) as caught:
        verify_export(forged, trusted_keys=trusted)
    assert where in caught.value.detail


def test_the_cli_reports_the_first_bad_entry(exported: list[str], tmp_path: Path) -> None:
    forged, where = _cases(exported)["edited event"]
    path = tmp_path / "forged.jsonl"
    path.write_text("".join(forged))
    result = runner.invoke(app, ["audit", "verify", str(path), "--trust-embedded-keys"])
    assert result.exit_code == 1
    assert where in " ".join(result.output.split())
