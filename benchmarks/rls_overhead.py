"""The cost of tenant isolation: forced RLS vs the same table without RLS, in one run.

Same server (the embedded one, fresh), same rows, same queries, same pool. Two tables hold
identical data: `memory_entries` (forced RLS, the tenant policy) and a twin `bench_plain`
without RLS. Each round runs every variant once, in an order that rotates per round, so drift
of the shared machine hits all variants alike. We report medians and p95/p99 per operation and
the ratios RLS/plain.

Variants per query:
- `plain`: the query with its explicit `tenant_id = …` filter, no tenant context;
- `rls`: what the service does: a transaction, `set_config('app.tenant_id', …, true)`, then the
  same query (RLS adds its predicate);
- `plain+ctx`: the plain query inside a transaction that also sets the context, to separate
  the policy's cost from the extra statement's.

Run: `.venv/bin/python benchmarks/rls_overhead.py [--rounds 2000]`
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID, uuid4

import psycopg

from tenantguard.db import Database
from tenantguard.testing import embedded_test_database

TENANTS = 50
ROWS_PER_TENANT = 2000


def populate(owner_url: str, tenants: list[UUID]) -> dict[UUID, list[UUID]]:
    ids: dict[UUID, list[UUID]] = {}
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tenantguard.bench_plain (LIKE tenantguard.memory_entries INCLUDING ALL)"
        )
        conn.execute("GRANT SELECT ON tenantguard.bench_plain TO tenantguard_app")
        for tenant in tenants:
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                conn.execute(
                    "INSERT INTO tenantguard.tenants (tenant_id, name) VALUES (%s, 'b')", (tenant,)
                )
                conn.execute(
                    "INSERT INTO tenantguard.memory_entries (tenant_id, id, key, content, version,"
                    " created_at, updated_at) SELECT %s, gen_random_uuid(), 'k' || n,"
                    " repeat('x', 200), 1, now(), now() FROM generate_series(1, %s) AS n",
                    (tenant, ROWS_PER_TENANT),
                )
                found = conn.execute(
                    "SELECT id FROM tenantguard.memory_entries WHERE tenant_id = %s", (tenant,)
                ).fetchall()
                ids[tenant] = [UUID(str(r[0])) for r in found]
                conn.execute(
                    "INSERT INTO tenantguard.bench_plain SELECT * FROM tenantguard.memory_entries"
                    " WHERE tenant_id = %s",
                    (tenant,),
                )
        conn.execute("ANALYZE tenantguard.memory_entries")
        conn.execute("ANALYZE tenantguard.bench_plain")
    return ids


POINT = "SELECT id, key, content FROM tenantguard.{t} WHERE tenant_id = %s AND id = %s"
PAGE = (
    "SELECT id, key, content FROM tenantguard.{t} WHERE tenant_id = %s"
    " ORDER BY created_at, id LIMIT 50"
)


def variants(db: Database, ids: dict[UUID, list[UUID]]) -> dict[str, Callable[[], None]]:
    tenants = list(ids)

    def pick() -> tuple[UUID, UUID]:
        tenant = random.choice(tenants)
        return tenant, random.choice(ids[tenant])

    def run(sql: str, *, context: bool, point: bool) -> Callable[[], None]:
        def once() -> None:
            tenant, row = pick()
            params = (tenant, row) if point else (tenant,)
            if context:
                with db.tenant_transaction(tenant) as tx:
                    assert tx.execute(sql, params).fetchall()
            else:
                with db.system_transaction() as tx:
                    assert tx.execute(sql, params).fetchall()

        return once

    found: dict[str, Callable[[], None]] = {}
    for name, template, point in (("point", POINT, True), ("page", PAGE, False)):
        found[f"{name}/plain"] = run(template.format(t="bench_plain"), context=False, point=point)
        found[f"{name}/plain+ctx"] = run(
            template.format(t="bench_plain"), context=True, point=point
        )
        found[f"{name}/rls"] = run(template.format(t="memory_entries"), context=True, point=point)
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    tenants = [uuid4() for _ in range(TENANTS)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_test_database(Path(tmp) / "pg", "bench") as pg,
    ):
        ids = populate(pg.owner_url.get_secret_value(), tenants)
        with Database(pg.app_url, min_size=1, max_size=1) as db:
            ops = variants(db, ids)
            names = list(ops)
            samples: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(200):  # warm-up: plans, prepared statements, caches
                for name in names:
                    ops[name]()
            for round_no in range(args.rounds):
                shift = round_no % len(names)
                for name in names[shift:] + names[:shift]:
                    started = time.perf_counter()
                    ops[name]()
                    samples[name].append((time.perf_counter() - started) * 1e6)
    print(
        f"{TENANTS} tenants x {ROWS_PER_TENANT} rows, {args.rounds} interleaved rounds, "
        "one pooled connection, embedded PostgreSQL"
    )
    print(f"{'variant':<18}{'p50 us':>10}{'p95 us':>10}{'p99 us':>10}")
    for name in names:
        values = samples[name]
        print(
            f"{name:<18}{statistics.median(values):>10.1f}{percentile(values, 0.95):>10.1f}"
            f"{percentile(values, 0.99):>10.1f}"
        )
    for query in ("point", "page"):
        rls = statistics.median(samples[f"{query}/rls"])
        plain = statistics.median(samples[f"{query}/plain"])
        plain_ctx = statistics.median(samples[f"{query}/plain+ctx"])
        print(f"{query}: rls/plain = {rls / plain:.2f}x   rls/plain+ctx = {rls / plain_ctx:.2f}x")


if __name__ == "__main__":
    main()
