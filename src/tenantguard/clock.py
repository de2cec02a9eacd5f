"""Time, injected. Only the outermost call reads the clock; everything below takes `now`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC, at microsecond precision (what PostgreSQL stores)."""

    def now(self) -> datetime:
        return datetime.now(UTC)
