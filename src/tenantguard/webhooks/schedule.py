"""When an outbound webhook is tried again: exponential backoff with full jitter. Pure.

Attempt n (1 for the first retry) waits a uniformly random time in [0, min(cap, base·2^n)]
(AWS's "full jitter": retries of many failed deliveries spread out instead of arriving at a
recovering receiver together), never less than `floor`. After `MAX_ATTEMPTS` tries a delivery
has failed for good and is kept, with its log, for the tenant to see and replay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Backoff:
    base_seconds: float = 30.0
    cap_seconds: float = 6 * 3600.0
    floor_seconds: float = 1.0
    max_attempts: int = MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if not 0 < self.floor_seconds <= self.base_seconds <= self.cap_seconds:
            raise ValueError("a backoff needs 0 < floor <= base <= cap")
        if self.max_attempts < 1:
            raise ValueError("a delivery is tried at least once")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry `attempt` (1 for the first retry)."""
        if attempt < 1:
            raise ValueError("retries are numbered from 1")
        return min(self.cap_seconds, self.base_seconds * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random) -> float | None:
        """Seconds to wait before retry `attempt`, or None: `attempt` tries have been made
        (the first one included) and that is all there will be."""
        if attempt >= self.max_attempts:
            return None
        return max(self.floor_seconds, rng.uniform(0.0, self.ceiling(attempt)))
