"""A tenant's egress: its admins' host lists narrow what its tools reach (never widen it);
private networks only through a grant the platform's operator issues from the host, with a
reason, revocable, audited in the tenant's chain; metadata is never grantable."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tenantguard.audit.store import iter_events
from tenantguard.cli import app as cli
from tenantguard.context import Principal, TenantContext
from tenantguard.data import egress
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.egress.check import EgressDenied, EgressPolicy
from tenantguard.egress.transport import egress_client
from tenantguard.errors import NotFound, RequestInvalid
from tenantguard.testing import FakeClock, TestDatabase
from tests.egress.conftest import Server

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]


def _ctx(tenant: NewTenant) -> TenantContext:
    return TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "egress")


def test_a_grant_opens_a_private_endpoint_until_it_is_revoked(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock,
    make_server: Callable[[], Server],
) -> None:  # fmt: skip
    tenant, other = make_tenant("t"), make_tenant("u")
    server = make_server()
    base = EgressPolicy()  # no loopback grant of its own
    with db.tenant_transaction(tenant.tenant_id) as tx:
        grant = egress.add_grant(
            tx, _ctx(tenant), network="127.0.0.1/32", ports=[server.port],
            reason="the tenant's own model server", granted_by="ops", now=clock.now(),
        )  # fmt: skip
        policy = egress.policy_for(tx, tenant.tenant_id, base)
    with egress_client(policy) as client:
        assert client.get(f"{server.base}/ok").status_code == 200
    with db.tenant_transaction(other.tenant_id) as tx:
        theirs = egress.policy_for(tx, other.tenant_id, base)
    with egress_client(theirs) as client, pytest.raises(EgressDenied):
        client.get(f"{server.base}/ok")  # another tenant: no grant
    with db.tenant_transaction(tenant.tenant_id) as tx:
        egress.revoke_grant(tx, _ctx(tenant), grant.id, now=clock.now())
        revoked = egress.policy_for(tx, tenant.tenant_id, base)
        with pytest.raises(NotFound):
            egress.revoke_grant(tx, _ctx(tenant), grant.id, now=clock.now())
        actions = [e.action for e in iter_events(tx, tenant_id=tenant.tenant_id)]
    with egress_client(revoked) as client, pytest.raises(EgressDenied):
        client.get(f"{server.base}/ok")
    assert server.connections == 1
    assert actions[-2:] == ["egress.grant", "egress.revoke"]


@pytest.mark.parametrize(
    ("network", "ports"),
    [("169.254.169.254/32", [80]), ("::ffff:10.0.0.0/104", [80]), ("10.0.0.0/8", []),
     ("not-a-network", [80]), ("10.0.0.1/8", [80])],
)  # fmt: skip
def test_bad_grants_are_refused(
    db: Database, make_tenant: Callable[[str], NewTenant], clock: FakeClock,
    network: str, ports: list[int],
) -> None:  # fmt: skip
    tenant = make_tenant("t")
    with db.tenant_transaction(tenant.tenant_id) as tx, pytest.raises(RequestInvalid):
        egress.add_grant(
            tx, _ctx(tenant), network=network, ports=ports, reason="x", granted_by="ops",
            now=clock.now(),
        )  # fmt: skip


def _fetch_run(client: TestClient, h: dict[str, str]) -> str:
    grants: dict[str, Any] = {"tools": {"web_fetch": {"domains": ["127.0.0.1", "*.example"]}}}
    client.put("/api/admin/tool-policy", json=grants, headers=h)
    client.put("/api/agents/reader", json=grants, headers=h)
    return str(client.post("/api/runs", json={"agent": "reader"}, headers=h).json()["id"])


def test_a_tenants_deny_list_stops_its_tools(
    client: TestClient, as_tenant: AsTenant, make_server: Callable[[], Server]
) -> None:
    server = make_server()
    _, h = as_tenant("t")
    run = _fetch_run(client, h)
    call = {"tool": "web_fetch", "arguments": {"url": f"{server.base}/ok"}}
    assert client.post(f"/api/runs/{run}/tool-calls", json=call, headers=h).status_code == 200
    lists = {"allow_hosts": [], "deny_hosts": ["127.0.0.1"]}
    put = client.put("/api/admin/egress-policy", json=lists, headers=h)
    assert put.status_code == 200, put.text
    assert put.json()["deny_hosts"] == ["127.0.0.1"]
    refused = client.post(f"/api/runs/{run}/tool-calls", json=call, headers=h)
    assert refused.status_code == 403
    assert refused.json()["code"] == "egress_denied"
    assert "host denied" in refused.json()["detail"]
    only = {"allow_hosts": ["docs.example"], "deny_hosts": []}
    client.put("/api/admin/egress-policy", json=only, headers=h)
    assert client.post(f"/api/runs/{run}/tool-calls", json=call, headers=h).status_code == 403
    assert server.connections == 1


def test_host_lists_are_checked(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("t")
    for bad in (["*"], ["a b.example"], ["x\u0000.example"], [""]):
        answer = client.put(
            "/api/admin/egress-policy", json={"allow_hosts": bad, "deny_hosts": []}, headers=h
        )
        assert answer.status_code == 422, answer.text
    idn = client.put(
        "/api/admin/egress-policy", json={"allow_hosts": ["*.bücher.example"]}, headers=h
    )
    assert idn.json()["allow_hosts"] == ["*.xn--bcher-kva.example"]


def test_the_cli_grants_lists_and_revokes(
    pg: TestDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TENANTGUARD_DATABASE_URL", pg.app_url.get_secret_value())
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("TENANTGUARD_LOG_LEVEL", "warning")
    runner = CliRunner()
    assert runner.invoke(cli, ["init"]).exit_code == 0
    tenant = json.loads(runner.invoke(cli, ["tenants", "create", "T", "--json"]).stdout)
    granted = runner.invoke(
        cli,
        ["egress", "grant", "--tenant", tenant["tenant_id"], "--network", "10.0.0.5/32",
         "--port", "11434", "--reason", "their Ollama"],
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    grant_id = re.findall(uuid, granted.stdout)[-1]  # the grant's, after the tenant's
    listed = runner.invoke(cli, ["egress", "list", "--tenant", tenant["tenant_id"]])
    assert "10.0.0.5/32" in listed.stdout
    assert "active" in listed.stdout
    revoked = runner.invoke(
        cli, ["egress", "revoke", "--tenant", tenant["tenant_id"], "--id", grant_id]
    )
    assert revoked.exit_code == 0, revoked.output
    refused = runner.invoke(
        cli,
        ["egress", "grant", "--tenant", tenant["tenant_id"], "--network", "169.254.169.254/32",
         "--port", "80", "--reason", "no"],
    )  # fmt: skip
    assert refused.exit_code != 0
