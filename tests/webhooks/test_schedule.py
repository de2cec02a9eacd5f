"""Outbound retries: exponential ceilings, full jitter within them, a last attempt."""

from __future__ import annotations

import random

import pytest

from tenantguard.webhooks.schedule import MAX_ATTEMPTS, Backoff


def test_ceilings_double_up_to_the_cap() -> None:
    backoff = Backoff(base_seconds=30, cap_seconds=3600)
    assert [backoff.ceiling(n) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff.ceiling(10_000) == 3600  # no overflow however far


def test_delays_are_jittered_within_the_ceiling_and_never_below_the_floor() -> None:
    backoff = Backoff(base_seconds=30, cap_seconds=3600, floor_seconds=1)
    rng = random.Random(1)
    for attempt in range(1, MAX_ATTEMPTS):
        delays = [backoff.delay(attempt, rng) for _ in range(2000)]
        assert all(d is not None and 1 <= d <= backoff.ceiling(attempt) for d in delays)
        spread = sorted(d for d in delays if d is not None)
        # Full jitter: the waits cover the whole range, not a point near the ceiling.
        assert spread[100] < 0.1 * backoff.ceiling(attempt) + 1
        assert spread[-100] > 0.9 * backoff.ceiling(attempt)


def test_the_last_attempt_has_no_retry() -> None:
    backoff = Backoff(max_attempts=3)
    rng = random.Random(2)
    assert backoff.delay(2, rng) is not None
    assert backoff.delay(3, rng) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"floor_seconds": 0},
        {"base_seconds": 10, "floor_seconds": 20},
        {"base_seconds": 100, "cap_seconds": 10},
        {"max_attempts": 0},
    ],
)
def test_nonsense_schedules_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"backoff|tried"):
        Backoff(**bad)  # type: ignore[arg-type]
