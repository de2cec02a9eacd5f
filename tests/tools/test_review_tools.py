"""Review findings on tools: each test asserts the correct behaviour (each was a strict xfail
until its fix landed)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.tools.builtin import builtin_registry
from tenantguard.tools.capabilities import freeze, parse_grants
from tenantguard.tools.gate import decide

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
GRANTS: dict[str, Any] = {"tools": {"memory_read": {}, "memory_delete": {}}}


class _Page(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        charset = "base64" if self.path == "/codec" else "utf-8"  # a codec, not a text encoding
        body = b"<p>plain docs</p>"
        self.send_response(200)
        self.send_header("Content-Type", f"text/plain; charset={charset}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _json(h: dict[str, str]) -> dict[str, str]:
    return {**h, "content-type": "application/json"}


def _memory_run(client: TestClient, h: dict[str, str]) -> tuple[str, str]:
    entry = client.post("/api/memory", json={"key": "k", "content": "the content"}, headers=h)
    assert client.put("/api/admin/tool-policy", json=GRANTS, headers=h).status_code == 200
    assert client.put("/api/agents/helper", json=GRANTS, headers=h).status_code == 200
    run = client.post("/api/runs", json={"agent": "helper", "input": {}}, headers=h)
    return entry.json()["id"], run.json()["id"]


def _fetch_run(client: TestClient, h: dict[str, str], domains: list[str]) -> str:
    grants: dict[str, Any] = {"tools": {"web_fetch": {"domains": domains}}}
    assert client.put("/api/admin/tool-policy", json=grants, headers=h).status_code == 200
    assert client.put("/api/agents/reader", json=grants, headers=h).status_code == 200
    return str(
        client.post("/api/runs", json={"agent": "reader", "input": {}}, headers=h).json()["id"]
    )


def _call(client: TestClient, h: dict[str, str], run: str, tool: str, **arguments: Any) -> Any:
    return client.post(
        f"/api/runs/{run}/tool-calls", json={"tool": tool, "arguments": arguments}, headers=h
    )


def test_revoking_a_preapproval_applies_to_a_running_run_at_once(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    entry = client.post("/api/memory", json={"key": "k", "content": "c"}, headers=h).json()["id"]
    preapproved: dict[str, Any] = {"tools": {"memory_delete": {"preapproved": True}}}
    assert client.put("/api/admin/tool-policy", json=preapproved, headers=h).status_code == 200
    agent: dict[str, Any] = {"tools": {"memory_delete": {}}}
    assert client.put("/api/agents/cleaner", json=agent, headers=h).status_code == 200
    run = client.post("/api/runs", json={"agent": "cleaner", "input": {}}, headers=h).json()["id"]
    # The tenant takes the pre-approval back: every destructive call needs a person again.
    revoked: dict[str, Any] = {"tools": {"memory_delete": {}}}
    assert client.put("/api/admin/tool-policy", json=revoked, headers=h).status_code == 200
    answer = _call(client, h, run, "memory_delete", id=entry)
    assert answer.status_code == 202, answer.text
    assert client.get(f"/api/memory/{entry}", headers=h).status_code == 200


def test_narrowing_the_domains_applies_to_a_running_run_at_once(
    client: TestClient, as_tenant: AsTenant, site: str
) -> None:
    _, h = as_tenant("t")
    run = _fetch_run(client, h, ["127.0.0.1"])
    narrowed: dict[str, Any] = {"tools": {"web_fetch": {"domains": ["docs.example.com"]}}}
    assert client.put("/api/admin/tool-policy", json=narrowed, headers=h).status_code == 200
    answer = _call(client, h, run, "web_fetch", url=f"{site}/page")
    assert answer.status_code == 403, answer.text
    assert "domain_not_allowed" in answer.json()["detail"]


def test_an_id_with_a_trailing_newline_breaks_the_schema(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    entry, run = _memory_run(client, h)
    read = _call(client, h, run, "memory_read", id=entry + "\n")
    assert read.status_code == 403, read.text
    assert "arguments_invalid" in read.json()["detail"]
    # Nor is a person asked to approve a call that can never run.
    delete = _call(client, h, run, "memory_delete", id=entry + "\n")
    assert delete.status_code == 403, delete.text


def test_an_allowed_call_is_audited_even_when_its_tool_fails(
    client: TestClient, as_tenant: AsTenant, db: Database
) -> None:
    tenant, h = as_tenant("t")
    _, run = _memory_run(client, h)
    answer = _call(client, h, run, "memory_read", id="00000000-0000-4000-8000-000000000000")
    assert answer.status_code == 404  # allowed by the gate, then the entry is missing
    with db.tenant_transaction(tenant.tenant_id) as tx:
        calls = [
            (e.outcome, e.reason)
            for e in iter_events(tx, tenant_id=tenant.tenant_id)
            if e.action == "tool.call"
        ]
    assert calls == [("success", "granted")]


def test_a_page_with_a_non_text_charset_is_not_a_500(
    client: TestClient, as_tenant: AsTenant, site: str
) -> None:
    _, h = as_tenant("t")
    run = _fetch_run(client, h, ["127.0.0.1"])
    answer = _call(client, h, run, "web_fetch", url=f"{site}/codec")
    assert answer.status_code == 200, answer.text
    assert answer.json()["untrusted"] is True


@pytest.mark.parametrize(
    "document",
    [
        '{"tools":{"web_fetch":{"domains":["docs.example.com\\u0000"]}}}',
        '{"tools":{"web_fetch\\u0000":{}}}',
        '{"tools":{"web_fetch":{"domains":["\\ud800.example.com"]}}}',
    ],
)
@pytest.mark.parametrize("path", ["/api/agents/reader", "/api/admin/tool-policy"])
def test_unstorable_grants_are_a_typed_problem(
    client: TestClient, as_tenant: AsTenant, document: str, path: str
) -> None:
    _, h = as_tenant("t")
    answer = client.put(path, content=document.encode(), headers=_json(h))
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] in ("request_invalid", "tool_grant_invalid")


@pytest.mark.parametrize(
    "document",
    ['{"agent":"helper\\u0000","input":{}}', '{"agent":"helper","input":{"a":"\\u0000"}}'],
)
def test_an_unstorable_run_is_a_typed_problem(
    client: TestClient, as_tenant: AsTenant, document: str
) -> None:
    _, h = as_tenant("t")
    answer = client.post("/api/runs", content=document.encode(), headers=_json(h))
    assert answer.status_code == 422, answer.text


def test_an_unstorable_run_event_is_a_typed_problem(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    run = client.post("/api/runs", json={"agent": "helper", "input": {}}, headers=h).json()["id"]
    document = b'{"type":"note","data":{"a":"\\u0000"}}'
    answer = client.post(f"/api/runs/{run}/events", content=document, headers=_json(h))
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize(
    ("granted", "url"),
    [
        ("xn--bcher-kva.example", "http://xn--bcher-kva.example/"),  # the very same name
        ("*.bücher.example", "http://www.bücher.example/"),
    ],
)
def test_an_idn_grant_matches_its_own_name(granted: str, url: str) -> None:
    registry, _ = builtin_registry("saas")
    grants = parse_grants({"web_fetch": {"domains": [granted]}}, layer="tenant")
    capabilities = freeze(grants, grants, registry)
    decision = decide(
        capabilities, registry, run_id=uuid4(), tool="web_fetch", arguments={"url": url}
    )
    assert decision.rule == "granted"
