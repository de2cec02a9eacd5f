"""Model providers: validation, strict BYOK resolution, and shared providers only by grant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit import list_events
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import model_providers, secrets
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import DecryptionFailed, ModelProviderMissing
from tenantguard.testing import FakeClock

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
URL = "/api/model-providers"


def ctx_of(tenant_id: object) -> TenantContext:
    return TenantContext(tenant_id, Principal("system", "router"), frozenset(), "providers")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"kind": "openai", "models": ["m"]}, "hosted kinds need a key"),
        ({"kind": "openai", "secret": "missing", "models": ["m"]}, "the secret must exist"),
        (
            {
                "kind": "openai",
                "secret": "key",
                "base_url": "http://api.openai.com/v1",
                "models": ["m"],
            },
            "hosted kinds use https",
        ),
        (
            {
                "kind": "openai_compatible",
                "secret": "key",
                "base_url": "https://u:p@llm.example",
                "models": ["m"],
            },
            "no credentials in URLs",
        ),
        ({"kind": "vllm", "models": ["m"]}, "self-hosted kinds need a base_url"),
        ({"kind": "vllm", "base_url": "ftp://llm.example", "models": ["m"]}, "http(s) only"),
        ({"kind": "skynet", "secret": "key", "models": ["m"]}, "unknown kinds are refused"),
        ({"kind": "openai", "secret": "key", "models": []}, "at least one model"),
    ],
)
def test_invalid_providers_are_refused(
    client: TestClient, as_tenant: AsTenant, body: dict[str, object], why: str
) -> None:
    _, h = as_tenant("acme")
    client.put("/api/secrets/key", json={"value": "sk-123"}, headers=h)
    response = client.put(f"{URL}/main", json=body, headers=h)
    assert response.status_code == 422, why
    assert client.get(URL, headers=h).json() == []


def test_provider_round_trip_shows_no_key(client: TestClient, as_tenant: AsTenant) -> None:
    """The provider names its secret; no response ever carries the key."""
    _, h = as_tenant("acme")
    client.put("/api/secrets/openai-key", json={"value": "sk-live-abc123"}, headers=h)
    put = client.put(
        f"{URL}/main",
        json={"kind": "openai", "secret": "openai-key", "models": ["gpt-4o", "gpt-4o"]},
        headers=h,
    )
    assert put.status_code == 200
    assert put.json()["base_url"] == "https://api.openai.com/v1"
    assert put.json()["models"] == ["gpt-4o"]
    listed = client.get(URL, headers=h)
    assert [p["name"] for p in listed.json()] == ["main"]
    assert "sk-live-abc123" not in put.text + listed.text
    assert client.delete(f"{URL}/main", headers=h).status_code == 204
    assert client.get(f"{URL}/main", headers=h).status_code == 404


def test_resolution_uses_the_tenants_own_key(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    tenant, h = as_tenant("acme")
    client.put("/api/secrets/openai-key", json={"value": "sk-acme"}, headers=h)
    client.put(
        f"{URL}/main",
        json={"kind": "openai", "secret": "openai-key", "models": ["gpt-4o"]},
        headers=h,
    )
    resolved = model_providers.resolve(
        db, ctx_of(tenant.tenant_id), keyring, "gpt-4o", now=clock.now()
    )
    assert (resolved.provider, resolved.shared, resolved.key_version) == ("main", False, 1)
    assert resolved.api_key is not None
    assert resolved.api_key.get_secret_value() == "sk-acme"
    with db.tenant_transaction(tenant.tenant_id) as tx:
        read = list_events(tx, tenant_id=tenant.tenant_id)[-1]
    assert (read.action, read.target_id) == ("secret.read", "openai-key")
    assert '"use":"model:main"' in read.payload


def _reads(db: Database, tenant_id: object) -> list[str]:
    with db.tenant_transaction(tenant_id) as tx:  # type: ignore[arg-type]
        events = list_events(tx, tenant_id=tenant_id)  # type: ignore[arg-type]
    return [e.payload for e in events if e.action == "secret.read"]


def test_recent_reads_audit_a_hot_key_once_a_minute_and_every_new_version(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """With `RecentReads`, the first read of a (secret, version, use) is audited, repeats
    within its window are not, and a new version, the window's end or a shredded key are
    never served from it."""
    tenant, h = as_tenant("acme")
    client.put("/api/secrets/openai-key", json={"value": "sk-one"}, headers=h)
    client.put(
        f"{URL}/main",
        json={"kind": "openai", "secret": "openai-key", "models": ["gpt-4o"]},
        headers=h,
    )
    ticks = [0.0]
    recent = secrets.RecentReads(seconds=60, monotonic=lambda: ticks[0])
    ctx = ctx_of(tenant.tenant_id)

    def key() -> str:
        found = model_providers.resolve(db, ctx, keyring, "gpt-4o", now=clock.now(), recent=recent)
        assert found.api_key is not None
        return found.api_key.get_secret_value()

    assert [key(), key(), key()] == ["sk-one"] * 3
    assert len(_reads(db, tenant.tenant_id)) == 1
    client.put("/api/secrets/openai-key", json={"value": "sk-two"}, headers=h)
    assert [key(), key()] == ["sk-two"] * 2  # a new version: read afresh, audited once
    assert len(_reads(db, tenant.tenant_id)) == 2
    assert '"version":2' in _reads(db, tenant.tenant_id)[-1]
    ticks[0] = 61.0
    assert key() == "sk-two"
    assert len(_reads(db, tenant.tenant_id)) == 3  # the window ended
    with db.tenant_transaction(tenant.tenant_id) as tx:
        keyring.destroy_all(tx, ctx)
    with pytest.raises(DecryptionFailed):  # a shredded key stops a recent read too
        key()


def test_a_rolled_back_read_is_not_remembered(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """The vault never remembers a read itself: the caller marks it once its transaction has
    committed, so the audit of a read that rolled back is not taken for done."""
    tenant, h = as_tenant("acme")
    client.put("/api/secrets/k", json={"value": "sk-one"}, headers=h)
    recent = secrets.RecentReads()
    ctx = ctx_of(tenant.tenant_id)
    held: list[secrets.Unsealed] = []

    def fail_after_the_read() -> None:
        with db.tenant_transaction(tenant.tenant_id) as tx:
            read = secrets.read_current(
                tx, ctx, keyring, "k", use="t", now=clock.now(), recent=recent
            )
            held.append(read)
            raise RuntimeError("the caller fails before the commit")

    with pytest.raises(RuntimeError):
        fail_after_the_read()
    assert held[0].audited is not None
    assert not recent.fresh(held[0].audited)
    assert _reads(db, tenant.tenant_id) == []  # rolled back with its transaction
    with db.tenant_transaction(tenant.tenant_id) as tx:
        again = secrets.read_current(tx, ctx, keyring, "k", use="t", now=clock.now(), recent=recent)
    recent.mark(again.audited)
    assert again.audited is not None
    assert recent.fresh(again.audited)
    assert len(_reads(db, tenant.tenant_id)) == 1


def test_no_provider_is_a_typed_refusal_never_a_shared_pool(
    make_tenant: Callable[[str], NewTenant], db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    """A shared provider that serves the model is still not used without a grant."""
    tenant = make_tenant("no-provider")
    platform = ctx_of(PLATFORM_TENANT_ID)
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keyring.destroy_all(tx, platform)  # the platform realm outlives tests and their KEKs
        secrets.write(tx, platform, keyring, "pool-key", b"sk-pool", now=clock.now())
        model_providers.put(
            tx,
            platform,
            "pool",
            kind="openai",
            base_url=None,
            secret_name="pool-key",
            models=["shared-model"],
            now=clock.now(),
        )
    ctx = ctx_of(tenant.tenant_id)
    with pytest.raises(ModelProviderMissing):
        model_providers.resolve(db, ctx, keyring, "shared-model", now=clock.now())
    with db.tenant_transaction(tenant.tenant_id) as tx:
        model_providers.grant_shared(
            tx, ctx, "pool", reason="trial month", granted_by="operator", now=clock.now()
        )
    resolved = model_providers.resolve(db, ctx, keyring, "shared-model", now=clock.now())
    assert (resolved.provider, resolved.shared) == ("pool", True)
    assert resolved.api_key is not None
    assert resolved.api_key.get_secret_value() == "sk-pool"
    clock.advance(timedelta(seconds=1))
    with db.tenant_transaction(tenant.tenant_id) as tx:
        model_providers.revoke_shared(tx, ctx, "pool", now=clock.now())
    with pytest.raises(ModelProviderMissing):
        model_providers.resolve(db, ctx, keyring, "shared-model", now=clock.now())
    with db.tenant_transaction(tenant.tenant_id) as tx:
        trail = [(e.action, e.outcome) for e in list_events(tx, tenant_id=tenant.tenant_id)]
    assert trail[-5:] == [
        ("model.resolve", "denied"),
        ("model_provider.grant_shared", "success"),
        ("model.resolve", "success"),
        ("model_provider.revoke_shared", "success"),
        ("model.resolve", "denied"),
    ]
