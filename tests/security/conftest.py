"""The security suites' world: two tenants, A's resources, and the gateway's operations found by
enumeration (never a hand list). A new route is covered automatically; a route with a path
parameter whose resource the world cannot provide fails the suite until it is added here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tenantguard.authz import PLATFORM_ACTIONS
from tenantguard.data.tenants import NewTenant
from tenantguard.gateway import create_app
from tenantguard.gateway.auth import Operation, operations
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tenantguard.settings import Settings

_APP = create_app(Settings(data_root=Path("/nonexistent")))  # never started: only enumerated
OPERATIONS = operations(_APP)
OPENAPI: dict[str, Any] = _APP.openapi()
# Routes anyone may call. Adding a public route means adding it here, on purpose.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/api/auth/refresh"),  # the refresh token in the body is the credential
    ("POST", "/api/auth/magic-link"),  # always 202: says nothing about who exists
    ("POST", "/api/auth/magic-link/redeem"),  # the link's token is the credential
    ("POST", "/api/auth/oidc/start"),  # begins a sign-in; answers nothing about anyone
    ("POST", "/api/auth/oidc/callback"),  # the provider's code and the state are the credential
    ("GET", "/api/auth/saml/{tenant}/metadata"),  # an SP's public metadata, for its IdP
    ("POST", "/api/auth/saml/start"),  # begins a sign-in; answers nothing about anyone
    ("POST", "/api/auth/saml/acs"),  # the IdP's signed assertion and the RelayState are it
    ("POST", "/api/operator/auth/magic-link"),  # always 202, as the tenants' route
    ("POST", "/api/operator/auth/magic-link/redeem"),  # the link's token is the credential
    ("POST", "/api/webhooks/inbound/{tenant}/{scheme}/{source}"),  # the body's signature is it
    ("GET", "/api/artifact-downloads/{tenant}/{id}"),  # the signed URL's token is it
}
# The HTTP API and the OpenAI-compatible surface: every route there is guarded.
GUARDED_PREFIXES = ("/api/", "/v1/")
_GUARDED = [
    op
    for op in OPERATIONS
    if op.path.startswith(GUARDED_PREFIXES) and (op.method, op.path) not in PUBLIC
]
# The tenant realm's routes, and the platform realm's (operators only; tests/security/
# test_realms.py walks both against each realm's credentials).
API_OPERATIONS = [op for op in _GUARDED if not set(op.actions) & set(PLATFORM_ACTIONS)]
PLATFORM_OPERATIONS = [op for op in _GUARDED if set(op.actions) & set(PLATFORM_ACTIONS)]
# Routes whose body carries a second credential (a TOTP or recovery code): their example body's
# code is wrong, so past the gate they answer 401 by design. The gate itself is tested anyway.
BODY_CREDENTIAL = {("POST", "/api/auth/step-up"), ("POST", "/api/mfa/totp/confirm")}
# Collections addressed by names each tenant chooses (not opaque ids): B naming A's secret
# addresses B's own secret of that name. Isolation there means: nothing of A's moves or shows.
NAMED = ("/api/secrets", "/api/model-providers", "/api/agents", "/api/webhook-sources")


def op_id(op: Operation) -> str:
    return f"{op.method} {op.path}"


def example_body(op: Operation) -> dict[str, Any] | None:
    """The first example of the operation's request model (every model must have one)."""
    spec = OPENAPI["paths"][op.path][op.method.lower()]
    body = spec.get("requestBody")
    if body is None:
        return None
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    examples = OPENAPI["components"]["schemas"][ref].get("examples")
    assert examples, f"{op_id(op)}: request model {ref} has no example; add one"
    return dict(examples[0])


@dataclass
class World:
    a: NewTenant
    b: NewTenant
    resources: dict[str, str]  # path prefix -> one of A's ids (or names) there
    marker: str  # a string only A's data contains
    secret_value: str  # A's vault value: must never come out of any API

    @staticmethod
    def headers(tenant: NewTenant) -> dict[str, str]:
        return {"Authorization": f"Bearer {tenant.admin_key.secret}"}

    def fill(self, path: str, *, resource_id: str | None = None) -> str:
        """`path` with its parameter set to A's resource under the longest matching prefix."""
        params = re.findall(r"{([^}]+)}", path)
        if not params:
            return path
        assert len(params) == 1, f"{path}: one path parameter per route is modelled"
        owners = [prefix for prefix in self.resources if path.startswith(prefix + "/")]
        assert owners, f"{path}: no resource of tenant A in the world for this route; add one"
        chosen = resource_id or self.resources[max(owners, key=len)]
        return path.replace("{" + params[0] + "}", chosen)

    def a_traces(self) -> list[str]:
        """Strings that must never appear in anything tenant B receives (names of A's named
        resources excepted: B may use the same name for its own)."""
        opaque = [v for k, v in self.resources.items() if not k.startswith(NAMED)]
        return [
            str(self.a.tenant_id),
            self.marker,
            self.secret_value,
            *opaque,
            self.a.admin_key.info.display_prefix,
        ]


def snapshot(client: TestClient, world: World) -> dict[str, Any]:
    """Everything of A's that B's requests could change, as A sees it."""
    h = World.headers(world.a)
    memory_id = world.resources["/api/memory"]
    run_id = world.resources["/api/runs"]
    secret = world.resources["/api/secrets"]
    keys = client.get("/api/api-keys", headers=h).json()
    return {
        "memory": client.get("/api/memory?include_deleted=true", headers=h).json(),
        "versions": client.get(f"/api/memory/{memory_id}/versions", headers=h).json(),
        "run": client.get(f"/api/runs/{run_id}", headers=h).json(),
        "events": client.get(f"/api/runs/{run_id}/events", headers=h).json(),
        "keys": [{k: v for k, v in key.items() if k != "last_used_at"} for key in keys],
        "secret": client.get(f"/api/secrets/{secret}", headers=h).json(),
        "providers": client.get("/api/model-providers", headers=h).json(),
        "webhook_sources": client.get("/api/webhook-sources", headers=h).json(),
        "webhook_endpoints": client.get("/api/webhook-endpoints", headers=h).json(),
        "artifacts": client.get("/api/artifacts", headers=h).json(),
        "retention": client.get("/api/admin/retention", headers=h).json(),
        "users": client.get("/api/users", headers=h).json(),
        "agents": client.get("/api/agents", headers=h).json(),
        "tool_policy": client.get("/api/admin/tool-policy", headers=h).json(),
        "approvals": client.get("/api/approvals", headers=h).json(),
        "egress": client.get("/api/admin/egress-policy", headers=h).json(),
        "quotas": client.get("/api/admin/quotas", headers=h).json()["limits"],
        "sessions": [
            {k: v for k, v in s.items() if k != "last_seen_at"}
            for s in client.get("/api/admin/sessions", headers=h).json()
        ],
    }


@pytest.fixture
def world(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: Callable[[NewTenant, str], tuple[users.User, Issued]],
) -> World:
    a, b = make_tenant("A"), make_tenant("B")
    a_user, a_login = sign_in(a, "member")
    h = World.headers(a)
    marker = f"only-in-A-{a.tenant_id.hex[:8]}"
    entry = client.post("/api/memory", json={"key": "a-key", "content": marker}, headers=h)
    grants: dict[str, Any] = {"tools": {"memory_read": {}, "memory_delete": {}}}
    policy = client.put("/api/admin/tool-policy", json=grants, headers=h)
    agent = client.put("/api/agents/a-agent", json=grants, headers=h)
    limits = {"limits": [{"metric": "tool_calls", "scope": "run", "per": "run", "limit": 1000}]}
    quotas = client.put("/api/admin/quotas", json=limits, headers=h)
    assert policy.status_code == agent.status_code == quotas.status_code == 200, agent.text
    run = client.post("/api/runs", json={"agent": "a-agent", "input": {"m": marker}}, headers=h)
    pending = client.post(
        f"/api/runs/{run.json()['id']}/tool-calls",
        json={"tool": "memory_delete", "arguments": {"id": entry.json()["id"]}},
        headers=h,
    )
    assert pending.status_code == 202, pending.text
    client.post(f"/api/runs/{run.json()['id']}/events", json={"type": "a", "data": {}}, headers=h)
    key = client.post(
        "/api/api-keys", json={"name": "a-extra", "capabilities": ["memory:read"]}, headers=h
    )
    secret_value = f"sk-live-{uuid4().hex}"
    secret = client.put("/api/secrets/a-secret", json={"value": secret_value}, headers=h)
    assert entry.status_code == run.status_code == key.status_code == 201
    provider = client.put(
        "/api/model-providers/a-provider",
        json={"kind": "openai", "secret": "a-secret", "models": [f"model-{marker}"]},
        headers=h,
    )
    source = client.put(
        "/api/webhook-sources/a-source",
        json={"scheme": "stripe", "secret": "a-secret"},
        headers=h,
    )
    assert secret.status_code == provider.status_code == source.status_code == 200
    endpoint = client.post(
        "/api/webhook-endpoints",
        json={"url": f"https://{marker}.example/hook", "event_types": ["webhook.test"]},
        headers=h,
    )
    assert endpoint.status_code == 201, endpoint.text
    artifact = client.post(
        "/api/artifacts", params={"name": "a-file"}, content=marker.encode(), headers=h
    )
    assert artifact.status_code == 201, artifact.text
    return World(
        a=a,
        b=b,
        marker=marker,
        secret_value=secret_value,
        resources={
            "/api/memory": entry.json()["id"],
            "/api/runs": run.json()["id"],
            "/api/api-keys": key.json()["id"],
            "/api/secrets": "a-secret",
            "/api/model-providers": "a-provider",
            "/api/users": str(a_user.id),
            "/api/admin/users": str(a_user.id),
            "/api/sessions": str(a_login.session.id),
            "/api/admin/sessions": str(a_login.session.id),
            "/api/operator/tenants": str(a.tenant_id),  # operators name the tenant they read
            "/api/agents": "a-agent",
            "/api/approvals": str(pending.json()["approval_id"]),
            "/api/webhook-sources": "a-source",
            "/api/webhook-endpoints": endpoint.json()["id"],
            "/api/artifacts": artifact.json()["id"],
        },
    )
