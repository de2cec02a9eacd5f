"""The two realms over every route, enumerated: platform routes answer only operators (with a
second factor), tenant routes never answer operators beyond their own sessions, and no
credential of one realm performs an action of the other, whatever capabilities it carries."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tenantguard.authz import PLATFORM_ACTIONS, ROLE_ACTIONS, ROLES
from tenantguard.db import Database
from tenantguard.errors import CapabilityDenied
from tenantguard.gateway.auth import Operation
from tenantguard.identity import users
from tenantguard.identity.keystore import insert_key
from tenantguard.identity.sessions import Issued
from tenantguard.testing import FakeClock
from tests.security.conftest import (
    API_OPERATIONS,
    BODY_CREDENTIAL,
    PLATFORM_OPERATIONS,
    World,
    example_body,
    op_id,
    snapshot,
)
from tests.support import bearer

SignIn = Callable[..., tuple[users.User, Issued]]


def gate_denied(response: object) -> bool:
    status = getattr(response, "status_code", 0)
    return status == 403 and response.json()["detail"] == CapabilityDenied.default_detail  # type: ignore[attr-defined]


def test_the_platform_realm_has_routes() -> None:
    """So that the loops below cannot pass empty."""
    assert PLATFORM_OPERATIONS
    assert {a for op in PLATFORM_OPERATIONS for a in op.actions} == set(PLATFORM_ACTIONS)


@pytest.mark.parametrize("op", PLATFORM_OPERATIONS, ids=op_id)
def test_platform_route_answers_operators_only(
    op: Operation,
    client: TestClient,
    world: World,
    db: Database,
    clock: FakeClock,
    sign_in: SignIn,
    sign_in_operator: SignIn,
) -> None:
    url, body = world.fill(op.path), example_body(op)
    assert client.request(op.method, url, json=body).status_code == 401
    # A tenant's credentials: its admin key, every role, and a key whose stored capabilities
    # name the platform action (no API mints one; the realm check refuses it anyway).
    with db.tenant_transaction(world.a.tenant_id) as tx:
        smuggled = insert_key(
            tx,
            tenant_id=world.a.tenant_id,
            name="smuggled",
            capabilities=frozenset(op.actions),
            now=clock.now(),
        )
    tenant_credentials = [world.a.admin_key.secret, smuggled.secret]
    tenant_credentials += [sign_in(world.a, role)[1].access_token for role in ROLES]
    for credential in tenant_credentials:
        answer = client.request(op.method, url, json=body, headers=bearer(credential))
        assert gate_denied(answer), answer.text
    _, pending = sign_in_operator(amr=("email",))
    stale = client.request(op.method, url, json=body, headers=bearer(pending.access_token))
    assert stale.status_code == 401
    assert stale.json()["code"] == "step_up_required"
    _, operator = sign_in_operator()
    allowed = client.request(op.method, url, json=body, headers=bearer(operator.access_token))
    # Past the gate; a later rule may still refuse (tenant A has not opted in to operator
    # access, say: a 403 of its own kind, not the gate's).
    assert allowed.status_code != 401, allowed.text
    assert not gate_denied(allowed), allowed.text


@pytest.mark.parametrize("op", API_OPERATIONS, ids=op_id)
def test_tenant_route_refuses_operators(
    op: Operation, client: TestClient, world: World, sign_in_operator: SignIn
) -> None:
    """An operator with a fresh second factor passes only the gates of its own realm's
    actions (its own sessions and factors), sees nothing of tenant A's, and changes nothing."""
    (action,) = op.actions
    url, body = world.fill(op.path), example_body(op)
    _, operator = sign_in_operator()
    before = snapshot(client, world)
    answer = client.request(op.method, url, json=body, headers=bearer(operator.access_token))
    credential_refused = (op.method, op.path) in BODY_CREDENTIAL
    assert answer.status_code != 401 or credential_refused, answer.text
    assert gate_denied(answer) is (action not in ROLE_ACTIONS["operator"]), answer.text
    received = answer.json() if answer.content else None
    if isinstance(received, dict):  # a problem's `instance` echoes the URL the test chose
        received = {k: v for k, v in received.items() if k not in ("instance", "request_id")}
    for trace in world.a_traces():
        assert trace not in json.dumps(received)
    assert snapshot(client, world) == before
