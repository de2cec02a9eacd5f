"""Request ids: a well-formed `X-Request-ID` is echoed, anything else is replaced, and the id
reaches the audit."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.gateway.app import MAX_BODY_BYTES

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]

FRESH_ID = re.compile(r"[0-9a-f]{32}")
WELL_FORMED = "abc-123.x:y"


def raise_runtime_error() -> None:
    raise RuntimeError("boom")


@pytest.fixture
def test_client(app: FastAPI) -> Iterator[TestClient]:
    """The gateway with an extra route that fails with an unexpected exception."""
    app.add_api_route("/test/boom", raise_runtime_error)
    with TestClient(app, raise_server_exceptions=False) as built:
        yield built


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/api/memory", 401),
        ("GET", "/no/such/path", 404),
        ("PUT", "/api/memory", 405),
        ("GET", "/test/boom", 500),
    ],
)
def test_well_formed_id_is_echoed(
    test_client: TestClient, method: str, path: str, status: int
) -> None:
    """A well-formed X-Request-ID comes back unchanged, on success and on every error."""
    response = test_client.request(method, path, headers={"X-Request-ID": WELL_FORMED})
    assert response.status_code == status
    assert response.headers.get_list("x-request-id") == [WELL_FORMED]
    if status >= 400:
        assert response.json()["request_id"] == WELL_FORMED


def test_well_formed_id_is_echoed_on_413(client: TestClient) -> None:
    """The body-limit answer carries the caller's request id too."""
    response = client.post(
        "/api/memory",
        content=b"x" * (MAX_BODY_BYTES + 1),
        headers={"X-Request-ID": WELL_FORMED, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers.get_list("x-request-id") == [WELL_FORMED]
    assert response.json()["request_id"] == WELL_FORMED


@pytest.mark.parametrize("offered", [b"a", b"A" * 128, b"0", b"a.b_c:d-e"])
def test_boundary_ids_are_accepted(client: TestClient, offered: bytes) -> None:
    """Ids of 1 and 128 characters from the allowed alphabet are accepted as they are."""
    response = client.get("/healthz", headers={b"x-request-id": offered})
    assert response.headers["x-request-id"] == offered.decode()


@pytest.mark.parametrize(
    "offered",
    [
        b"",
        b"a" * 129,
        b"a b",
        b'a"b',
        b"a<script>",
        b"a,b",
        b"a;b",
        b"a/b",
        b"a\tb",
        "caf\u00e9".encode(),
        "\u00e9t\u00e9".encode("latin-1"),
        b"-abc",
        b".abc",
        b"_abc",
        b":abc",
    ],
)
def test_malformed_id_is_replaced(client: TestClient, offered: bytes) -> None:
    """A malformed X-Request-ID is never echoed; a fresh 32-hex id takes its place."""
    for path in ("/healthz", "/api/memory"):
        response = client.get(path, headers={b"x-request-id": offered})
        rid = response.headers["x-request-id"]
        assert FRESH_ID.fullmatch(rid)
        assert response.headers.get_list("x-request-id") == [rid]
        if response.status_code >= 400:
            assert response.json()["request_id"] == rid


def test_requests_without_an_id_get_distinct_ids(client: TestClient) -> None:
    """Two requests without X-Request-ID get two different fresh ids."""
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert FRESH_ID.fullmatch(first)
    assert FRESH_ID.fullmatch(second)
    assert first != second


def test_request_id_is_recorded_on_the_audit_event(client: TestClient, as_tenant: AsTenant) -> None:
    """The audit event of a write carries the request id the caller sent."""
    _, h = as_tenant("acme")
    rid = f"audit-{uuid4().hex}"
    created = client.post(
        "/api/memory",
        json={"key": "k", "content": "c"},
        headers={**h, "X-Request-ID": rid},
    )
    assert created.status_code == 201
    assert created.headers["x-request-id"] == rid
    events = client.get("/api/audit/events", params={"limit": 500}, headers=h)
    assert events.status_code == 200
    matching = [
        e
        for e in events.json()
        if e["action"] == "memory.create" and e["target_id"] == created.json()["id"]
    ]
    assert len(matching) == 1
    assert matching[0]["request_id"] == rid
    assert matching[0]["outcome"] == "success"
