"""Logs: every line is JSON with the request id, and no secret a request carries reaches it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.identity import apikeys

MakeTenant = Callable[[str], NewTenant]

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZW5hbnQtYWRtaW4ifQ.c2lnbmF0dXJlLW9mLXRoZS1qd3Q"
COOKIE_SECRET = "COOKIE-SESSION-SECRET-8c1f"
BODY_PASSWORD = "BODY-PASSWORD-SECRET-51aa"
QUERY_SECRET = "QUERY-TOKEN-SECRET-77d2"
EXCEPTION_MARKER = "EXCEPTION-MESSAGE-SECRET-3e90"
DIRECT_BODY = "DIRECT-BODY-SECRET-0b4d"
NESTED_PASSWORD = "NESTED-PASSWORD-SECRET-aa31"
EXTRA_PASSWORD = "STDLIB-EXTRA-PASSWORD-SECRET-c2e7"


@pytest.fixture
def tenant(make_tenant: MakeTenant) -> NewTenant:
    """A tenant whose real admin key the failing test route quotes in its exception."""
    return make_tenant("logs")


@pytest.fixture
def test_client(app: FastAPI, tenant: NewTenant) -> Iterator[TestClient]:
    """The gateway with an extra route whose exception message holds the real key."""
    secret = tenant.admin_key.secret

    def raise_with_the_key() -> None:
        raise RuntimeError(f"lookup failed for {secret} ({EXCEPTION_MARKER})")

    app.add_api_route("/test/boom", raise_with_the_key)
    with TestClient(app, raise_server_exceptions=False) as built:
        yield built


def json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    """Every line in the buffer, each of which must be one JSON object."""
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def drive_requests_with_secrets(client: TestClient, real_key: str, unknown_key: str) -> None:
    """Send requests carrying secrets in headers, bodies, the query string and an exception."""
    auth = {"Authorization": f"Bearer {real_key}"}
    assert client.get("/api/memory", headers=auth).status_code == 200
    assert (
        client.get("/api/memory", headers={"Authorization": f"Bearer {unknown_key}"}).status_code
        == 401
    )
    assert client.get("/api/memory", headers={"Authorization": f"Bearer {JWT}"}).status_code == 401
    assert client.get("/api/memory", headers={"Authorization": real_key}).status_code == 401
    cookie = {"Cookie": f"session={COOKIE_SECRET}"}
    assert client.get("/api/memory", headers={**auth, **cookie}).status_code == 200
    created = client.post(
        "/api/memory", json={"key": "k", "content": f"remember {real_key}"}, headers=auth
    )
    assert created.status_code == 201
    refused = client.post(
        "/api/memory",
        json={"key": "k2", "content": "c", "password": BODY_PASSWORD, "api_key": real_key},
        headers=auth,
    )
    assert refused.status_code == 422
    query = client.get("/api/memory", params={"token": QUERY_SECRET, "limit": 5}, headers=auth)
    assert query.status_code == 200
    assert client.get("/test/boom", headers=auth).status_code == 500


def fail_with(message: str) -> None:
    raise ValueError(message)


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret reached the logs: {secret[:12]}..."


def test_request_logs_are_json_with_request_id_and_path(
    log_buffer: io.StringIO, test_client: TestClient
) -> None:
    """Each request leaves a JSON access line with its request id, path and status."""
    response = test_client.get("/healthz", headers={"X-Request-ID": "log-req-1"})
    assert response.status_code == 200
    lines = json_lines(log_buffer)
    access = [line for line in lines if line.get("event") == "http.request"]
    assert access
    assert access[-1]["request_id"] == "log-req-1"
    assert access[-1]["path"] == "/healthz"
    assert access[-1]["method"] == "GET"
    assert access[-1]["status"] == 200
    assert access[-1]["level"] == "info"


def test_secrets_in_requests_never_reach_the_logs(
    log_buffer: io.StringIO, test_client: TestClient, tenant: NewTenant
) -> None:
    """No credential, cookie, body, query string or exception text of a request is logged."""
    real_key = tenant.admin_key.secret
    unknown_key = apikeys.generate().secret
    drive_requests_with_secrets(test_client, real_key, unknown_key)
    text = log_buffer.getvalue()
    lines = json_lines(log_buffer)
    assert lines
    paths = {line.get("path") for line in lines if "request_id" in line}
    assert {"/api/memory", "/test/boom"} <= paths
    assert any(line.get("event") == "auth.failed" for line in lines)
    assert any(line.get("status") == 500 for line in lines)
    assert_no_secret(
        text,
        [
            real_key,
            real_key[10:],
            unknown_key,
            unknown_key[10:],
            JWT,
            JWT.split(".")[1],
            COOKIE_SECRET,
            BODY_PASSWORD,
            QUERY_SECRET,
            EXCEPTION_MARKER,
            "remember",
        ],
    )
    assert "token=" not in text
    assert "?" not in "".join(str(line.get("path", "")) for line in lines)


def test_unhandled_exception_is_logged_without_its_message(
    log_buffer: io.StringIO, test_client: TestClient, tenant: NewTenant
) -> None:
    """An unexpected exception is logged with its type and frames, never its message."""
    assert test_client.get("/test/boom").status_code == 500
    lines = json_lines(log_buffer)
    failures = [line for line in lines if line.get("event") == "request.unhandled"]
    assert len(failures) == 1
    assert failures[0]["exception_type"] == "RuntimeError"
    assert "raise_with_the_key" in failures[0]["traceback"]
    assert failures[0]["level"] == "error"
    assert_no_secret(log_buffer.getvalue(), [tenant.admin_key.secret, EXCEPTION_MARKER])


def test_unhandled_exception_log_carries_the_request_id(
    log_buffer: io.StringIO, test_client: TestClient
) -> None:
    """The error line of an unexpected exception names the request it belongs to."""
    response = test_client.get("/test/boom", headers={"X-Request-ID": "boom-req-1"})
    assert response.status_code == 500
    failures = [line for line in json_lines(log_buffer) if line.get("event") == "request.unhandled"]
    assert len(failures) == 1
    assert failures[0].get("request_id") == "boom-req-1"


def test_direct_structlog_calls_are_redacted(log_buffer: io.StringIO) -> None:
    """Sensitive keys and secret-looking values passed to structlog are masked, at any depth."""
    key = apikeys.generate().secret
    structlog.get_logger("tests").info(
        "x",
        authorization="Bearer abc",
        api_key=key,
        body=DIRECT_BODY,
        nested={"password": NESTED_PASSWORD, "list": [{"Client-Secret": "CS-SECRET-0001"}]},
        note=f"key is {key}",
        dsn="postgresql://svc:DSN-PASSWORD-4455@db.internal/app",
        harmless="visible-value",
    )
    lines = [line for line in json_lines(log_buffer) if line.get("event") == "x"]
    assert len(lines) == 1
    line = lines[0]
    assert line["authorization"] == "[REDACTED]"
    assert line["api_key"] == "[REDACTED]"
    assert line["body"] == "[REDACTED]"
    assert line["nested"]["password"] == "[REDACTED]"
    assert line["harmless"] == "visible-value"
    assert_no_secret(
        log_buffer.getvalue(),
        [
            "Bearer abc",
            key,
            DIRECT_BODY,
            NESTED_PASSWORD,
            "CS-SECRET-0001",
            "DSN-PASSWORD-4455",
        ],
    )


def test_stdlib_records_go_through_the_same_redaction(log_buffer: io.StringIO) -> None:
    """A third-party stdlib record is JSON and masked like our own lines."""
    key = apikeys.generate().secret
    third_party = logging.getLogger("thirdparty")
    third_party.warning("key %s", key)
    third_party.info("with extra", extra={"password": EXTRA_PASSWORD})
    try:
        fail_with(f"bad credential {key} {EXCEPTION_MARKER}")
    except ValueError:
        third_party.exception("failed")
    lines = [line for line in json_lines(log_buffer) if line.get("logger") == "thirdparty"]
    assert [line["event"] for line in lines] == ["key [REDACTED]", "with extra", "failed"]
    assert lines[0]["level"] == "warning"
    assert lines[2]["exception_type"] == "ValueError"
    assert "fail_with" in lines[2]["traceback"]
    assert_no_secret(log_buffer.getvalue(), [key, EXTRA_PASSWORD, EXCEPTION_MARKER])


@pytest.mark.parametrize("shape", ["exception", "set"])
def test_secrets_inside_other_objects_are_redacted(log_buffer: io.StringIO, shape: str) -> None:
    """A key inside an exception object or a set passed as a field value is still masked."""
    key = apikeys.generate().secret
    value: object = RuntimeError(f"failed for {key}") if shape == "exception" else {key}
    structlog.get_logger("tests").warning("failed", error=value)
    assert any(line.get("event") == "failed" for line in json_lines(log_buffer))
    assert key not in log_buffer.getvalue()
