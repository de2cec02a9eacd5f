"""`Idempotency-Key` on every side-effecting route, found by enumeration: a repeat with the same
key gets the first answer, marked replayed, and has no effect (no audit event, nothing of the
tenant's changed); the same key on another body is refused. A new POST or PATCH route is
covered by being added."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tenantguard.authz import REPEATABLE_ACTIONS
from tenantguard.context import PLATFORM_TENANT_ID
from tenantguard.gateway.auth import Operation
from tenantguard.idempotency import METHODS
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tests.security.conftest import (
    API_OPERATIONS,
    PLATFORM_OPERATIONS,
    PUBLIC,
    World,
    example_body,
    op_id,
    snapshot,
)
from tests.support import bearer

SignIn = Callable[..., tuple[users.User, Issued]]
GUARDED_WRITES = [op for op in API_OPERATIONS + PLATFORM_OPERATIONS if op.method in METHODS]
KEYED = [op for op in GUARDED_WRITES if op.actions[0] not in REPEATABLE_ACTIONS]
REPEATABLE = [op for op in GUARDED_WRITES if op.actions[0] in REPEATABLE_ACTIONS]


def test_the_keyed_routes_are_every_guarded_post_and_patch() -> None:
    """So that the loop below cannot pass empty; the public ones carry their own one-time
    credential or id (tests/security/conftest.py says which)."""
    assert len(KEYED) >= 20
    assert {op.method for op in KEYED} == METHODS
    assert all((op.method, op.path) not in PUBLIC for op in KEYED)
    assert {op.actions[0] for op in REPEATABLE} == REPEATABLE_ACTIONS


def _audit_count(owner_in: Callable[[UUID], Any], *tenants: UUID) -> int:
    total = 0
    for tenant in tenants:
        row = owner_in(tenant).execute("SELECT count(*) FROM tenantguard.audit_events").fetchone()
        total += int(row[0])
    return total


@pytest.mark.parametrize("op", KEYED, ids=op_id)
def test_a_repeat_is_the_first_answer_and_has_no_effect(
    op: Operation,
    client: TestClient,
    world: World,
    owner_in: Callable[[UUID], Any],
    sign_in_operator: SignIn,
) -> None:
    if op in PLATFORM_OPERATIONS:
        _, operator = sign_in_operator()
        headers = bearer(operator.access_token)
    else:
        headers = World.headers(world.a)
    keyed = {**headers, "Idempotency-Key": f"route-{op.method}-{op.path}"}
    url, body = world.fill(op.path), example_body(op)
    first = client.request(op.method, url, json=body, headers=keyed)
    assert first.status_code < 500, first.text
    assert "idempotent-replayed" not in first.headers
    events = _audit_count(owner_in, world.a.tenant_id, PLATFORM_TENANT_ID)
    before = snapshot(client, world)
    again = client.request(op.method, url, json=body, headers=keyed)
    assert again.headers.get("idempotent-replayed") == "true", again.text
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert _audit_count(owner_in, world.a.tenant_id, PLATFORM_TENANT_ID) == events
    assert snapshot(client, world) == before
    other = client.request(
        op.method, url, json={**(body or {}), "idempotency-test": 1}, headers=keyed
    )
    assert other.status_code == 422, other.text
    assert other.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("op", REPEATABLE, ids=op_id)
def test_a_read_by_post_runs_again_and_keeps_nothing(
    op: Operation, client: TestClient, world: World, sign_in_operator: SignIn
) -> None:
    """A read that needs a body is not kept: a repeat under the same key runs again (consent
    and policy checked anew, audited anew), and its answer, the data, is stored nowhere."""
    if op in PLATFORM_OPERATIONS:
        _, operator = sign_in_operator()
        headers = bearer(operator.access_token)
    else:
        headers = World.headers(world.a)
    keyed = {**headers, "Idempotency-Key": f"read-{op.path}"}
    url, body = world.fill(op.path), example_body(op)
    for _ in range(2):
        answer = client.request(op.method, url, json=body, headers=keyed)
        assert answer.status_code < 500, answer.text
        assert "idempotent-replayed" not in answer.headers
    other = client.request(op.method, url, json={**(body or {}), "x": 1}, headers=keyed)
    assert other.json().get("code") != "idempotency_key_reused"
