"""The filesystem tools' workspace: a tenant's files under <data_root>/orgs/<tenant_id>/, and
nothing a path, a symlink, a hard link or a device can reach beyond it; the tools exist only
in self_hosted deployments, where a write waits for approval unless the tenant pre-approves."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import NotFound, RequestInvalid
from tenantguard.gateway import create_app
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tenantguard.tools.workspace import (
    MAX_FILE_BYTES,
    PathRefused,
    Usage,
    Workspace,
    WorkspaceFull,
    workspace_root,
)
from tests.support import bearer

MakeTenant = Callable[[str], NewTenant]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the host's secret")
    return secret


@pytest.fixture
def space(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "orgs" / "t" / "workspace")


def test_files_round_trip_in_private_directories(space: Workspace) -> None:
    assert space.write("notes/today/a.txt", b"hello") == 5
    assert space.read("notes/today/a.txt") == b"hello"
    assert space.write("notes/today/a.txt", b"again") == 5  # replaced, atomically
    assert space.read("notes/today/a.txt") == b"again"
    assert (space.root / "notes").stat().st_mode & 0o777 == 0o700
    assert (space.root / "notes/today/a.txt").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (space.root / "notes/today").iterdir()] == ["a.txt"]  # no temp left


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "",
        ".",
        "a//b",
        "a/./b",
        "a/",
        "x\x00y",
        "a/" * 600,
        "x" * 300,
        ".tg-0123456789abcdef.tmp",
    ],
)
def test_paths_that_could_leave_are_refused_as_text(space: Workspace, path: str) -> None:
    space.write("ok.txt", b"x")
    with pytest.raises(PathRefused):
        space.read(path)
    with pytest.raises(PathRefused):
        space.write(path, b"x")


def test_a_symlink_anywhere_on_the_way_is_refused(space: Workspace, outside: Path) -> None:
    space.write("dir/file.txt", b"mine")
    (space.root / "link.txt").symlink_to(outside)
    (space.root / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    for path in ("link.txt", "linkdir/secret.txt"):
        with pytest.raises(PathRefused):
            space.read(path)
        with pytest.raises(PathRefused):
            space.write(path, b"overwritten")
    assert outside.read_text() == "the host's secret"


def test_hard_links_devices_fifos_and_directories_are_refused(
    space: Workspace, outside: Path
) -> None:
    space.write("keep.txt", b"x")
    os.link(outside, space.root / "hard.txt")
    os.mkfifo(space.root / "pipe")
    (space.root / "adir").mkdir()
    for path in ("hard.txt", "pipe", "adir"):
        with pytest.raises(PathRefused):
            space.read(path)  # never blocks on the FIFO
        with pytest.raises(PathRefused):
            space.write(path, b"overwritten")
    assert outside.read_text() == "the host's secret"


def test_sizes_are_bounded(space: Workspace) -> None:
    with pytest.raises(RequestInvalid):
        space.write("big.bin", b"x" * (MAX_FILE_BYTES + 1))
    space.root.mkdir(parents=True)
    (space.root / "big.bin").write_bytes(b"x" * (MAX_FILE_BYTES + 1))  # made on the host
    with pytest.raises(RequestInvalid):
        space.read("big.bin")
    with pytest.raises(NotFound):
        space.read("missing/file.txt")


@pytest.fixture
def self_hosted(
    settings: Settings, db: Database, clock: FakeClock, keyring: Keyring
) -> Iterator[TestClient]:
    chosen = settings.model_copy(update={"deployment_mode": "self_hosted"})
    app = create_app(chosen, database=db, clock=clock, keyring=keyring)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _run(client: TestClient, h: dict[str, str], grants: dict[str, Any], agent: Any = None) -> str:
    """A run of an agent granted `agent` (default `grants`) under the tenant's `grants`."""
    assert client.put("/api/admin/tool-policy", json=grants, headers=h).status_code == 200
    given = grants if agent is None else agent
    assert client.put("/api/agents/coder", json=given, headers=h).status_code == 200
    return str(client.post("/api/runs", json={"agent": "coder"}, headers=h).json()["id"])


def _call(client: TestClient, h: dict[str, str], run: str, tool: str, **arguments: Any) -> Any:
    body = {"tool": tool, "arguments": arguments}
    return client.post(f"/api/runs/{run}/tool-calls", json=body, headers=h)


def test_the_filesystem_tools_exist_only_when_self_hosted(
    client: TestClient, self_hosted: TestClient, make_tenant: MakeTenant
) -> None:
    h = bearer(make_tenant("t").admin_key.secret)
    saas = {t["name"] for t in client.get("/api/tools", headers=h).json()}
    hosted = {t["name"] for t in self_hosted.get("/api/tools", headers=h).json()}
    assert {"file_read", "file_write"} & saas == set()
    assert {"file_read", "file_write"} <= hosted


def test_each_tenant_has_its_own_workspace_and_writes_need_approval(
    self_hosted: TestClient, make_tenant: MakeTenant, settings: Settings
) -> None:
    client = self_hosted
    a, b = make_tenant("a"), make_tenant("b")
    ha, hb = bearer(a.admin_key.secret), bearer(b.admin_key.secret)
    pre: dict[str, Any] = {"tools": {"file_read": {}, "file_write": {"preapproved": True}}}
    plain: dict[str, Any] = {"tools": {"file_read": {}, "file_write": {}}}
    run_a = _run(client, ha, pre, agent=plain)
    assert (
        _call(client, ha, run_a, "file_write", path="plan.txt", content="A's plan").status_code
        == 200
    )
    on_disk = workspace_root(settings.data_root, a.tenant_id) / "plan.txt"
    assert on_disk.read_text() == "A's plan"
    run_b = _run(client, hb, plain)
    pending = _call(client, hb, run_b, "file_write", path="plan.txt", content="B")
    assert pending.status_code == 202  # destructive: a person approves, or the tenant's rule
    assert _call(client, hb, run_b, "file_read", path="plan.txt").status_code == 404
    escape = f"../../{a.tenant_id}/workspace/plan.txt"
    refused = _call(client, hb, run_b, "file_read", path=escape)
    assert refused.status_code == 422
    assert refused.json()["code"] == "path_refused"
    assert "A's plan" not in refused.text
    mine = _call(client, ha, run_a, "file_read", path="plan.txt")
    assert mine.json()["output"]["content"] == "A's plan"


def test_the_whole_workspace_is_bounded_and_a_refused_write_writes_nothing(tmp_path: Path) -> None:
    space = Workspace(tmp_path / "ws", max_bytes=100, max_entries=4)
    assert space.write("a.txt", b"x" * 60) == 60
    with pytest.raises(WorkspaceFull):
        space.write("b.txt", b"y" * 60)  # 120 bytes in all
    assert not (space.root / "b.txt").exists()
    assert space.write("a.txt", b"z" * 90) == 90  # a file rewritten frees its old size
    assert space.write("d/e.txt", b"") == 0  # entries: a.txt, d, d/e.txt
    with pytest.raises(WorkspaceFull):
        space.write("f/g/h.txt", b"")  # three more entries
    assert not (space.root / "f").exists()
    assert space.usage() == Usage(90, 3)
    assert [p.name for p in space.root.iterdir() if p.name.startswith(".tg-")] == []


def test_usage_never_follows_a_link(tmp_path: Path, outside: Path) -> None:
    """A link to a big directory elsewhere counts as one entry of no bytes."""
    space = Workspace(tmp_path / "ws", max_bytes=1_000, max_entries=10)
    space.write("mine.txt", b"12345")
    big = tmp_path / "big"
    big.mkdir()
    for i in range(20):
        (big / f"{i}.bin").write_bytes(b"x" * 100)
    os.symlink(big, space.root / "elsewhere")
    assert space.usage() == Usage(5, 2)


def test_concurrent_writes_cannot_together_pass_the_limit(tmp_path: Path) -> None:
    """Eight writers of 30 bytes each against a limit of 100: exactly three get in."""
    space = Workspace(tmp_path / "ws", max_bytes=100, max_entries=100)
    barrier = threading.Barrier(8)

    def write(i: int) -> bool:
        barrier.wait()
        try:
            space.write(f"f{i}.txt", b"x" * 30)
        except WorkspaceFull:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(8)))
    assert sum(results) == 3
    assert space.usage() == Usage(90, 3)


def test_a_full_workspace_is_a_typed_problem_through_the_gateway(
    settings: Settings, db: Database, clock: FakeClock, keyring: Keyring, make_tenant: MakeTenant
) -> None:
    chosen = settings.model_copy(
        update={"deployment_mode": "self_hosted", "workspace_max_bytes": 1_048_576}
    )
    app = create_app(chosen, database=db, clock=clock, keyring=keyring)
    h = bearer(make_tenant("t").admin_key.secret)
    pre: dict[str, Any] = {"tools": {"file_read": {}, "file_write": {"preapproved": True}}}
    plain: dict[str, Any] = {"tools": {"file_read": {}, "file_write": {}}}
    with TestClient(app, raise_server_exceptions=False) as client:
        run = _run(client, h, pre, agent=plain)
        big = "x" * 600_000
        assert _call(client, h, run, "file_write", path="one.txt", content=big).status_code == 200
        full = _call(client, h, run, "file_write", path="two.txt", content=big)
    assert full.status_code == 422
    assert full.json()["code"] == "workspace_full"
