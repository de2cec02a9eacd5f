"""Quotas through the gateway: rate limits answer 429 with Retry-After, per credential, agent
and tenant; a day's quota renews at midnight UTC; a run's budget stops the run; the platform's
limits hold whatever a tenant sets; setting limits is a sensitive action; both stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tenantguard.audit.store import iter_events
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import BudgetExhausted
from tenantguard.gateway import create_app
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tenantguard.quotas.stores import QuotaStoreUnavailable
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tests.quotas.conftest import REDIS_URL
from tests.support import bearer

MakeTenant = Callable[[str], NewTenant]
GRANTS: dict[str, Any] = {"tools": {"memory_read": {}, "memory_delete": {}}}


@pytest.fixture(params=["postgres", "redis"])
def quota_client(
    request: pytest.FixtureRequest,
    settings: Settings,
    db: Database,
    clock: FakeClock,
    keyring: Keyring,
) -> Iterator[TestClient]:
    chosen = settings.model_copy(
        update={"quota_store": request.param, "redis_url": SecretStr(REDIS_URL)}
    )
    app = create_app(chosen, database=db, clock=clock, keyring=keyring)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _limits(client: TestClient, h: dict[str, str], *limits: dict[str, Any]) -> Any:
    answer = client.put("/api/admin/quotas", json={"limits": list(limits)}, headers=h)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _key(client: TestClient, h: dict[str, str], caps: list[str], **extra: Any) -> dict[str, str]:
    made = client.post(
        "/api/api-keys", json={"name": "k", "capabilities": caps, **extra}, headers=h
    )
    assert made.status_code == 201, made.text
    return bearer(made.json()["secret"])


def test_a_rate_limit_answers_429_with_retry_after_per_credential(
    quota_client: TestClient, make_tenant: MakeTenant, clock: FakeClock
) -> None:
    client = quota_client
    tenant = make_tenant("t")
    admin = bearer(tenant.admin_key.secret)
    _limits(
        client, admin, {"metric": "requests", "scope": "credential", "per": "minute", "limit": 3}
    )
    reader = _key(client, admin, ["memory:read"])
    assert [client.get("/api/memory", headers=reader).status_code for _ in range(3)] == [200] * 3
    refused = client.get("/api/memory", headers=reader)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "20"  # one request every 20 s
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["content-type"].startswith("application/problem+json")
    # Another credential of the tenant counts apart; time refills the first.
    other = _key(client, admin, ["memory:read"])
    assert client.get("/api/memory", headers=other).status_code == 200
    clock.advance(timedelta(seconds=20))
    assert client.get("/api/memory", headers=reader).status_code == 200
    assert client.get("/api/memory", headers=reader).status_code == 429


def test_a_tenant_wide_limit_counts_every_credential_and_shows_its_use(
    quota_client: TestClient, make_tenant: MakeTenant, clock: FakeClock
) -> None:
    client = quota_client
    tenant, stranger = make_tenant("t"), make_tenant("u")
    admin = bearer(tenant.admin_key.secret)
    limit = {"metric": "requests", "scope": "tenant", "per": "day", "limit": 6}
    assert _limits(client, admin, limit)["usage"][0]["used"] == 0  # counted before it existed
    reader = _key(client, admin, ["memory:read"])  # 1
    for _ in range(3):  # 2, 3, 4
        assert client.get("/api/memory", headers=reader).status_code == 200
    # The quota routes are not counted against the tenant's own limits (it can always lift
    # them), so reading the use does not use any.
    shown = client.get("/api/admin/quotas", headers=admin).json()
    assert shown["usage"] == [{**limit, "used": 4, "source": "tenant"}]
    for _ in range(2):  # 5, 6: the last ones
        assert client.get("/api/memory", headers=admin).status_code == 200
    refused = client.get("/api/memory", headers=admin)
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    now = clock.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert int(refused.headers["retry-after"]) == int((midnight - now).total_seconds())
    # Another tenant is untouched; the next day the quota is back.
    assert client.get("/api/memory", headers=bearer(stranger.admin_key.secret)).status_code == 200
    clock.advance(midnight - now)
    assert client.get("/api/memory", headers=admin).status_code == 200


def test_the_platforms_limits_hold_whatever_a_tenant_sets(
    settings: Settings, db: Database, clock: FakeClock, keyring: Keyring, make_tenant: MakeTenant
) -> None:
    strict = settings.model_copy(
        update={
            "platform_limits": {
                "limits": [{"metric": "requests", "scope": "tenant", "per": "minute", "limit": 3}]
            }
        }
    )
    app = create_app(strict, database=db, clock=clock, keyring=keyring)
    tenant = make_tenant("t")
    admin = bearer(tenant.admin_key.secret)
    with TestClient(app, raise_server_exceptions=False) as client:
        generous = {"metric": "requests", "scope": "tenant", "per": "minute", "limit": 10**6}
        _limits(client, admin, generous)
        shown = client.get("/api/admin/quotas", headers=admin).json()
        assert shown["platform"] == strict.platform_limits["limits"]
        assert client.get("/api/memory", headers=admin).status_code == 200
        assert client.get("/api/memory", headers=admin).status_code == 429


def test_a_days_tool_call_quota_per_agent_is_audited_and_keeps_the_approval(
    quota_client: TestClient,
    make_tenant: MakeTenant,
    db: Database,
    sign_in: Callable[..., tuple[users.User, Issued]],
) -> None:
    client = quota_client
    tenant = make_tenant("t")
    admin = bearer(tenant.admin_key.secret)
    assert client.put("/api/admin/tool-policy", json=GRANTS, headers=admin).status_code == 200
    for name in ("helper", "other"):
        assert client.put(f"/api/agents/{name}", json=GRANTS, headers=admin).status_code == 200
    _limits(
        client,
        admin,
        {"metric": "tool_calls", "scope": "agent", "per": "day", "limit": 2, "agent": "helper"},
    )
    entry = client.post("/api/memory", json={"key": "k", "content": "c"}, headers=admin).json()[
        "id"
    ]
    run = client.post("/api/runs", json={"agent": "helper"}, headers=admin).json()["id"]
    other_run = client.post("/api/runs", json={"agent": "other"}, headers=admin).json()["id"]
    read = {"tool": "memory_read", "arguments": {"id": entry}}
    # A pending approval is requested (not counted: nothing ran) and approved by a person.
    delete = {"tool": "memory_delete", "arguments": {"id": entry}}
    pending = client.post(f"/api/runs/{run}/tool-calls", json=delete, headers=admin)
    assert pending.status_code == 202
    _, login = sign_in(tenant, "owner")
    approved = client.post(
        f"/api/approvals/{pending.json()['approval_id']}/approve",
        headers=bearer(login.access_token),
    )
    assert approved.status_code == 200, approved.text
    for _ in range(2):
        assert (
            client.post(f"/api/runs/{run}/tool-calls", json=read, headers=admin).status_code == 200
        )
    refused = client.post(f"/api/runs/{run}/tool-calls", json=delete, headers=admin)
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert int(refused.headers["retry-after"]) > 0
    # The approval was not spent by the refused call; another agent's runs are not counted.
    approvals = client.get("/api/approvals?status=approved", headers=admin).json()
    assert [a["id"] for a in approvals] == [pending.json()["approval_id"]]
    assert (
        client.post(f"/api/runs/{other_run}/tool-calls", json=read, headers=admin).status_code
        == 200
    )
    with db.tenant_transaction(tenant.tenant_id) as tx:
        calls = [
            (e.outcome, e.reason)
            for e in iter_events(tx, tenant_id=tenant.tenant_id)
            if e.action == "tool.call"
        ]
    assert ("denied", "quota_exceeded") in calls


def test_a_runs_budget_stops_the_run(
    quota_client: TestClient, make_tenant: MakeTenant, db: Database
) -> None:
    client = quota_client
    tenant = make_tenant("t")
    admin = bearer(tenant.admin_key.secret)
    assert client.put("/api/admin/tool-policy", json=GRANTS, headers=admin).status_code == 200
    assert client.put("/api/agents/helper", json=GRANTS, headers=admin).status_code == 200
    _limits(client, admin, {"metric": "tool_calls", "scope": "run", "per": "run", "limit": 2})
    entry = client.post("/api/memory", json={"key": "k", "content": "c"}, headers=admin).json()[
        "id"
    ]
    run = client.post("/api/runs", json={"agent": "helper"}, headers=admin).json()["id"]
    read = {"tool": "memory_read", "arguments": {"id": entry}}
    assert client.post(f"/api/runs/{run}/tool-calls", json=read, headers=admin).status_code == 200
    assert client.get(f"/api/runs/{run}", headers=admin).json()["status"] == "created"
    assert client.post(f"/api/runs/{run}/tool-calls", json=read, headers=admin).status_code == 200
    stopped = client.get(f"/api/runs/{run}", headers=admin).json()
    assert stopped["status"] == "stopped"  # the budget is used up: the run stops at once
    assert stopped["stopped_reason"] == "budget_exhausted:tool_calls"
    after = client.post(f"/api/runs/{run}/tool-calls", json=read, headers=admin)
    assert after.status_code == 409
    assert after.json()["code"] == "run_stopped"
    event = client.post(f"/api/runs/{run}/events", json={"type": "note", "data": {}}, headers=admin)
    assert event.status_code == 409
    fresh = client.post("/api/runs", json={"agent": "helper"}, headers=admin).json()["id"]
    assert client.post(f"/api/runs/{fresh}/tool-calls", json=read, headers=admin).status_code == 200
    with db.tenant_transaction(tenant.tenant_id) as tx:
        actions = [e.action for e in iter_events(tx, tenant_id=tenant.tenant_id)]
    assert actions.count("run.stop") == 1


def test_a_zero_budget_refuses_the_first_call_and_stops_the_run(
    quota_client: TestClient, make_tenant: MakeTenant
) -> None:
    client = quota_client
    tenant = make_tenant("t")
    admin = bearer(tenant.admin_key.secret)
    assert client.put("/api/admin/tool-policy", json=GRANTS, headers=admin).status_code == 200
    assert client.put("/api/agents/helper", json=GRANTS, headers=admin).status_code == 200
    _limits(client, admin, {"metric": "tool_calls", "scope": "run", "per": "run", "limit": 0})
    run = client.post("/api/runs", json={"agent": "helper"}, headers=admin).json()["id"]
    read = {"tool": "memory_read", "arguments": {"id": "00000000-0000-4000-8000-000000000000"}}
    refused = client.post(f"/api/runs/{run}/tool-calls", json=read, headers=admin)
    assert refused.status_code == 429
    assert refused.json()["code"] == BudgetExhausted.code
    assert "retry-after" not in refused.headers  # waiting does not help
    assert client.get(f"/api/runs/{run}", headers=admin).json()["status"] == "stopped"


def test_setting_limits_is_sensitive_and_checked(
    client: TestClient, make_tenant: MakeTenant, sign_in: Callable[..., tuple[users.User, Issued]]
) -> None:
    tenant = make_tenant("t")
    admin = bearer(tenant.admin_key.secret)
    body = {"limits": [{"metric": "tool_calls", "scope": "run", "per": "run", "limit": 5}]}
    _, stale = sign_in(tenant, "owner", amr=("email",))
    assert (
        client.put("/api/admin/quotas", json=body, headers=bearer(stale.access_token)).status_code
        == 401
    )
    _, member = sign_in(tenant, "member")
    assert (
        client.put("/api/admin/quotas", json=body, headers=bearer(member.access_token)).status_code
        == 403
    )
    agent_key = _key(client, admin, ["runs:write", "tools:call", "quotas:read"])
    assert client.put("/api/admin/quotas", json=body, headers=agent_key).status_code == 403
    bad = {"limits": [{"metric": "tool_calls", "scope": "run", "per": "day", "limit": 5}]}
    refused = client.put("/api/admin/quotas", json=bad, headers=admin)
    assert refused.status_code == 422
    assert refused.json()["code"] == "quota_policy_invalid"
    assert client.get("/api/admin/quotas", headers=agent_key).json()["version"] == 0


def test_a_gateway_whose_redis_does_not_answer_does_not_start(
    settings: Settings, db: Database, clock: FakeClock, keyring: Keyring
) -> None:
    gone = settings.model_copy(
        update={"quota_store": "redis", "redis_url": SecretStr("redis://127.0.0.1:1/0")}
    )
    app = create_app(gone, database=db, clock=clock, keyring=keyring)
    with pytest.raises(QuotaStoreUnavailable), TestClient(app):
        pass
