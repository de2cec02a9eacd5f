"""The README: its library example runs as written (against the test database), and it names
every route of the gateway."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tenantguard.gateway import create_app
from tenantguard.gateway.auth import operations
from tenantguard.settings import Settings
from tenantguard.testing import TestDatabase

README = Path(__file__).parent.parent / "README.md"


def test_library_example_runs(pg: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    match = re.search(r"### The library\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match is not None, "the README lost its library example"
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    exec(compile(match[1], str(README), "exec"), {})  # noqa: S102 (our own README)


def test_every_route_is_in_the_readme() -> None:
    """Found by enumeration: a new route is documented or this fails (parameter names and the
    `[/{id}]` shorthand aside)."""
    app = create_app(Settings(data_root=Path("/nonexistent")))  # never started
    text = re.sub(r"\{[^}]*\}", "{}", README.read_text().replace("[", "").replace("]", ""))
    missing = sorted(
        op.path for op in operations(app) if re.sub(r"\{[^}]*\}", "{}", op.path) not in text
    )
    assert missing == []
