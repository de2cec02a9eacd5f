"""Runs and their events over the gateway: ordering, filtering, limits, not-found, paging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
RUNS = "/api/runs"
MAX_JSON_BYTES = 262_144


def create_run(
    client: TestClient, headers: dict[str, str], agent: str = "triage", **extra: Any
) -> dict[str, Any]:
    response = client.post(RUNS, json={"agent": agent, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


def append(
    client: TestClient, headers: dict[str, str], run_id: str, type_: str, **data: Any
) -> dict[str, Any]:
    response = client.post(
        f"{RUNS}/{run_id}/events", json={"type": type_, "data": data}, headers=headers
    )
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


def test_run_is_created_and_read_back(client: TestClient, as_tenant: AsTenant) -> None:
    """A created run starts in status 'created' and reads back with its input."""
    _, h = as_tenant("acme")
    run = create_run(client, h, agent="support-triage", input={"ticket": "T-1042"})
    assert run["status"] == "created"
    assert run["agent"] == "support-triage"
    fetched = client.get(f"{RUNS}/{run['id']}", headers=h)
    assert fetched.status_code == 200
    assert fetched.json() == run


def test_events_are_numbered_in_order(client: TestClient, as_tenant: AsTenant) -> None:
    """Three appended events get seq 1, 2, 3 and list back in that order with their data."""
    _, h = as_tenant("acme")
    run_id = create_run(client, h)["id"]
    made = [
        append(client, h, run_id, "tool_call", tool="search"),
        append(client, h, run_id, "tool.result", hits=3),
        append(client, h, run_id, "message", text="done"),
    ]
    assert [e["seq"] for e in made] == [1, 2, 3]
    assert all(e["run_id"] == run_id for e in made)
    assert len({e["id"] for e in made}) == 3

    listing = client.get(f"{RUNS}/{run_id}/events", headers=h)
    assert listing.status_code == 200
    assert listing.json() == made
    assert [(e["seq"], e["type"], e["data"]) for e in listing.json()] == [
        (1, "tool_call", {"tool": "search"}),
        (2, "tool.result", {"hits": 3}),
        (3, "message", {"text": "done"}),
    ]


def test_event_numbers_are_per_run(client: TestClient, as_tenant: AsTenant) -> None:
    """Each run numbers its own events from 1."""
    _, h = as_tenant("acme")
    first, second = create_run(client, h)["id"], create_run(client, h)["id"]
    append(client, h, first, "a")
    append(client, h, first, "b")
    assert append(client, h, second, "c")["seq"] == 1
    assert append(client, h, first, "d")["seq"] == 3


def test_after_seq_filters_events(client: TestClient, as_tenant: AsTenant) -> None:
    """after_seq returns only the events numbered above it; limit caps the count."""
    _, h = as_tenant("acme")
    run_id = create_run(client, h)["id"]
    for i in range(4):
        append(client, h, run_id, "step", i=i)

    def seqs(**params: int) -> list[int]:
        response = client.get(f"{RUNS}/{run_id}/events", params=params, headers=h)
        assert response.status_code == 200
        return [e["seq"] for e in response.json()]

    assert seqs() == [1, 2, 3, 4]
    assert seqs(after_seq=0) == [1, 2, 3, 4]
    assert seqs(after_seq=2) == [3, 4]
    assert seqs(after_seq=4) == []
    assert seqs(after_seq=99) == []
    assert seqs(after_seq=1, limit=2) == [2, 3]
    negative = client.get(f"{RUNS}/{run_id}/events", params={"after_seq": -1}, headers=h)
    assert negative.status_code == 422


def test_unknown_run_is_404(client: TestClient, as_tenant: AsTenant) -> None:
    """A run id that does not exist is a 404 problem for reading it, its events, and appending."""
    _, h = as_tenant("acme")
    missing = uuid4()
    responses = [
        client.get(f"{RUNS}/{missing}", headers=h),
        client.get(f"{RUNS}/{missing}/events", headers=h),
        client.post(f"{RUNS}/{missing}/events", json={"type": "x"}, headers=h),
    ]
    for response in responses:
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"
    assert responses[0].json()["detail"] == responses[2].json()["detail"]


def test_another_tenants_run_is_404(client: TestClient, as_tenant: AsTenant) -> None:
    """Another tenant's run answers exactly like a missing one, and gains no events."""
    _, alice = as_tenant("alice")
    _, bob = as_tenant("bob")
    run_id = create_run(client, alice)["id"]
    append(client, alice, run_id, "start")
    for response in (
        client.get(f"{RUNS}/{run_id}", headers=bob),
        client.get(f"{RUNS}/{run_id}/events", headers=bob),
        client.post(f"{RUNS}/{run_id}/events", json={"type": "x"}, headers=bob),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert client.get(RUNS, headers=bob).json()["items"] == []
    assert [e["seq"] for e in client.get(f"{RUNS}/{run_id}/events", headers=alice).json()] == [1]


def test_oversize_input_is_422_without_echo(client: TestClient, as_tenant: AsTenant) -> None:
    """An input over 256 KiB of JSON is refused with 422, the answer does not echo it, and no
    run is created."""
    _, h = as_tenant("acme")
    marker = "SECRET-MARKER-" + uuid4().hex
    big = {"marker": marker, "blob": "x" * MAX_JSON_BYTES}
    response = client.post(RUNS, json={"agent": "triage", "input": big}, headers=h)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "request_invalid"
    assert marker not in response.text
    assert "xxxxxxxx" not in response.text
    assert len(response.content) < 4096
    assert client.get(RUNS, headers=h).json()["items"] == []


def test_input_at_the_limit_is_accepted(client: TestClient, as_tenant: AsTenant) -> None:
    """An input of exactly 256 KiB of compact JSON is accepted; one byte more is refused."""
    _, h = as_tenant("acme")
    overhead = len('{"b":""}')
    exact = {"b": "x" * (MAX_JSON_BYTES - overhead)}
    ok = client.post(RUNS, json={"agent": "triage", "input": exact}, headers=h)
    assert ok.status_code == 201
    over = {"b": "x" * (MAX_JSON_BYTES - overhead + 1)}
    assert client.post(RUNS, json={"agent": "t", "input": over}, headers=h).status_code == 422


def test_oversize_event_data_is_422(client: TestClient, as_tenant: AsTenant) -> None:
    """Event data over 256 KiB is refused with 422 and appends nothing."""
    _, h = as_tenant("acme")
    run_id = create_run(client, h)["id"]
    response = client.post(
        f"{RUNS}/{run_id}/events",
        json={"type": "blob", "data": {"b": "y" * MAX_JSON_BYTES}},
        headers=h,
    )
    assert response.status_code == 422
    assert "yyyyyyyy" not in response.text
    assert client.get(f"{RUNS}/{run_id}/events", headers=h).json() == []


@pytest.mark.parametrize(
    "event_type",
    ["", "ToolCall", "1step", "_step", ".step", "tool-call", "tool call", "é", "a" * 101],
    ids=repr,
)
def test_event_type_pattern_is_enforced(
    client: TestClient, as_tenant: AsTenant, event_type: str
) -> None:
    """An event type outside `^[a-z][a-z0-9_.]*$` (1..100 characters) is refused with 422."""
    _, h = as_tenant("acme")
    run_id = create_run(client, h)["id"]
    response = client.post(f"{RUNS}/{run_id}/events", json={"type": event_type}, headers=h)
    assert response.status_code == 422
    assert response.json()["code"] == "request_invalid"
    assert client.get(f"{RUNS}/{run_id}/events", headers=h).json() == []


def test_run_listing_pages_with_cursor(client: TestClient, as_tenant: AsTenant) -> None:
    """Keyset pages with a cursor return each run exactly once, in creation order."""
    _, h = as_tenant("acme")
    made = [create_run(client, h, agent=f"agent-{i}")["id"] for i in range(7)]
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        response = client.get(RUNS, params=params, headers=h)
        assert response.status_code == 200
        page = response.json()
        pages += 1
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen))
    bad = client.get(RUNS, params={"cursor": "not-a-cursor"}, headers=h)
    assert bad.status_code == 422
    assert bad.json()["code"] == "request_invalid"


def test_run_routes_need_their_capabilities(client: TestClient, as_tenant: AsTenant) -> None:
    """A key with runs:read only can list runs but not create one (403 capability_denied)."""
    _, admin = as_tenant("acme")
    key = client.post(
        "/api/api-keys", json={"name": "reader", "capabilities": ["runs:read"]}, headers=admin
    ).json()
    reader = {"Authorization": f"Bearer {key['secret']}"}
    assert client.get(RUNS, headers=reader).status_code == 200
    denied = client.post(RUNS, json={"agent": "triage"}, headers=reader)
    assert denied.status_code == 403
    assert denied.json()["code"] == "capability_denied"
