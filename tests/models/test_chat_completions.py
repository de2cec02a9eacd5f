"""The model gateway against a local provider stub: OpenAI's and Anthropic's shapes, streaming
and not; the tenant's own key and provider; the PII sentinel on the prompt and tokens restored
on the completion; usage counted into quotas; audit with hashes, never text."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.gateway import create_app
from tenantguard.models.stub import StubProvider
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tests.models.conftest import MODEL, PROVIDER_KEY, AsTenant, chat, configure, streamed
from tests.support import bearer


def _events(db: Database, tenant_id: Any, action: str) -> list[Any]:
    with db.tenant_transaction(tenant_id) as tx:
        return [e for e in iter_events(tx, tenant_id=tenant_id) if e.action == action]


@pytest.mark.parametrize("kind", ["openai_compatible", "anthropic_compatible"])
def test_a_completion_through_the_tenants_own_provider(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider, db: Database, kind: str
) -> None:
    tenant, h = as_tenant("t")
    configure(client, h, stub, kind=kind)
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"},
        ],
        "max_tokens": 50,
    }
    answer = client.post("/v1/chat/completions", json=body, headers=h)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + 3
    (received,) = stub.received
    if kind == "anthropic_compatible":
        assert received.path == "/v1/messages"
        assert received.headers["x-api-key"] == PROVIDER_KEY
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert received.body["system"] == "Be brief."
        assert received.body["messages"] == [{"role": "user", "content": "hello there"}]
    else:
        assert received.path == "/v1/chat/completions"
        assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    (event,) = _events(db, tenant.tenant_id, "model.call")
    payload = json.loads(event.payload)
    assert event.outcome == "success"
    assert payload["completion_sha256"] == hashlib.sha256(b"echo: hello there").hexdigest()
    assert "hello" not in event.payload  # hashes, never the text


@pytest.mark.parametrize("kind", ["openai_compatible", "anthropic_compatible"])
def test_a_stream_in_openai_chunks_with_usage_and_both_audits(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider, db: Database, kind: str
) -> None:
    tenant, h = as_tenant("t")
    configure(client, h, stub, kind=kind)
    answer = chat(
        client, h, "stream me please", stream=True, stream_options={"include_usage": True}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    text, chunks = streamed(answer)
    assert text == "echo: stream me please"
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert [e.outcome for e in _events(db, tenant.tenant_id, "model.stream")] == ["success"]
    (end,) = _events(db, tenant.tenant_id, "model.call")
    assert json.loads(end.payload)["tokens"]["completion_tokens"] == 4


def test_each_call_names_its_key_and_a_new_key_is_used_and_audited_at_once(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider, db: Database
) -> None:
    """The vault audits the provider key's read once a minute per process, not every call;
    every call's own event names the provider and the key version it used, and a rotated key
    is read (and audited) on the very next call."""
    tenant, h = as_tenant("t")
    configure(client, h, stub)
    for _ in range(3):
        assert chat(client, h, "hello").status_code == 200
    assert client.put("/api/secrets/llm-key", json={"value": "sk-rotated"}, headers=h).is_success
    assert chat(client, h, "hello").status_code == 200
    keys = [r.headers["Authorization"] for r in stub.received]
    assert keys == [f"Bearer {PROVIDER_KEY}"] * 3 + ["Bearer sk-rotated"]
    reads = [json.loads(e.payload) for e in _events(db, tenant.tenant_id, "secret.read")]
    assert reads == [{"use": "model:stub", "version": 1}, {"use": "model:stub", "version": 2}]
    calls = [json.loads(e.payload) for e in _events(db, tenant.tenant_id, "model.call")]
    assert [(c["provider"], c["key_version"]) for c in calls] == [("stub", 1)] * 3 + [("stub", 2)]


def test_a_tenant_without_a_provider_gets_a_typed_problem_and_no_shared_pool(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    _, bare = as_tenant("u")  # has no provider at all
    answer = chat(client, bare, "hello")
    assert answer.status_code == 409
    assert answer.json()["code"] == "model_provider_missing"
    assert stub.received == []  # the other tenant's provider was never used


def test_the_prompt_is_redacted_and_tokens_come_back_only_for_reidentify(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    policy = {"modes": {"email": {"prompt": "reversible"}}}
    assert client.put("/api/admin/pii-policy", json=policy, headers=h).status_code == 200
    made = client.post(
        "/api/api-keys", json={"name": "k", "capabilities": ["models:call"]}, headers=h
    )
    plain = bearer(made.json()["secret"])
    for stream in (False, True):
        answer = chat(client, h, "mail ada@acme.example today", stream=stream)
        text = streamed(answer)[0] if stream else answer.json()["choices"][0]["message"]["content"]
        assert text == "echo: mail ada@acme.example today"  # restored: the admin key may
        sent = stub.received[-1].body["messages"][0]["content"]
        assert "ada@acme.example" not in sent
        assert "_REV_" in sent
        without = chat(client, plain, "mail ada@acme.example today", stream=stream)
        kept = (
            streamed(without)[0] if stream else without.json()["choices"][0]["message"]["content"]
        )
        assert "ada@acme.example" not in kept  # no pii:reidentify: the token stays


def test_strict_redaction_by_default(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    answer = chat(client, h, "my card is 4111 1111 1111 1111")
    assert answer.status_code == 200
    assert "4111" not in json.dumps(stub.received[-1].body)
    assert "4111" not in answer.text


def test_a_failing_provider_is_a_502_audited(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider, db: Database
) -> None:
    tenant, h = as_tenant("t")
    configure(client, h, stub)
    stub.fail_with = 500
    answer = chat(client, h, "hello")
    assert answer.status_code == 502
    assert answer.json()["code"] == "provider_failed"
    assert "stub failure" not in answer.text  # the provider's text never leaks
    (event,) = _events(db, tenant.tenant_id, "model.call")
    assert (event.outcome, event.reason) == ("failure", "provider_status:500")


@pytest.mark.parametrize(
    "extra",
    [{"n": 2}, {"unknown_field": 1}, {"temperature": 3}, {"stop": ["a"] * 5}],
)
def test_requests_we_cannot_honour_are_refused_before_anything_leaves(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider, extra: dict[str, Any]
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    answer = chat(client, h, "hello", **extra)
    assert answer.status_code == 422
    assert stub.received == []


def test_tokens_count_into_quotas_and_a_run_budget_stops_the_run(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    limit = {"metric": "tokens", "scope": "run", "per": "run", "limit": 8}
    assert client.put("/api/admin/quotas", json={"limits": [limit]}, headers=h).status_code == 200
    run = client.post("/api/runs", json={"agent": "writer"}, headers=h).json()["id"]
    in_run = {**h, "X-Tenantguard-Run": run}
    first = chat(client, in_run, "one two three")  # 3 + 4 tokens
    assert first.status_code == 200
    assert client.get(f"/api/runs/{run}", headers=h).json()["status"] == "created"
    second = chat(client, in_run, "four")  # 1 + 2: over the budget, charged: the run stops
    assert second.status_code == 200
    stopped = client.get(f"/api/runs/{run}", headers=h).json()
    assert (stopped["status"], stopped["stopped_reason"]) == ("stopped", "budget_exhausted:tokens")
    sent = len(stub.received)
    after = chat(client, in_run, "five")
    assert after.status_code == 409
    assert after.json()["code"] == "run_stopped"
    assert len(stub.received) == sent  # refused before the provider
    assert chat(client, h, "outside any run").status_code == 200


def test_an_exhausted_tenant_quota_refuses_before_the_provider(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    limit = {"metric": "tokens", "scope": "tenant", "per": "day", "limit": 5}
    assert client.put("/api/admin/quotas", json={"limits": [limit]}, headers=h).status_code == 200
    assert chat(client, h, "one two three").status_code == 200  # 7 tokens: over, charged
    refused = chat(client, h, "again")
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert int(refused.headers["retry-after"]) > 0
    assert len(stub.received) == 1
    usage = client.get("/api/admin/quotas", headers=h).json()["usage"]
    assert usage[0]["used"] == 7


def test_a_spend_limit_needs_a_price(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    limit = {"metric": "spend", "scope": "tenant", "per": "month", "limit": 1_000_000}
    assert client.put("/api/admin/quotas", json={"limits": [limit]}, headers=h).status_code == 200
    answer = chat(client, h, "hello")
    assert answer.status_code == 409
    assert answer.json()["code"] == "model_price_unknown"
    assert stub.received == []


def test_a_key_bound_to_another_agent_cannot_bill_a_run(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider
) -> None:
    _, h = as_tenant("t")
    configure(client, h, stub)
    for name in ("writer", "other"):
        assert client.put(f"/api/agents/{name}", json={"tools": {}}, headers=h).status_code == 200
    run = client.post("/api/runs", json={"agent": "writer"}, headers=h).json()["id"]
    made = client.post(
        "/api/api-keys",
        json={"name": "k", "capabilities": ["models:call"], "agent": "other"},
        headers=h,
    )
    other = {**bearer(made.json()["secret"]), "X-Tenantguard-Run": run}
    assert chat(client, other, "hello").status_code == 404
    assert stub.received == []


def test_spend_is_charged_by_the_price_table(
    settings: Settings,
    db: Database,
    clock: FakeClock,
    keyring: Keyring,
    make_tenant: Callable[[str], NewTenant],
    stub: StubProvider,
) -> None:
    priced = settings.model_copy(
        update={"model_prices": {MODEL: {"input": 1.5, "output": 2}}}  # USD per 1M tokens
    )
    tenant = make_tenant("t")
    h = bearer(tenant.admin_key.secret)
    app = create_app(priced, database=db, clock=clock, keyring=keyring)
    with TestClient(app, raise_server_exceptions=False) as client:
        configure(client, h, stub)
        limit = {"metric": "spend", "scope": "tenant", "per": "month", "limit": 20}  # micro-USD
        assert (
            client.put("/api/admin/quotas", json={"limits": [limit]}, headers=h).status_code == 200
        )
        assert chat(client, h, "one two three").status_code == 200  # 3 x 1.5 + 4 x 2 = 12.5
        used = client.get("/api/admin/quotas", headers=h).json()["usage"][0]["used"]
        assert used == 13  # rounded up, never under-charged
        assert chat(client, h, "four").status_code == 200  # 1.5 + 4 = 5.5 -> 6: 19 of 20
        assert chat(client, h, "five").status_code == 200  # 19 + 6 = 25: over, charged
        refused = chat(client, h, "six")
        assert refused.status_code == 429
        assert refused.json()["code"] == "quota_exceeded"


def test_a_private_endpoint_needs_the_tenants_egress_grant(
    client: TestClient, as_tenant: AsTenant, db: Database
) -> None:
    """An Ollama on a private address is refused by the egress guard (before any connection)
    until the host grants that network to the tenant; the refusal is audited."""
    tenant, h = as_tenant("t")
    assert client.put("/api/secrets/llm-key", json={"value": "x"}, headers=h).status_code == 200
    provider = {
        "kind": "ollama",
        "base_url": "http://10.255.255.1:11434/v1",
        "secret": "llm-key",
        "models": [MODEL],
    }
    assert client.put("/api/model-providers/ollama", json=provider, headers=h).status_code == 200
    refused = chat(client, h, "hello")
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "egress_denied"
    (event,) = _events(db, tenant.tenant_id, "model.call")
    assert (event.outcome, event.reason) == ("denied", "egress:private_address")


def test_a_keyed_completion_streamed_or_not_reaches_the_provider_once(
    client: TestClient, as_tenant: AsTenant, stub: StubProvider, db: Database
) -> None:
    """A client that retries a model call with its Idempotency-Key is not charged twice: the
    repeat is the kept answer, the whole stream included, and the provider sees one call."""
    tenant, h = as_tenant("t")
    configure(client, h, stub)
    for stream in (False, True):
        keyed = {**h, "Idempotency-Key": f"call-{stream}"}
        first = chat(client, keyed, "only once", stream=stream)
        again = chat(client, keyed, "only once", stream=stream)
        assert first.status_code == again.status_code == 200, first.text
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"] == first.headers["content-type"]
    assert len(stub.received) == 2
    assert len(_events(db, tenant.tenant_id, "model.call")) == 2
