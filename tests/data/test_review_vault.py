"""Adversarial review of the vault and BYOK model providers: base_url validation, odd values,
shared-provider grants and what the audit records.

Tests marked `xfail(strict=True)` demonstrate a defect; remove the marker with the fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit import list_events
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import model_providers, secrets
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import ModelProviderMissing
from tenantguard.models.stub import StubProvider
from tenantguard.testing import FakeClock

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
URL = "/api/model-providers"


def ctx_of(tenant_id: UUID) -> TenantContext:
    return TenantContext(tenant_id, Principal("system", "review"), frozenset(), "review")


def put_provider(
    client: TestClient, headers: dict[str, str], body: Mapping[str, object], name: str = "main"
) -> int:
    return client.put(f"{URL}/{name}", json=body, headers=headers).status_code


# -- base_url validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "base_url"),
    [
        ("openai_compatible", "https://api.openai.com@evil.example/v1"),
        ("openai_compatible", "https://api.openai.com:443@evil.example"),
        ("openai_compatible", "https://evil.example\\@api.openai.com"),
        ("openai_compatible", "https://evil.example#@api.openai.com"),
        ("openai_compatible", "https://evil.example/?next=api.openai.com"),
        ("openai_compatible", "javascript://evil.example/%0aalert(1)"),
        ("openai_compatible", "file:///etc/passwd"),
        ("openai_compatible", "//evil.example/v1"),
        ("openai_compatible", "https:evil.example"),
        ("openai_compatible", "https://"),
        ("openai_compatible", "https://:443/v1"),
        ("openai", "HTTP://api.openai.com/v1"),
        ("anthropic", "http://[::1]:8443"),
        ("openai_compatible", "https://llm.example/" + "a" * 2030),
    ],
)
def test_base_url_bypasses_are_refused(
    client: TestClient, as_tenant: AsTenant, kind: str, base_url: str
) -> None:
    """Credentials, queries, fragments, other schemes, missing hosts, plain http for hosted
    kinds and over-long URLs are each a 422."""
    _, h = as_tenant("acme")
    client.put("/api/secrets/key", json={"value": "sk-123"}, headers=h)
    body = {"kind": kind, "base_url": base_url, "secret": "key", "models": ["m"]}
    assert put_provider(client, h, body) == 422
    assert client.get(URL, headers=h).json() == []


@pytest.mark.parametrize(
    ("base_url", "stored"),
    [
        ("https://[::1]:8443/v1/", "https://[::1]:8443/v1"),
        ("http://10.0.0.7:11434", "http://10.0.0.7:11434"),
        ("https://llm.example/" + "a" * 2028, "https://llm.example/" + "a" * 2028),
    ],
    ids=["ipv6 literal", "ipv4 and port", "2048 characters"],
)
def test_well_formed_base_urls_are_kept(
    client: TestClient, as_tenant: AsTenant, base_url: str, stored: str
) -> None:
    """IPv6 literals, ports and URLs up to the 2048-character limit are accepted as given."""
    _, h = as_tenant("acme")
    body = {"kind": "vllm", "base_url": base_url, "models": ["m"]}
    response = client.put(f"{URL}/main", json=body, headers=h)
    assert response.status_code == 200
    assert response.json()["base_url"] == stored


@pytest.mark.parametrize(
    "base_url",
    [
        "http://[::1",
        "https://[llm.example]/v1",
        "https://llm.example\uff20evil.example/v1",
        "https://llm.example\u2100/v1",
        "http://llm.example/\u0000",
    ],
    ids=["unclosed ipv6", "bracketed name", "fullwidth at", "account-of sign", "nul"],
)
def test_malformed_base_url_is_a_422_not_a_500(
    client: TestClient, as_tenant: AsTenant, base_url: str
) -> None:
    """A base_url the URL parser chokes on is refused as invalid input."""
    _, h = as_tenant("acme")
    assert put_provider(client, h, {"kind": "vllm", "base_url": base_url, "models": ["m"]}) == 422


@pytest.mark.parametrize(
    "base_url",
    [
        "https://llm.example/v1\r\nX-Injected: 1",
        "https://llm.exa\tmple/v1",
        " https://llm.example/v1",
        "https://llm.example:notaport/v1",
        "https://llm.example:99999/v1",
        "https://@llm.example/v1",
        "https://:@llm.example/v1",
        "https://llm.example/v1?",
        "https://llm.example/v1#",
    ],
    ids=[
        "crlf",
        "tab in host",
        "leading blank",
        "non-numeric port",
        "port out of range",
        "empty userinfo",
        "empty user and password",
        "empty query",
        "empty fragment",
    ],
)
def test_stored_base_url_is_the_url_that_was_validated(
    client: TestClient, as_tenant: AsTenant, base_url: str
) -> None:
    """A base_url is refused, or stored without control characters, blanks, userinfo, query or
    fragment delimiters, and with a valid port."""
    _, h = as_tenant("acme")
    response = client.put(
        f"{URL}/main", json={"kind": "vllm", "base_url": base_url, "models": ["m"]}, headers=h
    )
    if response.status_code != 422:
        assert response.status_code == 200
        stored = str(response.json()["base_url"])
        assert stored == stored.strip()
        assert not any(ord(c) < 0x21 or ord(c) == 0x7F for c in stored)
        assert not set("@?#") & set(stored)
        assert _port_is_valid(stored)


def _port_is_valid(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        return False
    return True


# -- secret values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"value": "\\u0000nul\\u0000"}', 200),
        (b'{"value": "\\ud800"}', 422),
        (b'{"value": "\\udc00\\ud800"}', 422),
        (b'{"value": ""}', 422),
        (b'{"value": null}', 422),
        (b'{"value": ["a"]}', 422),
        ('{"value": "' + "é" * 32_768 + '"}', 200),
        ('{"value": "' + "é" * 32_768 + 'a"}', 422),
    ],
    ids=["nul", "lone surrogate", "reversed pair", "empty", "null", "list", "64 KiB", "64 KiB+1"],
)
def test_odd_secret_values_are_stored_or_refused_never_a_500(
    client: TestClient, as_tenant: AsTenant, raw: bytes | str, status: int
) -> None:
    """Values the JSON layer or the size limit refuses are 422s; everything else round-trips."""
    _, h = as_tenant("acme")
    data = raw.encode() if isinstance(raw, str) else raw
    response = client.put(
        "/api/secrets/odd", content=data, headers={**h, "Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert "value" not in response.json() or status == 422


def test_nul_and_multibyte_values_read_back_byte_for_byte(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """What the API took in is exactly what the server-side read returns."""
    tenant, h = as_tenant("acme")
    value = "\u0000sk-\u00e9\U0001f511\u0000"
    assert client.put("/api/secrets/odd", json={"value": value}, headers=h).status_code == 200
    with db.tenant_transaction(tenant.tenant_id) as tx:
        read = secrets.read(tx, ctx_of(tenant.tenant_id), keyring, "odd", use="t", now=clock.now())
    assert read == value.encode("utf-8")


# -- resolution and its audit --------------------------------------------------------------------


@pytest.fixture
def shared_pair(db: Database, clock: FakeClock) -> Iterator[tuple[str, str, str]]:
    """Two platform providers serving one model nobody else serves: (model, first, second)."""
    suffix = uuid4().hex[:10]
    model, names = f"review-model-{suffix}", (f"review-a-{suffix}", f"review-b-{suffix}")
    platform = ctx_of(PLATFORM_TENANT_ID)
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        for name in names:
            model_providers.put(
                tx,
                platform,
                name,
                kind="vllm",
                base_url="http://llm.example:8000",
                secret_name=None,
                models=[model],
                now=clock.now(),
            )
    yield model, *names
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        for name in names:
            model_providers.delete(tx, platform, name, now=clock.now())


def test_a_granted_shared_provider_is_not_shadowed_by_an_ungranted_one(
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    make_tenant: Callable[[str], NewTenant],
    shared_pair: tuple[str, str, str],
) -> None:
    """A tenant granted one of two shared providers serving a model resolves to that one."""
    model, _, granted = shared_pair
    tenant = make_tenant("granted")
    ctx = ctx_of(tenant.tenant_id)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        model_providers.grant_shared(
            tx, ctx, granted, reason="review", granted_by="operator", now=clock.now()
        )
    resolved = model_providers.resolve(db, ctx, keyring, model, now=clock.now())
    assert (resolved.provider, resolved.shared) == (granted, True)


def test_an_ungranted_shared_provider_stays_unusable_when_another_is_granted(
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    make_tenant: Callable[[str], NewTenant],
    shared_pair: tuple[str, str, str],
) -> None:
    """A grant of one shared provider never lets the tenant reach a different one."""
    model, ungranted, granted = shared_pair
    tenant = make_tenant("granted")
    ctx = ctx_of(tenant.tenant_id)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        model_providers.grant_shared(
            tx, ctx, granted, reason="review", granted_by="operator", now=clock.now()
        )
    try:
        resolved = model_providers.resolve(db, ctx, keyring, model, now=clock.now())
    except ModelProviderMissing:
        return
    assert resolved.provider != ungranted


def test_a_call_to_an_own_keyless_provider_is_audited_with_its_name(
    client: TestClient, as_tenant: AsTenant, db: Database, stub: StubProvider
) -> None:
    """A provider without a key reads nothing from the vault; the call's own event says
    which provider served it (no key version)."""
    tenant, h = as_tenant("acme")
    body = {"kind": "ollama", "base_url": stub.base_url + "/v1", "models": ["llama3"]}
    assert put_provider(client, h, body, name="local") == 200
    message = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=message, headers=h).status_code == 200
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list_events(tx, tenant_id=tenant.tenant_id, limit=1000)
    (call,) = [json.loads(e.payload) for e in events if e.action == "model.call"]
    assert (call["provider"], call["key_version"]) == ("local", None)
    assert not [e for e in events if e.action == "secret.read"]


def test_provider_audit_names_the_secret_it_uses(
    client: TestClient, as_tenant: AsTenant, db: Database
) -> None:
    """The audit of a provider change says which vault secret the provider now uses (a name,
    not a value)."""
    tenant, h = as_tenant("acme")
    client.put("/api/secrets/openai-key", json={"value": "sk-live-review"}, headers=h)
    body = {"kind": "openai", "secret": "openai-key", "models": ["gpt-4o"]}
    assert put_provider(client, h, body) == 200
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list_events(tx, tenant_id=tenant.tenant_id, limit=1000)
    put = [e for e in events if e.action == "model_provider.put"]
    assert len(put) == 1
    assert "sk-live-review" not in put[0].payload
    assert '"openai-key"' in put[0].payload
