"""Outbound deliveries against a local receiver: signed as Standard Webhooks (both secrets
during a rotation's overlap), only through the egress guard, retried on the jittered schedule
with the same webhook-id, failed for good after the last attempt, logged and audited, and sent
again after a worker dies between sending and recording."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.egress.check import EgressPolicy
from tenantguard.testing import FakeClock
from tenantguard.webhooks.delivery import Deliverer
from tenantguard.webhooks.schedule import Backoff
from tenantguard.webhooks.signing import secret_bytes, verify_standard

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
URL = "/api/webhook-endpoints"


@dataclass
class Receiver:
    port: int
    answers: list[int] = field(default_factory=list)  # statuses to give, then 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _deliverer(client: TestClient) -> Deliverer:
    found = client.app.state.runtime.deliverer  # type: ignore[attr-defined]
    assert isinstance(found, Deliverer)
    return found


def _endpoint(client: TestClient, h: dict[str, str], receiver: Receiver) -> dict[str, Any]:
    made = client.post(URL, json={"url": receiver.url, "event_types": ["webhook.test"]}, headers=h)
    assert made.status_code == 201, made.text
    return dict(made.json())


def _log(client: TestClient, h: dict[str, str], endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    answer = client.get(f"{URL}/{endpoint['id']}/deliveries", headers=h)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def _test(client: TestClient, h: dict[str, str], endpoint: dict[str, Any]) -> None:
    queued = client.post(f"{URL}/{endpoint['id']}/test", headers=h)
    assert queued.status_code == 202, queued.text


def _verify(secret: str, headers: dict[str, str], body: bytes, clock: FakeClock) -> None:
    verify_standard([secret_bytes(secret)], headers, body, now=int(clock.now().timestamp()))


def test_a_test_event_is_delivered_signed_logged_and_audited(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, db: Database, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    endpoint = _endpoint(client, h, receiver)
    _test(client, h, endpoint)
    assert receiver.received == []  # queued, not sent by the request
    assert _deliverer(client).run_tenant(tenant.tenant_id) == 1
    ((headers, body),) = receiver.received
    _verify(endpoint["secret"], headers, body, clock)
    assert json.loads(body)["type"] == "webhook.test"
    (logged,) = _log(client, h, endpoint)
    assert logged["status"] == "delivered"
    assert logged["webhook_id"] == headers["webhook-id"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in logged["attempts"]] == [
        (1, 200, "")
    ]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        actions = [e.action for e in iter_events(tx, tenant_id=tenant.tenant_id)]
    assert "webhook.delivered" in actions
    assert _deliverer(client).run_tenant(tenant.tenant_id) == 0  # nothing more to send


def test_failures_are_retried_on_the_schedule_with_the_same_id(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    endpoint = _endpoint(client, h, receiver)
    deliverer = _deliverer(client)
    receiver.answers = [500, 503]
    _test(client, h, endpoint)
    assert deliverer.run_tenant(tenant.tenant_id) == 1
    (logged,) = _log(client, h, endpoint)
    assert logged["status"] == "pending"
    assert deliverer.run_tenant(tenant.tenant_id) == 0  # not due yet
    clock.advance(timedelta(seconds=deliverer.backoff.ceiling(1) + 1))
    assert deliverer.run_tenant(tenant.tenant_id) == 1
    clock.advance(timedelta(seconds=deliverer.backoff.ceiling(2) + 1))
    assert deliverer.run_tenant(tenant.tenant_id) == 1
    (logged,) = _log(client, h, endpoint)
    assert logged["status"] == "delivered"
    assert [a["status_code"] for a in logged["attempts"]] == [500, 503, 200]
    assert [a["error"] for a in logged["attempts"]] == ["status:500", "status:503", ""]
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    stamps = [headers["webhook-timestamp"] for headers, _ in receiver.received]
    assert len(ids) == 1  # one message, tried three times
    assert len(set(stamps)) == 3  # each attempt signed at its own time
    for headers, body in receiver.received[-1:]:
        _verify(endpoint["secret"], headers, body, clock)


def test_a_delivery_fails_for_good_after_the_last_attempt(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, db: Database, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    endpoint = _endpoint(client, h, receiver)
    deliverer = _deliverer(client)
    deliverer.backoff = Backoff(max_attempts=3)
    receiver.answers = [500] * 10
    _test(client, h, endpoint)
    for _ in range(5):
        deliverer.run_tenant(tenant.tenant_id)
        clock.advance(timedelta(seconds=deliverer.backoff.cap_seconds + 1))
    (logged,) = _log(client, h, endpoint)
    assert logged["status"] == "failed"
    assert len(logged["attempts"]) == 3
    assert len(receiver.received) == 3
    with db.tenant_transaction(tenant.tenant_id) as tx:
        failed = [
            e for e in iter_events(tx, tenant_id=tenant.tenant_id) if e.action == "webhook.failed"
        ]
    assert [e.reason for e in failed] == ["status:500"]


def test_only_the_egress_guard_sends(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, clock: FakeClock
) -> None:
    """Under a policy without the tests' loopback grant, the receiver on loopback is never
    reached: the attempt is logged with the guard's rule and retried later."""
    tenant, h = as_tenant("t")
    endpoint = _endpoint(client, h, receiver)
    deliverer = _deliverer(client)
    deliverer.egress = EgressPolicy()
    _test(client, h, endpoint)
    assert deliverer.run_tenant(tenant.tenant_id) == 1
    assert receiver.received == []
    (logged,) = _log(client, h, endpoint)
    (attempt,) = logged["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("egress:")
    assert logged["status"] == "pending"


def test_a_worker_that_dies_after_sending_leaves_it_to_be_sent_again_with_the_same_id(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    endpoint = _endpoint(client, h, receiver)
    deliverer = _deliverer(client)
    _test(client, h, endpoint)
    (claimed,) = deliverer.claim(tenant.tenant_id)
    deliverer.send(claimed)  # ... and the worker dies before recording it
    assert (
        deliverer.run_tenant(tenant.tenant_id) == 0
    )  # its lease still holds: no second worker takes it
    clock.advance(deliverer.lease + timedelta(seconds=1))
    assert deliverer.run_tenant(tenant.tenant_id) == 1
    first, second = receiver.received
    assert first[0]["webhook-id"] == second[0]["webhook-id"]
    assert first[1] == second[1]
    (logged,) = _log(client, h, endpoint)
    assert logged["status"] == "delivered"


def test_during_a_rotation_both_secrets_sign(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    endpoint = _endpoint(client, h, receiver)
    rotated = client.post(f"{URL}/{endpoint['id']}/rotate-secret", json={}, headers=h).json()
    _test(client, h, endpoint)
    assert _deliverer(client).run_tenant(tenant.tenant_id) == 1
    ((headers, body),) = receiver.received
    assert len(headers["webhook-signature"].split()) == 2
    _verify(endpoint["secret"], headers, body, clock)  # a receiver not yet switched
    _verify(rotated["secret"], headers, body, clock)  # and one that has


def test_one_pass_sends_what_every_tenant_has_due(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver
) -> None:
    """The pass finds the tenants with something due (ids only) and works in each one's own
    context: each tenant's event reaches its own endpoint, signed with its own secret."""
    _, ha = as_tenant("a")
    _, hb = as_tenant("b")
    a, b = _endpoint(client, ha, receiver), _endpoint(client, hb, receiver)
    _test(client, ha, a)
    _test(client, hb, b)
    assert _deliverer(client).run() >= 2
    ids = {json.loads(body)["data"]["endpoint_id"] for _, body in receiver.received}
    assert ids == {a["id"], b["id"]}


def test_a_worker_that_outlived_its_lease_records_nothing(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, clock: FakeClock, db: Database
) -> None:
    """The job run twice, the first run stalled half-way (sent, not recorded) until another
    took the delivery over: the late one's outcome is void, so the log, the delivery's state
    and the audit each hold one outcome, the second run's."""
    tenant, h = as_tenant("t")
    endpoint = _endpoint(client, h, receiver)
    deliverer = _deliverer(client)
    _test(client, h, endpoint)
    (stalled,) = deliverer.claim(tenant.tenant_id)
    receiver.answers = [500]  # the stalled run's send fails, the second run's succeeds
    late = deliverer.send(stalled)
    clock.advance(deliverer.lease + timedelta(seconds=1))
    assert deliverer.run_tenant(tenant.tenant_id) == 1
    deliverer.record(stalled, late)  # wakes up, too late
    (logged,) = _log(client, h, endpoint)
    assert logged["status"] == "delivered"
    assert [(a["attempt"], a["status_code"]) for a in logged["attempts"]] == [(1, 200)]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        outcomes = [
            e.action
            for e in iter_events(tx, tenant_id=tenant.tenant_id)
            if e.action.startswith("webhook.d")
        ]
    assert outcomes == ["webhook.delivered"]
    assert deliverer.run_tenant(tenant.tenant_id) == 0


def test_one_tenants_failure_does_not_starve_the_others(
    client: TestClient, as_tenant: AsTenant, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, ha = as_tenant("a")
    _, hb = as_tenant("b")
    ea, eb = _endpoint(client, ha, receiver), _endpoint(client, hb, receiver)
    _test(client, ha, ea)
    _test(client, hb, eb)
    deliverer = _deliverer(client)
    real_claim = deliverer.claim

    def poisoned(tenant_id: Any) -> Any:
        if tenant_id == a.tenant_id:
            raise RuntimeError("a delivery of A's cannot be read")
        return real_claim(tenant_id)

    monkeypatch.setattr(deliverer, "claim", poisoned)
    deliverer.run()
    ids = {json.loads(body)["data"]["endpoint_id"] for _, body in receiver.received}
    assert eb["id"] in ids
    assert ea["id"] not in ids


def test_approvals_are_announced_once_each_with_no_arguments(
    client: TestClient,
    as_tenant: AsTenant,
    receiver: Receiver,
    sign_in: Callable[..., Any],
    clock: FakeClock,
) -> None:
    """approval.requested when a call first waits (not again while it waits), approval.decided
    when a person decides; the bodies name the call by its hash, never its arguments."""
    tenant, h = as_tenant("t")
    made = client.post(
        URL,
        json={"url": receiver.url, "event_types": ["approval.requested", "approval.decided"]},
        headers=h,
    ).json()
    grants: dict[str, object] = {"tools": {"memory_read": {}, "memory_delete": {}}}
    assert client.put("/api/admin/tool-policy", json=grants, headers=h).status_code == 200
    assert client.put("/api/agents/helper", json=grants, headers=h).status_code == 200
    entry = client.post("/api/memory", json={"key": "k", "content": "x"}, headers=h).json()
    run = client.post("/api/runs", json={"agent": "helper", "input": {}}, headers=h).json()
    call = {"tool": "memory_delete", "arguments": {"id": entry["id"]}}
    first = client.post(f"/api/runs/{run['id']}/tool-calls", json=call, headers=h)
    again = client.post(f"/api/runs/{run['id']}/tool-calls", json=call, headers=h)
    assert first.status_code == again.status_code == 202
    _, owner = sign_in(tenant, "owner")
    approval = first.json()["approval_id"]
    decided = client.post(
        f"/api/approvals/{approval}/approve",
        headers={"Authorization": f"Bearer {owner.access_token}"},
    )
    assert decided.status_code == 200, decided.text
    assert _deliverer(client).run_tenant(tenant.tenant_id) == 2
    bodies = [json.loads(body) for _, body in receiver.received]
    for headers, body in receiver.received:
        _verify(made["secret"], headers, body, clock)
        assert entry["id"].encode() not in body  # the arguments stay behind
    assert sorted(b["type"] for b in bodies) == ["approval.decided", "approval.requested"]
    assert {b["data"]["approval_id"] for b in bodies} == {approval}
    assert {b["data"]["status"] for b in bodies} == {"pending", "approved"}
