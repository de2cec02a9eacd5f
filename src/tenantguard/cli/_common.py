"""What every CLI command shares: settings read once, the database, the consoles."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pydantic import ValidationError
from rich.console import Console

from tenantguard.context import Principal
from tenantguard.db import Database, endpoints
from tenantguard.errors import ConfigurationError
from tenantguard.logs import configure_logging
from tenantguard.settings import Settings

out = Console()
err = Console(stderr=True)
CLI = Principal(type="system", id="cli")


def load_settings(**overrides: object) -> Settings:
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise ConfigurationError(f"Invalid setting: {fields}.") from exc
    configure_logging(settings.logging())
    return settings


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Database]:
    config = settings.database()
    with (
        endpoints(config) as found,
        Database(found.app_url, min_size=1, max_size=2, application_name="tenantguard-cli") as db,
    ):
        yield db
