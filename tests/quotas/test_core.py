"""The quotas core: exact counts with a stopped clock, smooth refill, calendar windows in UTC,
all-or-nothing consumption, probes and forced charges, and policies refused field by field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantguard.quotas.core import (
    MAX_COST,
    Limit,
    QuotaPolicyInvalid,
    Subject,
    checks_for,
    decide,
    parse_limits,
)

NOW = int(datetime(2026, 12, 31, 23, 59, 0, tzinfo=UTC).timestamp()) * 1_000_000
MINUTE = 60_000_000
WHO = Subject(credential="k1", agent="helper", run="r1")


def _run(
    limits: list[Limit], costs: list[int], *, now: int = NOW, metric: str = "requests"
) -> list[bool]:
    state: dict[str, int] = {}
    out = []
    for cost in costs:
        verdict, new = decide(checks_for(limits, metric, WHO, now), state, cost=cost, now=now)  # type: ignore[arg-type]
        state.update(new)
        out.append(verdict.allowed)
    return out


@given(limit=st.integers(min_value=1, max_value=5000), extra=st.integers(min_value=1, max_value=20))
@settings(max_examples=60, deadline=None)
def test_a_stopped_clock_lets_exactly_the_limit_through(limit: int, extra: int) -> None:
    for per in ("minute", "hour", "day", "month"):
        rule = Limit("requests", "tenant", per, limit)
        assert _run([rule], [1] * (limit + extra)) == [True] * limit + [False] * extra


def test_a_rate_refills_one_unit_per_interval_and_says_when() -> None:
    rule = Limit("requests", "credential", "minute", 6)  # one every 10 s, a burst of 6
    checks = checks_for([rule], "requests", WHO, NOW)
    state: dict[str, int] = {}
    for _ in range(6):
        _verdict, new = decide(checks, state, cost=1, now=NOW)
        state.update(new)
    refused, nothing = decide(checks, state, cost=1, now=NOW)
    assert not refused.allowed
    assert nothing == {}
    assert refused.retry_after == 10_000_000
    assert not decide(checks, state, cost=1, now=NOW + 9_999_999)[0].allowed
    assert decide(checks, state, cost=1, now=NOW + 10_000_000)[0].allowed
    # An idle minute later the whole burst is back, and not more.
    later = NOW + 10 * MINUTE
    assert _run([rule], [1] * 7, now=later) == [True] * 6 + [False]


def test_windows_are_calendar_windows_in_utc() -> None:
    day = Limit("tool_calls", "agent", "day", 2)
    month = Limit("tokens", "tenant", "month", 100)
    (d,) = checks_for([day], "tool_calls", WHO, NOW)
    (m,) = checks_for([month], "tokens", WHO, NOW)
    assert d.key == "tool_calls:agent:helper:day:2026-12-31"
    assert m.key == "tokens:tenant:month:2026-12"
    new_year = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
    assert d.expires == m.expires == new_year
    state = {d.key: 2}
    refused, _ = decide([d], state, cost=1, now=NOW)
    assert refused.retry_after == 60_000_000  # the day ends in a minute
    (tomorrow,) = checks_for([day], "tool_calls", WHO, new_year)
    assert tomorrow.key != d.key  # a new window: a new counter
    assert decide([tomorrow], state, cost=1, now=new_year)[0].allowed


def test_a_consumption_is_all_or_nothing() -> None:
    tenant = Limit("tool_calls", "tenant", "day", 100)
    agent = Limit("tool_calls", "agent", "day", 1)
    checks = checks_for([tenant, agent], "tool_calls", WHO, NOW)
    state: dict[str, int] = {}
    first, new = decide(checks, state, cost=1, now=NOW)
    state.update(new)
    second, unchanged = decide(checks, state, cost=1, now=NOW)
    assert first.allowed
    assert not second.allowed
    assert second.refused_by is not None
    assert second.refused_by.limit == agent
    assert unchanged == {}  # the tenant's counter was not charged for the refused call


def test_a_probe_needs_one_unit_left_and_charges_nothing() -> None:
    budget = Limit("tokens", "run", "run", 1000)
    (check,) = checks_for([budget], "tokens", WHO, NOW)
    probe, new = decide([check], {check.key: 999}, cost=0, now=NOW)
    assert probe.allowed
    assert new == {check.key: 999}
    assert not decide([check], {check.key: 1000}, cost=0, now=NOW)[0].allowed
    assert decide([check], {check.key: 1000}, cost=0, now=NOW)[0].retry_after is None  # never


def test_a_forced_charge_goes_over_and_reports_the_budget_exhausted() -> None:
    budget = Limit("spend", "run", "run", 500)
    (check,) = checks_for([budget], "spend", WHO, NOW)
    verdict, new = decide([check], {check.key: 400}, cost=300, now=NOW, force=True)
    assert verdict.allowed
    assert new == {check.key: 700}
    assert verdict.exhausted == (check,)
    assert not decide([check], new, cost=0, now=NOW)[0].allowed


def test_forced_charges_saturate_instead_of_losing_precision() -> None:
    rate = Limit("tokens", "tenant", "hour", 1)
    (check,) = checks_for([rate], "tokens", WHO, NOW)
    _, new = decide([check], {}, cost=MAX_COST, now=NOW, force=True)
    assert new[check.key] == NOW + 2**40
    with pytest.raises(ValueError, match="cost"):
        decide([check], {}, cost=MAX_COST + 1, now=NOW)
    with pytest.raises(ValueError, match="cost"):
        decide([check], {}, cost=-1, now=NOW)


def test_scopes_apply_only_where_they_mean_something() -> None:
    limits = parse_limits(
        {
            "limits": [
                {"metric": "tool_calls", "scope": "agent", "per": "day", "limit": 5},
                {
                    "metric": "tool_calls",
                    "scope": "agent",
                    "per": "day",
                    "limit": 2,
                    "agent": "helper",
                },
                {
                    "metric": "tool_calls",
                    "scope": "agent",
                    "per": "hour",
                    "limit": 9,
                    "agent": "other",
                },
                {"metric": "tool_calls", "scope": "run", "per": "run", "limit": 50},
                {"metric": "requests", "scope": "tenant", "per": "minute", "limit": 600},
            ]
        }
    )
    checks = checks_for(limits, "tool_calls", WHO, NOW)
    # helper's own limit and every agent's share a counter: the stricter holds; other's is not
    # helper's; the run's budget counts this run.
    assert [(c.key, c.limit.limit) for c in checks] == [
        ("tool_calls:agent:helper:day:2026-12-31", 2),
        ("tool_calls:run:r1", 50),
    ]
    outside = checks_for(limits, "tool_calls", Subject(credential="k1"), NOW)
    assert outside == ()  # no agent, no run: none of these apply


BAD: list[tuple[Any, str]] = [
    ([], "limits"),
    ({"limits": [], "extra": 1}, "limits"),
    ({"limits": "x"}, "list"),
    ({"limits": [1]}, "object"),
    ({"limits": [{"metric": "coins", "scope": "tenant", "per": "day", "limit": 1}]}, "metric"),
    ({"limits": [{"metric": "tokens", "scope": "world", "per": "day", "limit": 1}]}, "scope"),
    ({"limits": [{"metric": "tokens", "scope": "tenant", "per": "week", "limit": 1}]}, "per"),
    ({"limits": [{"metric": "tokens", "scope": "tenant", "per": "run", "limit": 1}]}, "run"),
    ({"limits": [{"metric": "tokens", "scope": "run", "per": "day", "limit": 1}]}, "run"),
    ({"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": -1}]}, "integer"),
    ({"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": 1.5}]}, "integer"),
    ({"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": True}]}, "integer"),
    (
        {"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": 10**16}]},
        "integer",
    ),
    (
        {"limits": [{"metric": "tokens", "scope": "tenant", "per": "minute", "limit": 10**9}]},
        "microsecond",
    ),
    (
        {
            "limits": [
                {"metric": "tokens", "scope": "tenant", "per": "day", "limit": 1, "agent": "a"}
            ]
        },
        "agent",
    ),
    (
        {
            "limits": [
                {"metric": "tokens", "scope": "agent", "per": "day", "limit": 1, "agent": "A B"}
            ]
        },
        "agent",
    ),
    (
        {"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": 1, "x": 1}]},
        "unknown",
    ),
    ({"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": 1}] * 2}, "second"),
    (
        {"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": 1}] * 101},
        "at most",
    ),
]


@pytest.mark.parametrize(("document", "says"), BAD)
def test_bad_policies_are_refused_naming_the_fault(document: Any, says: str) -> None:
    with pytest.raises(QuotaPolicyInvalid) as refused:
        parse_limits(document)
    assert says in refused.value.detail
    assert refused.value.status == 422
