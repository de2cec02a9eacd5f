"""`Idempotency-Key` on the gateway: a repeat is answered from the record, a different request
under the key is a 422, a running one a 409, an interrupted one a 409 that never runs it again;
keys are scoped per tenant and principal; kept answers are sealed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.context import Principal, TenantContext
from tenantguard.data import idempotency as store
from tenantguard.data import memory
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.gateway import idempotency as gateway_idempotency
from tenantguard.idempotency import (
    LEASE,
    Found,
    IdempotencyInProgress,
    IdempotencyInterrupted,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    Pending,
    decide,
    fingerprint,
    parse_key,
)
from tenantguard.testing import FakeClock

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
ENTRY = {"key": "greeting", "content": "hello"}


def _keyed(h: dict[str, str], key: str) -> dict[str, str]:
    return {**h, "Idempotency-Key": key}


def _entries(client: TestClient, h: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/api/memory", headers=h).json()["items"]
    return items


def _without_request_id(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return {k: v for k, v in body.items() if k != "request_id"}


# The pure core.


def test_a_key_is_one_value_of_visible_ascii() -> None:
    assert parse_key([]) is None
    assert parse_key(["0b7c2c3e-6f5d-4d6e-9a57-1d4f2a9f7e10"]) == (
        "0b7c2c3e-6f5d-4d6e-9a57-1d4f2a9f7e10"
    )
    assert parse_key(["x" * 255]) == "x" * 255
    for bad in ([""], ["x" * 256], ["a b"], ["é"], ["a\tb"], ["a", "b"]):
        with pytest.raises(IdempotencyKeyInvalid):
            parse_key(bad)


def test_the_fingerprint_changes_with_every_part_and_cannot_be_shifted() -> None:
    base = ("POST", "/api/memory", b"", b"application/json", b"{}")
    prints = {fingerprint(*base)}
    for i, changed in enumerate(("PATCH", "/api/memor", b"a=1", b"text/plain", b"{ }")):
        parts = list(base)
        parts[i] = changed
        prints.add(fingerprint(*parts))  # type: ignore[arg-type]
    assert len(prints) == 6
    # Moving bytes from one part to the next is another request.
    assert fingerprint("POST", "/a", b"b", b"", b"") != fingerprint("POST", "/ab", b"", b"", b"")


def test_decisions() -> None:
    now = FakeClock().now()
    mine, other = b"m" * 32, b"o" * 32
    live, gone = now + LEASE, now - timedelta(seconds=1)
    decide(Found(mine, "done", gone, answered=True), mine, now)  # replay
    cases: list[tuple[Found, bytes, type[Exception]]] = [
        (Found(mine, "done", live, answered=True), other, IdempotencyKeyReused),
        (Found(mine, "in_progress", live, answered=False), other, IdempotencyKeyReused),
        (Found(mine, "in_progress", live, answered=False), mine, IdempotencyInProgress),
        (Found(mine, "in_progress", gone, answered=False), mine, IdempotencyInterrupted),
        (Found(mine, "interrupted", live, answered=False), mine, IdempotencyInterrupted),
    ]
    for found, presented, expected in cases:
        with pytest.raises(expected):
            decide(found, presented, now)


# The gateway.


def test_a_repeat_gets_the_kept_answer_and_runs_nothing(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    first = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "k-1"))
    again = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "k-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert [e["id"] for e in _entries(client, h)] == [first.json()["id"]]
    # Without a key, the same body is a request of its own: it runs, and meets the entry.
    unkeyed = client.post("/api/memory", json=ENTRY, headers=h)
    assert unkeyed.status_code == 409
    assert unkeyed.json()["code"] == "conflict"


def test_the_same_key_for_another_request_is_a_422(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("t")
    assert client.post("/api/memory", json=ENTRY, headers=_keyed(h, "k")).status_code == 201
    other_body = client.post(
        "/api/memory", json={**ENTRY, "content": "bye"}, headers=_keyed(h, "k")
    )
    assert other_body.status_code == 422
    assert other_body.json()["code"] == "idempotency_key_reused"
    entry_id = _entries(client, h)[0]["id"]
    other_route = client.post(f"/api/memory/{entry_id}/restore", headers=_keyed(h, "k"))
    assert other_route.json()["code"] == "idempotency_key_reused"
    assert len(_entries(client, h)) == 1


def test_an_error_answer_is_kept_too(client: TestClient, as_tenant: AsTenant) -> None:
    """A refusal past the claim (here, a body the schema refuses) is the request's answer."""
    _, h = as_tenant("t")
    first = client.post("/api/memory", json={"key": "k"}, headers=_keyed(h, "bad"))
    again = client.post("/api/memory", json={"key": "k"}, headers=_keyed(h, "bad"))
    assert first.status_code == again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()  # the first request's request_id included


def test_keys_are_scoped_per_tenant_and_principal(client: TestClient, as_tenant: AsTenant) -> None:
    _, ha = as_tenant("a")
    _, hb = as_tenant("b")
    first = client.post("/api/memory", json=ENTRY, headers=_keyed(ha, "shared"))
    other_tenant = client.post("/api/memory", json=ENTRY, headers=_keyed(hb, "shared"))
    second_key = client.post(
        "/api/api-keys", json={"name": "second", "capabilities": ["memory:write"]}, headers=ha
    ).json()["secret"]
    other_principal = client.post(
        "/api/memory",
        json=ENTRY,
        headers=_keyed({"Authorization": f"Bearer {second_key}"}, "shared"),
    )
    assert first.status_code == other_tenant.status_code == 201
    assert other_tenant.json()["id"] != first.json()["id"]
    # Another key of the same tenant runs its own request (and meets A's entry of that key):
    # it never sees the first one's answer.
    assert other_principal.status_code == 409
    assert other_principal.json()["code"] == "conflict"
    assert "idempotent-replayed" not in other_tenant.headers
    assert "idempotent-replayed" not in other_principal.headers
    assert len(_entries(client, ha)) == 1
    assert len(_entries(client, hb)) == 1


def test_a_malformed_key_is_refused_before_anything_runs(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    for bad in ("", "a b", "x" * 256):
        answer = client.post("/api/memory", json=ENTRY, headers=_keyed(h, bad))
        assert answer.status_code == 422, bad
        assert answer.json()["code"] == "idempotency_key_invalid"
    two = client.post(
        "/api/memory",
        json=ENTRY,
        headers=[*h.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert two.json()["code"] == "idempotency_key_invalid"
    assert _entries(client, h) == []
    # Methods HTTP makes idempotent ignore it.
    assert client.get("/api/memory", headers=_keyed(h, "a b")).status_code == 200


def test_concurrent_duplicates_run_once(
    client: TestClient, as_tenant: AsTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, h = as_tenant("t")
    runs: list[int] = []
    real_create = memory.create
    inside = threading.Event()

    def slow_create(*args: Any, **kwargs: Any) -> memory.MemoryEntry:
        runs.append(1)
        inside.set()
        time.sleep(0.5)  # the others arrive while this one runs
        return real_create(*args, **kwargs)

    monkeypatch.setattr(memory, "create", slow_create)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: client.post("/api/memory", json=ENTRY, headers=_keyed(h, "dup")),
                range(8),
            )
        )
    assert inside.is_set()
    assert len(runs) == 1
    ran = [a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers]
    assert len(ran) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "idempotency_in_progress"
            assert answer.headers["retry-after"] == "1"
        else:
            assert answer.status_code == 201
            assert answer.json() == ran[0].json()
    assert len(_entries(client, h)) == 1
    after = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "dup"))
    assert after.headers["idempotent-replayed"] == "true"
    assert after.json() == ran[0].json()


def test_a_request_that_crashed_is_never_run_again(
    client: TestClient, as_tenant: AsTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, h = as_tenant("t")
    real_create = memory.create

    def crash_after_writing(*args: Any, **kwargs: Any) -> memory.MemoryEntry:
        real_create(*args, **kwargs)
        raise RuntimeError("worker died half-way")

    monkeypatch.setattr(memory, "create", crash_after_writing)
    crashed = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "once"))
    assert crashed.status_code == 500
    monkeypatch.setattr(memory, "create", real_create)
    again = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "once"))
    assert again.status_code == 409
    assert again.json()["code"] == "idempotency_interrupted"
    assert _entries(client, h) == []  # the crash rolled its transaction back; nothing ran since


def test_a_claim_left_running_blocks_then_reads_as_interrupted(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock, keyring: Any
) -> None:
    """A process that died mid-request leaves its claim in progress: repeats are told to wait
    until the lease ends, then that the outcome is unknown; the request never runs twice."""
    tenant, h = as_tenant("t")
    ctx = TenantContext(
        tenant.tenant_id, Principal("api_key", str(tenant.admin_key.info.id)), frozenset(), "t"
    )
    body = b'{"key":"greeting","content":"hello"}'
    pending = Pending(
        "lost", fingerprint("POST", "/api/memory", b"", b"application/json", body), "POST", "/"
    )
    with db.tenant_transaction(tenant.tenant_id) as tx:
        store.claim(tx, ctx, keyring, pending, now=clock.now(), retention=timedelta(hours=24))
    headers = {**_keyed(h, "lost"), "Content-Type": "application/json"}
    waiting = client.post("/api/memory", content=body, headers=headers)
    assert waiting.status_code == 409
    assert waiting.json()["code"] == "idempotency_in_progress"
    clock.advance(LEASE)
    interrupted = client.post("/api/memory", content=body, headers=headers)
    assert interrupted.json()["code"] == "idempotency_interrupted"
    assert _entries(client, h) == []


def test_a_key_is_free_again_after_the_retention_window(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    _, h = as_tenant("t")
    first = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "k"))
    clock.advance(timedelta(hours=23, minutes=59))
    assert client.post("/api/memory", json=ENTRY, headers=_keyed(h, "k")).json() == first.json()
    clock.advance(timedelta(minutes=1))
    fresh = client.post(
        "/api/memory", json={"key": "other", "content": "x"}, headers=_keyed(h, "k")
    )
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    assert len(_entries(client, h)) == 2


def test_kept_answers_are_sealed(
    client: TestClient, as_tenant: AsTenant, owner_in: Callable[[Any], Any]
) -> None:
    """An answer may hold a secret shown once (a new API key): it is kept sealed, not as text."""
    tenant, h = as_tenant("t")
    made = client.post(
        "/api/api-keys",
        json={"name": "shown-once", "capabilities": ["memory:read"]},
        headers=_keyed(h, "mint"),
    )
    secret = made.json()["secret"]
    again = client.post(
        "/api/api-keys",
        json={"name": "shown-once", "capabilities": ["memory:read"]},
        headers=_keyed(h, "mint"),
    )
    assert again.json()["secret"] == secret  # the same principal, the same request
    conn = owner_in(tenant.tenant_id)
    (sealed,) = conn.execute(
        "SELECT response_body FROM tenantguard.idempotency_keys WHERE tenant_id = %s",
        (tenant.tenant_id,),
    ).fetchone()
    assert secret.encode() not in bytes(sealed)
    assert b"shown-once" not in bytes(sealed)


def test_an_answer_too_large_to_keep_interrupts_the_key(
    client: TestClient, as_tenant: AsTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, h = as_tenant("t")
    monkeypatch.setattr(gateway_idempotency, "MAX_KEPT_BYTES", 10)
    first = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "big"))
    assert first.status_code == 201  # the answer itself goes out whole
    again = client.post("/api/memory", json=ENTRY, headers=_keyed(h, "big"))
    assert again.json()["code"] == "idempotency_interrupted"
    assert len(_entries(client, h)) == 1
