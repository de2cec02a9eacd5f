"""Tool calls through the gateway: a run freezes its agent's grants ∩ the tenant's; allowed
work runs and returns untrusted output; every denial is a `capability_denied` problem naming
its rule, and audited; a destructive call waits for a person, whose approval lets exactly that
call happen once; an API key (what a model's runtime holds) can never approve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tests.support import bearer

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
SignIn = Callable[..., tuple[users.User, Issued]]
GRANTS: dict[str, Any] = {"tools": {"memory_read": {}, "memory_delete": {}}}


def _setup(client: TestClient, h: dict[str, str]) -> tuple[str, str]:
    """A memory entry and a run of an agent granted both memory tools: (entry id, run id)."""
    entry = client.post("/api/memory", json={"key": "k", "content": "the content"}, headers=h)
    assert client.put("/api/admin/tool-policy", json=GRANTS, headers=h).status_code == 200
    assert client.put("/api/agents/helper", json=GRANTS, headers=h).status_code == 200
    run = client.post("/api/runs", json={"agent": "helper", "input": {}}, headers=h)
    assert run.json()["tools"] == ["memory_delete", "memory_read"]
    return entry.json()["id"], run.json()["id"]


def _call(client: TestClient, h: dict[str, str], run: str, tool: str, **arguments: Any) -> Any:
    return client.post(
        f"/api/runs/{run}/tool-calls", json={"tool": tool, "arguments": arguments}, headers=h
    )


def test_allowed_work_runs_and_its_output_is_marked_untrusted(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    entry, run = _setup(client, h)
    answer = _call(client, h, run, "memory_read", id=entry)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "allowed"
    assert answer.json()["untrusted"] is True
    assert answer.json()["output"]["content"] == "the content"


def test_denials_name_their_rule_and_are_audited(
    client: TestClient, as_tenant: AsTenant, db: Database
) -> None:
    tenant, h = as_tenant("t")
    entry, run = _setup(client, h)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("shell", {"command": "rm -rf /"}, "tool_not_granted"),
        ("memory_read", {"id": entry, "also": 1}, "arguments_invalid"),
        ("memory_read", {"id": "not-an-id"}, "arguments_invalid"),
    ]
    for tool, arguments, rule in cases:
        answer = _call(client, h, run, tool, **arguments)
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == "capability_denied"
        assert rule in answer.json()["detail"]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        calls = [e for e in iter_events(tx, tenant_id=tenant.tenant_id) if e.action == "tool.call"]
    assert [(e.outcome, e.reason) for e in calls] == [
        ("denied", "tool_not_granted"),
        ("denied", "arguments_invalid"),
        ("denied", "arguments_invalid"),
    ]
    assert "rm -rf" not in " ".join(e.payload for e in calls)  # hashes, never arguments


def test_an_agent_without_configuration_gets_no_tools(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    entry, _ = _setup(client, h)
    bare = client.post("/api/runs", json={"agent": "unknown-agent", "input": {}}, headers=h)
    assert bare.json()["tools"] == []
    answer = _call(client, h, bare.json()["id"], "memory_read", id=entry)
    assert answer.status_code == 403


def test_a_destructive_call_waits_for_a_person_and_happens_once(
    client: TestClient, as_tenant: AsTenant, sign_in: SignIn
) -> None:
    tenant, h = as_tenant("t")
    entry, run = _setup(client, h)
    pending = _call(client, h, run, "memory_delete", id=entry)
    assert pending.status_code == 202, pending.text
    approval = pending.json()["approval_id"]
    again = _call(client, h, run, "memory_delete", id=entry)
    assert again.json()["approval_id"] == approval  # the same call waits on the same approval
    assert client.get(f"/api/memory/{entry}", headers=h).status_code == 200  # nothing deleted

    by_key = client.post(f"/api/approvals/{approval}/approve", headers=h)
    assert by_key.status_code == 403  # the model's side holds keys: keys never approve
    assert "people" in by_key.json()["detail"]

    _, owner = sign_in(tenant, "owner")
    approved = client.post(f"/api/approvals/{approval}/approve", headers=bearer(owner.access_token))
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    twice = client.post(f"/api/approvals/{approval}/approve", headers=bearer(owner.access_token))
    assert twice.status_code == 409

    other = _call(client, h, run, "memory_delete", id="00000000-0000-4000-8000-000000000000")
    assert other.status_code == 202  # the approval is for that call only
    done = _call(client, h, run, "memory_delete", id=entry)
    assert done.status_code == 200, done.text
    assert done.json()["rule"] == "approved"
    assert client.get(f"/api/memory/{entry}", headers=h).status_code == 404
    replay = _call(client, h, run, "memory_delete", id=entry)
    assert replay.status_code == 202  # spent: the same call needs a new approval


def test_a_person_without_a_fresh_second_factor_cannot_approve(
    client: TestClient, as_tenant: AsTenant, sign_in: SignIn
) -> None:
    tenant, h = as_tenant("t")
    entry, run = _setup(client, h)
    approval = _call(client, h, run, "memory_delete", id=entry).json()["approval_id"]
    _, stale = sign_in(tenant, "owner", amr=("email",))
    answer = client.post(f"/api/approvals/{approval}/approve", headers=bearer(stale.access_token))
    assert answer.status_code == 401
    assert answer.json()["code"] == "step_up_required"
    _, member = sign_in(tenant, "member")
    assert (
        client.post(
            f"/api/approvals/{approval}/approve", headers=bearer(member.access_token)
        ).status_code
        == 403
    )


def test_a_denied_approval_lets_nothing_happen(
    client: TestClient, as_tenant: AsTenant, sign_in: SignIn
) -> None:
    tenant, h = as_tenant("t")
    entry, run = _setup(client, h)
    approval = _call(client, h, run, "memory_delete", id=entry).json()["approval_id"]
    _, owner = sign_in(tenant, "owner")
    denied = client.post(f"/api/approvals/{approval}/deny", headers=bearer(owner.access_token))
    assert denied.json()["status"] == "denied"
    assert _call(client, h, run, "memory_delete", id=entry).status_code == 202
    assert client.get(f"/api/memory/{entry}", headers=h).status_code == 200


def test_the_tenant_narrows_every_run_at_once_and_nothing_widens_a_frozen_one(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    entry, run = _setup(client, h)
    narrow: dict[str, Any] = {"tools": {"memory_read": {}}}
    assert client.put("/api/admin/tool-policy", json=narrow, headers=h).status_code == 200
    later = client.post("/api/runs", json={"agent": "helper", "input": {}}, headers=h).json()
    assert later["tools"] == ["memory_read"]
    earlier = _call(client, h, run, "memory_delete", id=entry)
    assert earlier.status_code == 403  # a narrowing applies to running runs at once
    assert "tool_not_granted" in earlier.json()["detail"]
    assert _call(client, h, later["id"], "memory_delete", id=entry).status_code == 403
    wider: dict[str, Any] = {"tools": {"memory_read": {}, "memory_delete": {}, "shell": {}}}
    client.put("/api/admin/tool-policy", json=wider, headers=h)
    assert _call(client, h, later["id"], "memory_delete", id=entry).status_code == 403  # frozen
    listed = client.get("/api/tools", headers=h).json()
    assert {t["name"] for t in listed} == {
        "memory_read",
        "memory_delete",
        "web_fetch",
        "send_message",
    }  # no shell
