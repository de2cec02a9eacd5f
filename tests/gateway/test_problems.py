"""Every error the gateway answers is one RFC 9457 problem document with safe text only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import uuid4

import httpx2
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.errors import (
    PROBLEM_TYPE_BASE,
    AuditUnavailable,
    Conflict,
    InternalError,
    InvalidCredentials,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    RequestInvalid,
    TenantGuardError,
)
from tenantguard.gateway.app import MAX_BODY_BYTES
from tenantguard.gateway.middleware import PayloadTooLarge

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id", "code"}
LEAKY_MESSAGE = "SELECT password FROM users WHERE token='tg_sk_0123456789abcdefABCDEF'"
MARKER = "SECRET-INPUT-123"


class QuotaExceeded(TenantGuardError):
    code = "quota_exceeded"
    title = "Quota exceeded"
    status = 402
    default_detail = "The quota is exhausted."


def raise_runtime_error() -> None:
    raise RuntimeError(LEAKY_MESSAGE)


def raise_rate_limited() -> None:
    raise RateLimited()


def raise_custom_detail() -> None:
    raise QuotaExceeded("The monthly quota of 1000 runs is used up.")


def raise_conflict_detail() -> None:
    raise Conflict("The entry was changed by someone else.")


def raise_audit_unavailable() -> None:
    raise AuditUnavailable()


def raise_http_exception() -> None:
    raise HTTPException(status_code=400, detail=LEAKY_MESSAGE)


@pytest.fixture
def test_client(app: FastAPI) -> Iterator[TestClient]:
    """The gateway with extra routes that fail in known ways."""
    app.add_api_route("/test/boom", raise_runtime_error)
    app.add_api_route("/test/rate-limited", raise_rate_limited)
    app.add_api_route("/test/custom", raise_custom_detail)
    app.add_api_route("/test/conflict", raise_conflict_detail)
    app.add_api_route("/test/audit-down", raise_audit_unavailable)
    app.add_api_route("/test/http-exception", raise_http_exception)
    with TestClient(app, raise_server_exceptions=False) as built:
        yield built


def assert_problem(
    response: httpx2.Response, *, status: int, code: str, detail: str | None = None
) -> dict[str, object]:
    """Check the common shape of a problem response and return its body."""
    assert response.status_code == status
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert isinstance(body, dict)
    expected_keys = PROBLEM_KEYS | ({"errors"} if status == 422 else set())
    assert set(body) == expected_keys
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == PROBLEM_TYPE_BASE + code.replace("_", "-")
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    assert isinstance(body["title"], str)
    assert body["title"]
    if detail is not None:
        assert body["detail"] == detail
    for internal in ("Traceback", "SELECT", "psycopg", 'File "', "Exception"):
        assert internal not in response.text
    return body


def test_missing_credentials_are_a_401_problem(client: TestClient) -> None:
    """A request without Authorization is a 401 problem with a Bearer challenge."""
    response = client.get("/api/memory")
    assert_problem(
        response,
        status=401,
        code="invalid_credentials",
        detail=InvalidCredentials.default_detail,
    )
    assert response.headers["www-authenticate"] == 'Bearer realm="tenantguard"'


def test_unknown_path_is_a_404_problem(client: TestClient) -> None:
    """An unknown path is the same 404 problem as a missing resource."""
    response = client.get("/no/such/path")
    assert_problem(response, status=404, code="not_found", detail=NotFound.default_detail)


def test_unknown_memory_id_is_a_404_problem(client: TestClient, as_tenant: AsTenant) -> None:
    """An id that does not exist, asked with valid credentials, is a 404 problem."""
    _, h = as_tenant("acme")
    response = client.get(f"/api/memory/{uuid4()}", headers=h)
    assert_problem(response, status=404, code="not_found", detail=NotFound.default_detail)


def test_wrong_method_is_a_405_problem_keeping_allow(client: TestClient) -> None:
    """A method the route lacks is a 405 problem and the Allow header survives."""
    response = client.put("/api/memory", json={"key": "k", "content": "c"})
    assert_problem(
        response, status=405, code="method_not_allowed", detail=MethodNotAllowed.default_detail
    )
    allowed = {part.strip() for part in response.headers["allow"].split(",")}
    assert "POST" in allowed
    assert "PUT" not in allowed


def test_allow_header_lists_every_supported_method(client: TestClient) -> None:
    """The Allow header of a 405 names every method the path supports (RFC 9110)."""
    response = client.put("/api/memory", json={"key": "k", "content": "c"})
    assert response.status_code == 405
    allowed = {part.strip() for part in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed


def test_validation_error_never_echoes_the_input(client: TestClient, as_tenant: AsTenant) -> None:
    """A 422 names where and what kind of error, never the offending value."""
    _, h = as_tenant("acme")
    response = client.post(
        "/api/memory",
        json={"key": "k", "content": {"nested": [MARKER, 1]}, "extra": MARKER},
        headers=h,
    )
    body = assert_problem(
        response, status=422, code="request_invalid", detail=RequestInvalid.default_detail
    )
    assert MARKER not in response.text
    errors = body["errors"]
    assert isinstance(errors, list)
    assert errors
    for error in errors:
        assert set(error) == {"loc", "type"}
        assert all(isinstance(part, str) for part in error["loc"])
    assert ["body", "content"] in [e["loc"] for e in errors]
    assert ["body", "extra"] in [e["loc"] for e in errors]


def test_malformed_json_never_echoes_the_input(client: TestClient, as_tenant: AsTenant) -> None:
    """A body that is not JSON is a 422 that quotes none of the body."""
    _, h = as_tenant("acme")
    response = client.post(
        "/api/memory",
        content=f'{{"key": "k", "content": "{MARKER}"'.encode(),
        headers={**h, "Content-Type": "application/json"},
    )
    assert_problem(response, status=422, code="request_invalid")
    assert MARKER not in response.text


def test_body_over_the_limit_is_a_413_problem(client: TestClient) -> None:
    """A body over 1 MiB is refused with a 413 problem before it reaches a route."""
    response = client.post(
        "/api/memory",
        content=b"x" * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(
        response, status=413, code="payload_too_large", detail=PayloadTooLarge.default_detail
    )


def test_body_at_the_limit_is_not_refused_for_size(client: TestClient) -> None:
    """A body of exactly the limit passes the size check (and fails later, on auth)."""
    response = client.post(
        "/api/memory",
        content=b" " * MAX_BODY_BYTES,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code != 413


@pytest.mark.parametrize("declared", [str(MAX_BODY_BYTES + 1), "abc", "-1", "1.5", "0x10", ""])
def test_overstated_or_invalid_content_length_is_a_413_problem(
    client: TestClient, declared: str
) -> None:
    """A Content-Length over the limit, or not a plain decimal number, is a 413 problem."""
    response = client.post(
        "/api/memory",
        content=b'{"key": "k", "content": "c"}',
        headers={"Content-Type": "application/json", "Content-Length": declared},
    )
    assert_problem(response, status=413, code="payload_too_large")


def test_absurdly_long_content_length_is_a_413_problem(client: TestClient) -> None:
    """A Content-Length of thousands of digits is a 413, not an internal error."""
    response = client.post(
        "/api/memory",
        content=b'{"key": "k", "content": "c"}',
        headers={"Content-Type": "application/json", "Content-Length": "9" * 5000},
    )
    assert_problem(response, status=413, code="payload_too_large")


def test_streamed_body_over_the_limit_is_a_413_problem(client: TestClient) -> None:
    """A chunked body without Content-Length that grows past the limit is a 413 problem."""

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"x" * (MAX_BODY_BYTES // 2)

    response = client.post(
        "/api/memory", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, status=413, code="payload_too_large")


def test_understated_content_length_is_a_413_problem(client: TestClient) -> None:
    """A Content-Length that lies low about a body over the limit is still a 413 problem."""
    response = client.post(
        "/api/memory",
        content=b"x" * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/json", "Content-Length": "10"},
    )
    assert_problem(response, status=413, code="payload_too_large")


def test_rate_limited_is_a_429_problem(test_client: TestClient) -> None:
    """RateLimited raised in a route renders as a 429 problem."""
    response = test_client.get("/test/rate-limited")
    assert_problem(response, status=429, code="rate_limited", detail=RateLimited.default_detail)


def test_unexpected_exception_is_an_opaque_500(test_client: TestClient) -> None:
    """An unexpected exception is a 500 internal_error that reveals nothing of its message."""
    response = test_client.get("/test/boom")
    assert_problem(response, status=500, code="internal_error", detail=InternalError.default_detail)
    for leak in ("SELECT", "password", "tg_sk_", "RuntimeError", LEAKY_MESSAGE):
        assert leak not in response.text


def test_framework_http_exception_detail_is_not_echoed(test_client: TestClient) -> None:
    """An HTTPException's own detail text is replaced by the status phrase."""
    response = test_client.get("/test/http-exception")
    assert_problem(response, status=400, code="bad_request", detail="Bad Request.")
    assert "password" not in response.text


@pytest.mark.parametrize(
    ("path", "status", "code", "detail"),
    [
        ("/test/custom", 402, "quota_exceeded", "The monthly quota of 1000 runs is used up."),
        ("/test/conflict", 409, "conflict", "The entry was changed by someone else."),
        ("/test/audit-down", 503, "audit_unavailable", AuditUnavailable.default_detail),
    ],
)
def test_tenantguard_errors_render_their_own_detail(
    test_client: TestClient, path: str, status: int, code: str, detail: str
) -> None:
    """A TenantGuardError renders its class's status and code and the detail it was given."""
    body = assert_problem(test_client.get(path), status=status, code=code, detail=detail)
    assert body["detail"] == detail


def test_health_and_readiness_are_200(client: TestClient) -> None:
    """`/healthz` answers 200, and `/readyz` is 200 on the clean test database."""
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_openapi_is_served_but_no_docs_pages(client: TestClient) -> None:
    """The OpenAPI document is served; the CDN-loading docs pages are not."""
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["openapi"].startswith("3.")
    assert "/api/memory" in spec.json()["paths"]
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert_problem(client.get(page), status=404, code="not_found")
