"""The quota stores behind one port: each gives the core's answers, is atomic under
concurrent load (exactly N of N + k pass), keeps tenants apart, and fails closed."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import redis

from tenantguard.data.tenants import NewTenant
from tenantguard.quotas.core import Limit, Subject, checks_for, decide
from tenantguard.quotas.stores import QuotaStore, QuotaStoreUnavailable, RedisQuotaStore

NOW = int(datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000
WHO = Subject(credential="k", agent="helper", run="r")
MakeTenant = Callable[[str], NewTenant]


@pytest.mark.parametrize("per", ["minute", "day", "run"])
def test_exactly_n_of_n_plus_k_concurrent_consumptions_pass(
    store: QuotaStore, make_tenant: MakeTenant, per: str
) -> None:
    tenant = make_tenant("t").tenant_id
    scope = "run" if per == "run" else "agent"
    limits = [Limit("tool_calls", scope, per, 25), Limit("tool_calls", "tenant", "day", 1000)]  # type: ignore[arg-type]
    checks = checks_for(limits, "tool_calls", WHO, NOW)
    start = threading.Barrier(12)

    def worker(_: int) -> list[bool]:
        start.wait()
        return [store.consume(tenant, checks, cost=1, now=NOW).allowed for _ in range(4)]

    with ThreadPoolExecutor(12) as pool:
        outcomes = [ok for batch in pool.map(worker, range(12)) for ok in batch]
    assert sum(outcomes) == 25  # of 48
    usage = store.usage(tenant, [c.key for c in checks])
    tenant_key = next(c.key for c in checks if c.key.startswith("tool_calls:tenant"))
    assert usage[tenant_key] == 25  # refused consumptions charged the tenant nothing


def test_each_store_gives_the_cores_answers(store: QuotaStore, make_tenant: MakeTenant) -> None:
    """A seeded random history of probes, charges and forced charges over rates, windows and
    budgets, replayed against the store and against `decide` over a plain dict."""
    tenant = make_tenant("t").tenant_id
    rng = random.Random(7)
    limits = [
        Limit("tokens", "tenant", "minute", 50),
        Limit("tokens", "agent", "hour", 400),
        Limit("tokens", "credential", "day", 300),
        Limit("tokens", "run", "run", 250),
    ]
    model: dict[str, int] = {}
    now = NOW
    for step in range(120):
        now += rng.choice([0, 0, 1, 700_000, 5_000_000, 61_000_000])
        checks = checks_for(limits, "tokens", WHO, now)
        cost = rng.choice([0, 1, 2, 5, 13])
        force = rng.random() < 0.15
        expected, new = decide(checks, model, cost=cost, now=now, force=force)
        model.update(new)
        got = store.consume(tenant, checks, cost=cost, now=now, force=force)
        assert got == expected, step
    keys = sorted(model)
    assert store.usage(tenant, keys) == {k: model[k] for k in keys}


def test_tenants_count_apart(store: QuotaStore, make_tenant: MakeTenant) -> None:
    a, b = make_tenant("a").tenant_id, make_tenant("b").tenant_id
    checks = checks_for([Limit("requests", "tenant", "day", 1)], "requests", WHO, NOW)
    assert store.consume(a, checks, cost=1, now=NOW).allowed
    assert not store.consume(a, checks, cost=1, now=NOW).allowed
    assert store.consume(b, checks, cost=1, now=NOW).allowed  # same key, another tenant


def test_an_unreachable_redis_fails_closed() -> None:
    gone = RedisQuotaStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1))
    checks = checks_for([Limit("requests", "tenant", "minute", 10)], "requests", WHO, NOW)
    with pytest.raises(QuotaStoreUnavailable) as refused:
        gone.consume(uuid4(), checks, cost=1, now=NOW)
    assert refused.value.status == 503


def test_redis_keys_expire_when_their_state_is_fresh_again(
    redis_client: redis.Redis, make_tenant: MakeTenant
) -> None:
    store = RedisQuotaStore(redis_client)
    tenant = make_tenant("t").tenant_id
    real_now = int(datetime.now(UTC).timestamp() * 1_000_000)
    rate = checks_for([Limit("requests", "tenant", "minute", 60)], "requests", WHO, real_now)
    day = checks_for([Limit("requests", "tenant", "day", 60)], "requests", WHO, real_now)
    store.consume(tenant, [*rate, *day], cost=3, now=real_now)
    rate_ttl = redis_client.pttl(RedisQuotaStore.key(tenant, rate[0].key))
    day_ttl = redis_client.pttl(RedisQuotaStore.key(tenant, day[0].key))
    assert 0 < rate_ttl <= 3_000 + 1  # the TAT is 3 s ahead
    assert day_ttl > 3_600_000  # past the window's end, by an hour
