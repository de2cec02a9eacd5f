"""A tenant whose own provider is the local stub (`stub`, a fixture of tests/conftest.py: a
real HTTP server on loopback)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.models.stub import StubProvider

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
MODEL = "stub-model"
PROVIDER_KEY = "sk-tenant-own-provider-key"


def configure(
    client: TestClient, h: dict[str, str], stub: StubProvider, *, kind: str = "openai_compatible"
) -> None:
    """The tenant's provider: the stub, with the tenant's own key in its vault."""
    assert (
        client.put("/api/secrets/llm-key", json={"value": PROVIDER_KEY}, headers=h).status_code
        == 200
    )
    base = stub.base_url + ("/v1" if kind != "anthropic_compatible" else "")
    answer = client.put(
        "/api/model-providers/stub",
        json={"kind": kind, "base_url": base, "secret": "llm-key", "models": [MODEL]},
        headers=h,
    )
    assert answer.status_code == 200, answer.text


def chat(client: TestClient, h: dict[str, str], text: str, **extra: Any) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    return client.post("/v1/chat/completions", json=body, headers=h)


def streamed(answer: Any) -> tuple[str, list[dict[str, Any]]]:
    """The text of an OpenAI event stream and its chunks; it must end with [DONE]."""
    data = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]", answer.text
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
    return text, chunks
