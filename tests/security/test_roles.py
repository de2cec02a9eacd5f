"""The authorisation matrix for people: every route x every role, enumerated from the app,
matches the matrix data (`authz.ROLE_ACTIONS`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tenantguard.authz import PLATFORM_ROLES, ROLE_ACTIONS, ROLES
from tenantguard.data.tenants import NewTenant
from tenantguard.errors import CapabilityDenied
from tenantguard.gateway.auth import Operation
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tests.security.conftest import API_OPERATIONS, BODY_CREDENTIAL, World, example_body, op_id

SignIn = Callable[[NewTenant, str], tuple[users.User, Issued]]


def test_every_role_has_a_row() -> None:
    assert set(ROLE_ACTIONS) == {*ROLES, *PLATFORM_ROLES}


@pytest.mark.parametrize("op", API_OPERATIONS, ids=op_id)
def test_route_by_role(op: Operation, client: TestClient, world: World, sign_in: SignIn) -> None:
    """A role holding the route's action passes its gate; any other role gets the gate's 403."""
    (action,) = op.actions
    url, body = world.fill(op.path), example_body(op)
    for role in ROLES:
        _, login = sign_in(world.a, role)
        response = client.request(
            op.method, url, json=body, headers={"Authorization": f"Bearer {login.access_token}"}
        )
        gate_denied = (
            response.status_code == 403
            and response.json()["detail"] == CapabilityDenied.default_detail
        )
        credential_refused = (op.method, op.path) in BODY_CREDENTIAL
        assert response.status_code != 401 or credential_refused, (role, response.text)
        assert gate_denied is (action not in ROLE_ACTIONS[role]), (role, response.text)
