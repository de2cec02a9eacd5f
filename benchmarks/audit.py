"""The cost of a tamper-evident, durable audit, against a raw durable INSERT, in one run.

Same server (the embedded one, fresh, `synchronous_commit = on`, fsync on), same row size.
Each write is its own transaction, committed before the next, as the service acknowledges an
action only after its audit event committed.

- `append`: what the service does: a tenant transaction, the per-tenant advisory lock, the
  head read, canonical encoding and two hashes, the INSERT, the commit.
- `raw`: `INSERT` of a row of the same size into a plain table, one transaction each: what a
  user without tamper evidence would pick.

Writers: 1, and 16 threads (each with its own connection), either all on one tenant (appends
serialise on that tenant's lock: one chain) or each on its own tenant. Then verification
speed (events/s for the chain, the Merkle root, and an offline export), and proof sizes and
times against log size.

Run: `.venv/bin/python benchmarks/audit.py [--seconds 5] [--events 100000]`
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenantguard.audit import checkpoint as notes
from tenantguard.audit import merkle
from tenantguard.audit.chain import (
    GENESIS,
    AuditEvent,
    canonical_json,
    encode_event,
    hash_event,
    link,
    verify_chain,
)
from tenantguard.audit.export import FORMAT, _event_line, seal_text, verify_export
from tenantguard.audit.store import AuditRecord, append
from tenantguard.context import Principal
from tenantguard.crypto import signing
from tenantguard.db import Database
from tenantguard.testing import embedded_test_database

ACTOR = Principal("api_key", "0f8b5c1e-0000-4000-8000-000000000001")
PAYLOAD = {"key": "greeting", "version": 3, "fields": ["content"]}


def make_tenants(owner_url: str, n: int) -> list[UUID]:
    tenants = [uuid4() for _ in range(n)]
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tenantguard.bench_raw (tenant_id uuid NOT NULL, id uuid NOT NULL,"
            " occurred_at timestamptz NOT NULL, actor text NOT NULL, action text NOT NULL,"
            " payload text NOT NULL, h1 bytea NOT NULL, h2 bytea NOT NULL)"
        )
        conn.execute("GRANT INSERT ON tenantguard.bench_raw TO tenantguard_app")
        for tenant in tenants:
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                conn.execute(
                    "INSERT INTO tenantguard.tenants (tenant_id, name) VALUES (%s, 'b')", (tenant,)
                )
    return tenants


def writer(kind: str, db: Database, tenant: UUID) -> Callable[[], None]:
    record = AuditRecord(
        action="memory.update",
        outcome="success",
        actor=ACTOR,
        target_type="memory_entry",
        target_id=str(uuid4()),
        payload=PAYLOAD,
    )
    if kind == "append":

        def once() -> None:
            with db.tenant_transaction(tenant) as tx:
                append(
                    tx, tenant_id=tenant, record=record, request_id="bench", now=datetime.now(UTC)
                )

        return once
    payload = canonical_json(PAYLOAD)

    def raw() -> None:
        with db.system_transaction() as tx:
            tx.execute(
                "INSERT INTO tenantguard.bench_raw VALUES (%s, %s, now(), %s, %s, %s, %s, %s)",
                (tenant, uuid4(), ACTOR.id, "memory.update", payload, bytes(32), bytes(32)),
            )

    return raw


def throughput(ops: list[Callable[[], None]], seconds: float) -> tuple[float, list[float]]:
    """Writes per second with one thread per op, and every write's latency (us)."""
    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in ops]

    def run(i: int) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            ops[i]()
            latencies[i].append((time.perf_counter() - started) * 1e6)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ops))]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [x for each in latencies for x in each]
    return len(flat) / (time.perf_counter() - began), flat


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def synthetic_events(n: int) -> list[AuditEvent]:
    tenant, previous, found = uuid4(), GENESIS, []
    moment = datetime.now(UTC)
    payload = canonical_json(PAYLOAD)
    for seq in range(n):
        fields = {
            "tenant_id": tenant,
            "seq": seq,
            "id": uuid4(),
            "occurred_at": moment,
            "actor_type": ACTOR.type,
            "actor_id": ACTOR.id,
            "action": "memory.update",
            "target_type": "memory_entry",
            "target_id": "x",
            "outcome": "success",
            "reason": "",
            "request_id": "bench",
            "payload": payload,
        }
        event_hash = hash_event(encode_event(**fields))  # type: ignore[arg-type]
        previous = link(previous, event_hash)
        found.append(AuditEvent(**fields, event_hash=event_hash, chain_hash=previous))  # type: ignore[arg-type]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_test_database(Path(tmp) / "pg", "bench") as pg,
    ):
        tenants = make_tenants(pg.owner_url.get_secret_value(), 16)
        with Database(pg.app_url, min_size=16, max_size=16) as db:
            with db.system_transaction() as tx:
                sync = tx.execute("SHOW synchronous_commit").fetchone()
                fsync = tx.execute("SHOW fsync").fetchone()
            print(
                f"embedded PostgreSQL, synchronous_commit={sync[0] if sync else '?'},"
                f" fsync={fsync[0] if fsync else '?'}, {args.seconds:.0f} s per variant"
            )
            print(f"{'writers':<26}{'kind':<8}{'writes/s':>10}{'p50 us':>10}{'p99 us':>10}")
            results: dict[tuple[str, str], float] = {}
            layouts = {
                "1": [tenants[0]],
                "16, one tenant": [tenants[0]] * 16,
                "16, one tenant each": tenants,
            }
            for layout, chosen in layouts.items():
                for kind in ("raw", "append"):  # raw first: both see the same warm server
                    rate, lat = throughput([writer(kind, db, t) for t in chosen], args.seconds)
                    results[(layout, kind)] = rate
                    print(
                        f"{layout:<26}{kind:<8}{rate:>10.0f}{statistics.median(lat):>10.0f}"
                        f"{pct(lat, 0.99):>10.0f}"
                    )
            for layout in layouts:
                ratio = results[(layout, "append")] / results[(layout, "raw")]
                print(f"append/raw throughput, {layout}: {ratio:.2f}x")

    events = synthetic_events(args.events)
    started = time.perf_counter()
    assert verify_chain(events).ok
    chain_rate = len(events) / (time.perf_counter() - started)
    leaves = [merkle.leaf_hash(e.event_hash) for e in events]
    started = time.perf_counter()
    merkle.root(leaves)
    root_rate = len(events) / (time.perf_counter() - started)
    print(
        f"\nverification, {len(events)} events: chain {chain_rate:,.0f} events/s,"
        f" Merkle root {root_rate:,.0f} leaves/s"
    )

    print(
        f"\n{'log size':>10}{'inclusion hashes':>18}{'bytes':>8}{'consistency (n/2) hashes':>26}"
        f"{'proof from leaves ms':>22}"
    )
    for size in (1_000, 10_000, 100_000, 1_000_000):
        fake = [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(size)]
        started = time.perf_counter()
        inclusion = merkle.inclusion_proof(size // 3, size, fake)
        took = (time.perf_counter() - started) * 1e3
        consistency = merkle.consistency_proof(size // 2, size, fake)
        print(
            f"{size:>10}{len(inclusion):>18}{32 * len(inclusion):>8}{len(consistency):>26}"
            f"{took:>22.1f}"
        )

    buffer = io.StringIO()
    key = _export_for(buffer, events)
    started = time.perf_counter()
    verdict = verify_export(buffer.getvalue().splitlines(keepends=True), trusted_keys=[key])
    export_rate = verdict.events / (time.perf_counter() - started)
    print(f"\noffline export verification: {export_rate:,.0f} events/s ({verdict.events} events)")


def _export_for(out: io.StringIO, events: list[AuditEvent]) -> signing.PublicKey:
    """An export of synthetic events, line for line as `write_export` writes them (it reads
    from the database; these events never were in one), sealed by a key of its own."""
    private = Ed25519PrivateKey.generate()
    signer = signing.SigningKey("bench", private)
    public = signing.PublicKey(
        signing.thumbprint(signer.public_bytes()),
        signer.public_bytes(),
        datetime(2000, 1, 1, tzinfo=UTC),
        None,
    )
    leaves = [merkle.leaf_hash(e.event_hash) for e in events]
    seal = notes.sign_text(
        seal_text(
            key_name="bench",
            tenant_id=events[0].tenant_id,
            events=len(events),
            root=merkle.root(leaves),
            head=events[-1].chain_hash,
            at=datetime(2026, 1, 1, tzinfo=UTC),
        ),
        signer,
        key_name="bench",
    )
    header = {
        "kind": "header",
        "format": FORMAT,
        "tenant_id": str(events[0].tenant_id),
        "origin": notes.origin_of("bench", events[0].tenant_id),
        "key_name": "bench",
        "events": len(events),
        "exported_at": "2026-01-01T00:00:00.000000Z",
    }
    out.write(json.dumps(header) + "\n")
    out.write(json.dumps({"kind": "seal", "note": seal}) + "\n")
    for event in events:
        out.write(json.dumps(_event_line(event), sort_keys=True) + "\n")
    return public


if __name__ == "__main__":
    main()
