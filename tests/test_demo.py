"""The guided demo runs end to end on its own embedded server and leaves nothing running."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from tenantguard.demo import run_demo
from tests.support import processes_mentioning


def test_demo_passes_every_check_and_stops_everything(tmp_path: Path) -> None:
    """Every check passes, and no process of the demo's data root outlives it."""
    out = io.StringIO()
    root = tmp_path / "demo"
    assert run_demo(data_root=root, console=Console(file=out, width=200))
    report = out.getvalue()
    assert "all checks passed" in report
    assert "FAIL" not in report
    assert "Tenant B tries to GET A's memory entry" in report
    assert "A's signed Merkle checkpoints and proofs verify independently" in report
    assert "An operator cannot read A's data without A's opt-in" in report
    assert "A's link is refused under B's tenant, and when tampered with" in report
    assert "Tenant B is purged: nothing of it is left anywhere" in report
    assert processes_mentioning(str(root / "pg")) == []
