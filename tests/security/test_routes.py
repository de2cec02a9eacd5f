"""Cross-tenant attempts and the authorisation matrix over every route of the gateway."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tenantguard.authz import ACTIONS, ADMIN_CAPABILITIES
from tenantguard.db import Database
from tenantguard.errors import CapabilityDenied
from tenantguard.gateway.auth import Operation
from tenantguard.identity.keystore import insert_key
from tenantguard.testing import FakeClock
from tests.security.conftest import (
    API_OPERATIONS,
    BODY_CREDENTIAL,
    GUARDED_PREFIXES,
    NAMED,
    OPENAPI,
    OPERATIONS,
    PUBLIC,
    World,
    example_body,
    op_id,
    snapshot,
)

GATE_DENIAL = CapabilityDenied.default_detail


def _without_occurrence(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k not in ("request_id", "instance")}


def test_enumeration_matches_the_openapi_document() -> None:
    """The operations the suites walk are exactly those the OpenAPI document publishes."""
    published = {
        (method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item
    }
    assert {(op.method, op.path) for op in OPERATIONS} == published
    assert len(API_OPERATIONS) >= 16


def test_every_route_is_public_on_purpose_or_declares_one_action() -> None:
    """Outside the public allow-list, each route declares exactly one known action."""
    for op in OPERATIONS:
        if (op.method, op.path) in PUBLIC:
            assert op.actions == (), op_id(op)
            continue
        assert op.path.startswith(GUARDED_PREFIXES), f"{op_id(op)}: neither public nor guarded"
        assert len(op.actions) == 1, op_id(op)
        assert op.actions[0] in ACTIONS, op_id(op)


@pytest.mark.parametrize("op", API_OPERATIONS, ids=op_id)
def test_tenant_b_cannot_reach_tenant_a(op: Operation, client: TestClient, world: World) -> None:
    """B's credentials on A's ids answer 404 exactly like a missing id; B's lists and creations
    show nothing of A's; A's data is unchanged afterwards."""
    before = snapshot(client, world)
    hb = World.headers(world.b)
    body = example_body(op)
    if "{" in op.path and op.path.startswith(NAMED):
        # B naming A's secret addresses B's own (absent, or created by this PUT): never A's.
        theirs = client.request(op.method, world.fill(op.path), json=body, headers=hb)
        # 422: B's own request is invalid in B's namespace (say, it names a secret B lacks).
        assert theirs.status_code in (200, 404, 422), theirs.text
        received = theirs.text
    elif "{" in op.path:
        theirs = client.request(op.method, world.fill(op.path), json=body, headers=hb)
        missing = client.request(
            op.method, world.fill(op.path, resource_id=str(uuid4())), json=body, headers=hb
        )
        assert theirs.status_code == 404, theirs.text
        assert theirs.json()["code"] == "not_found"
        assert _without_occurrence(theirs.json()) == _without_occurrence(missing.json())
        received = json.dumps(_without_occurrence(theirs.json()))  # `instance` echoes B's URL
    else:
        # B acting in its own tenant. It may be refused for its own reasons (an API key has
        # no session to log out of), but never as unauthenticated and never with a crash.
        own = client.request(op.method, op.path, json=body, headers=hb)
        refused_credential = (op.method, op.path) in BODY_CREDENTIAL and own.status_code == 401
        assert refused_credential or own.status_code not in (401, 403), own.text
        assert own.status_code < 500, own.text
        received = own.text
    for trace in world.a_traces():
        assert trace not in received
    assert snapshot(client, world) == before


@pytest.mark.parametrize("op", API_OPERATIONS, ids=op_id)
def test_authorisation_matrix(
    op: Operation, client: TestClient, world: World, db: Database, clock: FakeClock
) -> None:
    """No credential is 401; every capability but the route's is 403 and changes nothing;
    the route's capability alone is let through."""
    (action,) = op.actions
    url, body = world.fill(op.path), example_body(op)
    anonymous = client.request(op.method, url, json=body)
    assert anonymous.status_code == 401
    with db.tenant_transaction(world.a.tenant_id) as tx:
        without = insert_key(
            tx,
            tenant_id=world.a.tenant_id,
            name="without",
            capabilities=ADMIN_CAPABILITIES - {action},
            now=clock.now(),
        )
        only = insert_key(
            tx,
            tenant_id=world.a.tenant_id,
            name="only",
            capabilities=frozenset({action}),
            now=clock.now(),
        )
    before = snapshot(client, world)
    denied = client.request(
        op.method, url, json=body, headers={"Authorization": f"Bearer {without.secret}"}
    )
    assert denied.status_code == 403, denied.text
    assert denied.json()["code"] == "capability_denied"
    assert snapshot(client, world) == before
    allowed = client.request(
        op.method, url, json=body, headers={"Authorization": f"Bearer {only.secret}"}
    )
    # Past the route's gate; a later rule may still refuse (e.g. minting a wider key).
    assert allowed.status_code != 401 or (op.method, op.path) in BODY_CREDENTIAL, allowed.text
    gate_denial = allowed.status_code == 403 and allowed.json()["detail"] == GATE_DENIAL
    assert not gate_denial, allowed.text


RUN_OPERATIONS = [op for op in API_OPERATIONS if op.path.startswith("/api/runs/{")]


@pytest.mark.parametrize("op", RUN_OPERATIONS, ids=op_id)
def test_a_key_bound_to_another_agent_cannot_reach_a_run(
    op: Operation, client: TestClient, world: World
) -> None:
    """Every route on one run (enumerated): a key of A's own tenant, holding the route's
    actions but bound to another agent than the run's, answers 404 as for a missing run."""
    h = World.headers(world.a)
    assert client.put("/api/agents/a-other", json={"tools": {}}, headers=h).status_code == 200
    issued = client.post(
        "/api/api-keys",
        json={"name": "other-agent", "capabilities": sorted(op.actions), "agent": "a-other"},
        headers=h,
    )
    assert issued.status_code == 201, issued.text
    before = snapshot(client, world)
    bound = {"Authorization": f"Bearer {issued.json()['secret']}"}
    answer = client.request(op.method, world.fill(op.path), json=example_body(op), headers=bound)
    assert answer.status_code == 404, answer.text
    assert world.marker not in answer.text
    assert snapshot(client, world) == before
