"""An API key bound to an agent acts only in that agent's runs: what a model runtime holds can
start, read and drive its own runs and nothing else of its tenant's, and cannot mint, rotate
or revoke a key that reaches further."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tests.support import bearer

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
GRANTS: dict[str, Any] = {"tools": {"memory_read": {}}}
BOUND_CAPS = ["runs:read", "runs:write", "tools:call", "tools:read", "api_keys:manage"]


def _key(client: TestClient, h: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/api/api-keys", json={"name": "k", "capabilities": BOUND_CAPS, **body}, headers=h
    )


@pytest.fixture
def world(client: TestClient, as_tenant: AsTenant) -> dict[str, Any]:
    _, admin = as_tenant("t")
    assert client.put("/api/admin/tool-policy", json=GRANTS, headers=admin).status_code == 200
    for name in ("helper", "other"):
        assert client.put(f"/api/agents/{name}", json=GRANTS, headers=admin).status_code == 200
    issued = _key(client, admin, agent="helper")
    assert issued.status_code == 201, issued.text
    assert issued.json()["agent"] == "helper"
    bound = bearer(issued.json()["secret"])
    entry = client.post("/api/memory", json={"key": "k", "content": "c"}, headers=admin).json()
    theirs = client.post("/api/runs", json={"agent": "other"}, headers=admin).json()["id"]
    mine = client.post("/api/runs", json={"agent": "helper"}, headers=bound)
    assert mine.status_code == 201, mine.text
    return {
        "admin": admin,
        "bound": bound,
        "bound_id": issued.json()["id"],
        "entry": entry["id"],
        "mine": mine.json()["id"],
        "theirs": theirs,
    }


def test_a_bound_key_starts_runs_of_its_agent_only(
    client: TestClient, world: dict[str, Any]
) -> None:
    answer = client.post("/api/runs", json={"agent": "other"}, headers=world["bound"])
    assert answer.status_code == 403
    assert answer.json()["code"] == "capability_denied"


def test_another_agents_run_is_invisible_to_a_bound_key(
    client: TestClient, world: dict[str, Any]
) -> None:
    h, theirs = world["bound"], world["theirs"]
    call = {"tool": "memory_read", "arguments": {"id": world["entry"]}}
    for method, path, body in [
        ("GET", f"/api/runs/{theirs}", None),
        ("GET", f"/api/runs/{theirs}/events", None),
        ("POST", f"/api/runs/{theirs}/events", {"type": "note", "data": {}}),
        ("POST", f"/api/runs/{theirs}/tool-calls", call),
    ]:
        answer = client.request(method, path, json=body, headers=h)
        assert answer.status_code == 404, (method, path, answer.text)
    listed = client.get("/api/runs", headers=h).json()["items"]
    assert [r["id"] for r in listed] == [world["mine"]]
    # Its own run works, and the unbound admin key still sees both.
    own = client.post(f"/api/runs/{world['mine']}/tool-calls", json=call, headers=h)
    assert own.status_code == 200, own.text
    every = client.get("/api/runs", headers=world["admin"]).json()["items"]
    assert {r["id"] for r in every} == {world["mine"], theirs}


def test_a_bound_key_sees_approvals_of_its_agents_runs_only(
    client: TestClient, world: dict[str, Any]
) -> None:
    admin = world["admin"]
    policy: dict[str, Any] = {"tools": {"memory_read": {}, "memory_delete": {}}}
    assert client.put("/api/admin/tool-policy", json=policy, headers=admin).status_code == 200
    for name in ("helper", "other"):
        assert client.put(f"/api/agents/{name}", json=policy, headers=admin).status_code == 200
    theirs = client.post("/api/runs", json={"agent": "other"}, headers=admin).json()["id"]
    mine = client.post("/api/runs", json={"agent": "helper"}, headers=world["bound"]).json()["id"]
    delete = {"tool": "memory_delete", "arguments": {"id": world["entry"]}}
    assert (
        client.post(f"/api/runs/{theirs}/tool-calls", json=delete, headers=admin).status_code == 202
    )
    assert (
        client.post(f"/api/runs/{mine}/tool-calls", json=delete, headers=world["bound"]).status_code
        == 202
    )
    seen = client.get("/api/approvals", headers=world["bound"]).json()
    assert [a["run_id"] for a in seen] == [mine]
    assert len(client.get("/api/approvals", headers=admin).json()) == 2


def test_a_bound_key_mints_only_keys_bound_to_its_agent(
    client: TestClient, world: dict[str, Any]
) -> None:
    h = world["bound"]
    inherited = _key(client, h, capabilities=["runs:read"])
    assert inherited.status_code == 201, inherited.text
    assert inherited.json()["agent"] == "helper"
    assert _key(client, h, capabilities=["runs:read"], agent="other").status_code == 403
    # Nor acts on a key that reaches further: the unbound admin key, or one of another agent.
    admin_keys = client.get("/api/api-keys", headers=world["admin"]).json()
    unbound = next(k for k in admin_keys if k["agent"] is None)
    other = _key(client, world["admin"], capabilities=["runs:read"], agent="other").json()
    for target in (unbound["id"], other["id"]):
        assert client.delete(f"/api/api-keys/{target}", headers=h).status_code == 403
        assert client.post(f"/api/api-keys/{target}/rotate", json={}, headers=h).status_code == 403
    rotated = client.post(f"/api/api-keys/{inherited.json()['id']}/rotate", json={}, headers=h)
    assert rotated.status_code == 201
    assert rotated.json()["agent"] == "helper"


def test_a_key_binds_only_to_an_agent_of_its_own_tenant(
    client: TestClient, as_tenant: AsTenant, world: dict[str, Any]
) -> None:
    _, stranger = as_tenant("u")
    assert _key(client, stranger, agent="helper").status_code == 422  # "helper" is t's
    assert _key(client, world["admin"], agent="nobody").status_code == 422
    assert _key(client, world["admin"], agent="Bad Name").status_code == 422
