"""Quotas, rate limits and budgets: the limits as data, and what a consumption does to them.
Pure: values in, values out, the time passed in (integer microseconds since the epoch).

A limit counts one metric (`requests`, `tool_calls`, `messages`, `tokens`, `spend`) for one
scope (the whole `tenant`, each `agent`, each `credential`, each `run`) over one period:

- `minute` and `hour` are rates, by GCRA (the generic cell rate algorithm): the state is one
  number, the theoretical arrival time (TAT). Each unit moves it on by the emission interval
  `T = period // limit`; a consumption passes while `TAT - now <= T * limit`, so an idle
  counter lets `limit` units through at once and then one every `T`. Integer arithmetic: with
  a stopped clock exactly `limit` units pass, never `limit - 1` or `limit + 1`.
- `day` and `month` are calendar windows in UTC: a counter per window, reset when the next
  window starts (the key names the window, so nothing has to reset it).
- `run` lasts a run's life: a run's budget. When it is exhausted the run stops.

One consumption checks several limits at once (the tenant's, the agent's, the credential's)
and is all or nothing: if any refuses, none is charged. `force` charges whatever the limits
say, for what has already happened (the tokens a model call used): a later consumption then
finds the limit exhausted. Stores (`quotas.stores`) apply `decide` atomically.

Threat stopped: cost abuse (a run burning tokens, a loop of tool calls, spam), one tenant
starving the others, and a credential flooding the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tenantguard.context import AGENT_NAME
from tenantguard.errors import RequestInvalid

Metric = Literal["requests", "tool_calls", "messages", "tokens", "spend"]
Scope = Literal["tenant", "agent", "credential", "run"]
Period = Literal["minute", "hour", "day", "month", "run"]
METRICS: tuple[Metric, ...] = ("requests", "tool_calls", "messages", "tokens", "spend")
SCOPES: tuple[Scope, ...] = ("tenant", "agent", "credential", "run")
PERIODS: tuple[Period, ...] = ("minute", "hour", "day", "month", "run")
RATE_PERIODS: Mapping[str, int] = {"minute": 60_000_000, "hour": 3_600_000_000}
MAX_LIMIT = 10**15  # a spend of a billion in micro-units; beyond it a limit means nothing
MAX_LIMITS = 100
MAX_COST = 10**12  # one consumption; with MAX_LIMIT, keeps every value exact in a double
_TAT_CAP = 2**40  # a rate's TAT is at most ~12.7 days ahead, however much was forced
_COUNT_CAP = 2**52  # a window's count saturates here (the Redis store's Lua is doubles)
_AGENT = re.compile(AGENT_NAME)


class QuotaPolicyInvalid(RequestInvalid):
    code = "quota_policy_invalid"
    title = "Quota policy invalid"
    default_detail = "The quota policy is not valid."


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `limit` units of `metric` per `per`, for each `scope` (an agent limit may name
    one agent; without a name it applies to every agent separately)."""

    metric: Metric
    scope: Scope
    per: Period
    limit: int
    agent: str | None = None

    @property
    def is_rate(self) -> bool:
        return self.per in RATE_PERIODS

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "scope": self.scope,
            "per": self.per,
            "limit": self.limit,
        }
        if self.agent is not None:
            out["agent"] = self.agent
        return out


def _limit(item: object, where: str) -> Limit:
    if not isinstance(item, Mapping):
        raise QuotaPolicyInvalid(f"{where}: a limit is an object.")
    unknown = set(item) - {"metric", "scope", "per", "limit", "agent"}
    if unknown:
        raise QuotaPolicyInvalid(f"{where}: unknown field {sorted(unknown)[0]!r}.")
    metric, scope, per, amount = (item.get(k) for k in ("metric", "scope", "per", "limit"))
    agent = item.get("agent")
    if metric not in METRICS:
        raise QuotaPolicyInvalid(f"{where}: metric is one of {', '.join(METRICS)}.")
    if scope not in SCOPES:
        raise QuotaPolicyInvalid(f"{where}: scope is one of {', '.join(SCOPES)}.")
    if per not in PERIODS:
        raise QuotaPolicyInvalid(f"{where}: per is one of {', '.join(PERIODS)}.")
    if (scope == "run") != (per == "run"):
        raise QuotaPolicyInvalid(f"{where}: a run's budget has scope 'run' and per 'run'.")
    if type(amount) is not int or not 0 <= amount <= MAX_LIMIT:
        raise QuotaPolicyInvalid(f"{where}: limit is an integer from 0 to {MAX_LIMIT}.")
    if per in RATE_PERIODS and amount > RATE_PERIODS[per]:
        raise QuotaPolicyInvalid(f"{where}: at most one unit per microsecond.")
    if agent is not None and (
        scope != "agent" or not isinstance(agent, str) or not _AGENT.fullmatch(agent)
    ):
        raise QuotaPolicyInvalid(f"{where}: agent names one agent, for scope 'agent' only.")
    return Limit(metric, scope, per, amount, agent)


def parse_limits(document: object) -> tuple[Limit, ...]:
    """A policy document `{"limits": [...]}`, checked field by field; raises
    `QuotaPolicyInvalid` naming the first fault. Duplicates (same metric, scope, period and
    agent) are refused: two answers to one question."""
    if not isinstance(document, Mapping) or set(document) != {"limits"}:
        raise QuotaPolicyInvalid('A quota policy is {"limits": [...]}.')
    items = document["limits"]
    if not isinstance(items, list) or len(items) > MAX_LIMITS:
        raise QuotaPolicyInvalid(f"limits is a list of at most {MAX_LIMITS}.")
    limits = tuple(_limit(item, f"limits[{i}]") for i, item in enumerate(items))
    seen: set[tuple[str, str, str, str | None]] = set()
    for i, limit in enumerate(limits):
        identity = (limit.metric, limit.scope, limit.per, limit.agent)
        if identity in seen:
            raise QuotaPolicyInvalid(f"limits[{i}]: a second limit for the same thing.")
        seen.add(identity)
    return limits


@dataclass(frozen=True, slots=True)
class Subject:
    """Who consumes: the ids each scope is counted under (None: that scope does not apply,
    say a request outside any run)."""

    credential: str
    agent: str | None = None
    run: str | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One limit applied to one subject: the state `key` it counts under and its arithmetic.
    For a rate, `interval` is T and `tolerance` T * limit (microseconds); for a window or a
    run budget, `limit` and the window's end (`expires`, None for a run's)."""

    key: str
    limit: Limit
    interval: int = 0
    tolerance: int = 0
    expires: int | None = None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(at: datetime) -> int:
    """`at` in whole microseconds since the epoch, exactly (no float in between)."""
    return (at - EPOCH) // _MICROSECOND


def _window(per: Period, now: int) -> tuple[str, int]:
    """The calendar window (UTC) holding `now`: its label and its end, in microseconds."""
    at = EPOCH + timedelta(microseconds=now)
    if per == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        label = start.strftime("%Y-%m-%d")
        end = start + timedelta(days=1)
    else:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        label = start.strftime("%Y-%m")
        if start.month == 12:
            end = start.replace(year=start.year + 1, month=1)
        else:
            end = start.replace(month=start.month + 1)
    return label, micros(end)


def checks_for(
    limits: Sequence[Limit], metric: Metric, subject: Subject, now: int
) -> tuple[Check, ...]:
    """The checks a consumption of `metric` by `subject` at `now` must pass, sorted by key
    (stores lock in that order, so two consumptions never deadlock)."""
    out: dict[str, Check] = {}
    for limit in limits:
        if limit.metric != metric:
            continue
        if limit.scope == "tenant":
            who = "tenant"
        elif limit.scope == "credential":
            who = f"credential:{subject.credential}"
        elif limit.scope == "agent":
            if subject.agent is None or limit.agent not in (None, subject.agent):
                continue
            who = f"agent:{subject.agent}"
        else:
            if subject.run is None:
                continue
            who = f"run:{subject.run}"
        if limit.per in RATE_PERIODS:
            interval = max(1, RATE_PERIODS[limit.per] // max(limit.limit, 1))
            key = f"{metric}:{who}:{limit.per}"
            check = Check(key, limit, interval=interval, tolerance=interval * limit.limit)
        elif limit.per == "run":
            check = Check(f"{metric}:{who}", limit)
        else:
            label, end = _window(limit.per, now)
            check = Check(f"{metric}:{who}:{limit.per}:{label}", limit, expires=end)
        # Two limits on one key (an agent's own and every agent's): the stricter holds.
        held = out.get(check.key)
        if held is None or _stricter(check, held):
            out[check.key] = check
    return tuple(out[k] for k in sorted(out))


def _stricter(a: Check, b: Check) -> bool:
    return a.limit.limit < b.limit.limit  # same key: same metric, scope and period


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a consumption did: passed (and charged) or refused (and charged nothing), the
    limit that refused, how long until it would pass (microseconds; None: never: a run's
    budget, or a cost larger than the whole limit), and the budgets (windows, runs) it left
    with nothing over."""

    allowed: bool
    refused_by: Check | None = None
    retry_after: int | None = None
    exhausted: tuple[Check, ...] = ()

    @property
    def run_budget_used_up(self) -> bool:
        """This consumption left a run's budget with nothing over: the run stops."""
        return any(check.limit.scope == "run" for check in self.exhausted)


def decide(
    checks: Sequence[Check],
    states: Mapping[str, int],
    *,
    cost: int,
    now: int,
    force: bool = False,
) -> tuple[Verdict, dict[str, int]]:
    """Apply one consumption of `cost` units to `checks`, whose current `states` are given
    (a rate's TAT, a window's count; absent: fresh). Returns the verdict and the states to
    write (empty when refused: nothing is charged).

    A cost of 0 is a probe: it passes only while at least one unit is left, and charges
    nothing (is there any budget left before a model call whose cost is known only after).
    """
    if not 0 <= cost <= MAX_COST:
        raise ValueError("a cost is from 0 to MAX_COST")
    need = max(cost, 1)
    new: dict[str, int] = {}
    exhausted: list[Check] = []
    for check in checks:
        state = states.get(check.key, 0)
        wait: int | None
        never = need > check.limit.limit  # more than the limit holds: waiting cannot help
        if check.limit.is_rate:
            base = max(state, now)
            reach = min(base + check.interval * need, now + _TAT_CAP)
            over = reach - now > check.tolerance
            wait = None if never else reach - check.tolerance - now
            new[check.key] = min(base + check.interval * cost, now + _TAT_CAP)
        else:
            over = state + need > check.limit.limit
            wait = None if never or check.expires is None else check.expires - now
            new[check.key] = min(state + cost, _COUNT_CAP)
            if new[check.key] >= check.limit.limit:
                exhausted.append(check)
        if over and not force:
            return Verdict(False, check, None if wait is None else max(wait, 1)), {}
    return Verdict(True, exhausted=tuple(exhausted)), new


def used(check: Check, state: int | None, now: int) -> int:
    """How much of `check`'s limit is in use at `now`: a window's count, or for a rate the
    units not yet refilled (a fresh state: 0)."""
    if state is None:
        return 0
    if not check.limit.is_rate:
        return state
    ahead = max(0, state - now)
    return min(check.limit.limit, -(-ahead // check.interval))
