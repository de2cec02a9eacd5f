"""The README's library example runs as written (against the test database)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tenantguard.testing import TestDatabase

README = Path(__file__).parent.parent / "README.md"


def test_library_example_runs(pg: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    match = re.search(r"### The library\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match is not None, "the README lost its library example"
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    exec(compile(match[1], str(README), "exec"), {})  # noqa: S102 (our own README)
