"""Fixtures of the data tests: a tenant, its owner and an operator, for operator access."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tests.support import bearer

SignIn = Callable[..., tuple[users.User, Issued]]
Scene = tuple[NewTenant, dict[str, str], dict[str, str], str]


@pytest.fixture
def scene(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    sign_in_operator: SignIn,
) -> Scene:
    """A tenant with one memory entry, its owner (fresh second factor) and an operator (fresh
    second factor): (tenant, owner headers, operator headers, the entry's id)."""
    tenant = make_tenant("acme")
    _, owner = sign_in(tenant, "owner")
    _, operator = sign_in_operator()
    entry = client.post(
        "/api/memory",
        json={"key": "vip", "content": "only-in-acme"},
        headers={"Authorization": f"Bearer {tenant.admin_key.secret}"},
    )
    assert entry.status_code == 201
    return tenant, bearer(owner.access_token), bearer(operator.access_token), entry.json()["id"]
