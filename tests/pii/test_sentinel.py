"""The sentinel through the gateway: redaction by the tenant's policy per channel; reversible
tokens round-trip only with `pii:reidentify`, only in their tenant and conversation, audited;
the policy refuses weakening credentials; every value stays out of responses and the audit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tests.support import bearer

SignIn = Callable[..., tuple[users.User, Issued]]
TEXT = "Ada (ada@acme.example, card 4111 1111 1111 1111) asked; api_key=sk-live-123"


def _admin(tenant: NewTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.admin_key.secret}"}


def _reversible_email(client: TestClient, tenant: NewTenant) -> None:
    answer = client.put(
        "/api/admin/pii-policy",
        json={"modes": {"email": {"prompt": "reversible", "log": "flag"}}},
        headers=_admin(tenant),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] >= 1


def _redact(client: TestClient, h: dict[str, str], channel: str, conversation: str) -> Any:
    answer = client.post(
        "/api/pii/redact",
        json={"text": TEXT, "channel": channel, "conversation": conversation},
        headers=h,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_scan_finds_and_stores_nothing(
    client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> None:
    tenant = make_tenant("t")
    answer = client.post("/api/pii/scan", json={"text": TEXT}, headers=_admin(tenant))
    assert {s["pii_class"] for s in answer.json()} == {"email", "payment_card", "credential"}
    unknown = client.post(
        "/api/pii/scan", json={"text": TEXT, "classes": ["horoscope"]}, headers=_admin(tenant)
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_pii_class"


def test_modes_per_channel(client: TestClient, make_tenant: Callable[[str], NewTenant]) -> None:
    tenant = make_tenant("t")
    _reversible_email(client, tenant)
    prompt = _redact(client, _admin(tenant), "prompt", "c-1")
    log = _redact(client, _admin(tenant), "log", "c-1")
    completion = _redact(client, _admin(tenant), "completion", "c-1")
    assert "[EMAIL_REV_" in prompt["text"]
    assert "ada@acme.example" in log["text"]  # flagged on logs, as the policy says
    assert "[EMAIL_" in completion["text"]
    assert "[EMAIL_REV_" not in completion["text"]
    for redacted in (prompt, log, completion):
        assert "4111" not in redacted["text"]
        assert "sk-live-123" not in redacted["text"]  # credentials: strict everywhere


def test_reversible_round_trip_needs_the_capability_and_its_conversation(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, db: Database
) -> None:
    tenant, other = make_tenant("t"), make_tenant("other")
    _reversible_email(client, tenant)
    _reversible_email(client, other)
    redacted = _redact(client, _admin(tenant), "prompt", "c-1")["text"]
    assert redacted == _redact(client, _admin(tenant), "prompt", "c-1")["text"]  # stable
    back = client.post(
        "/api/pii/reidentify",
        json={"text": redacted, "conversation": "c-1"},
        headers=_admin(tenant),
    )
    assert back.status_code == 200
    assert "ada@acme.example" in back.json()["text"]
    assert back.json()["restored"] == 1
    _, member = sign_in(tenant, "member")
    refused = client.post(
        "/api/pii/reidentify",
        json={"text": redacted, "conversation": "c-1"},
        headers=bearer(member.access_token),
    )
    assert refused.status_code == 403
    elsewhere = client.post(
        "/api/pii/reidentify",
        json={"text": redacted, "conversation": "c-2"},
        headers=_admin(tenant),
    )
    theirs = client.post(
        "/api/pii/reidentify",
        json={"text": redacted, "conversation": "c-1"},
        headers=_admin(other),
    )
    for answer in (elsewhere, theirs):
        assert answer.status_code == 200
        assert answer.json() == {"text": redacted, "restored": 0}
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list(iter_events(tx, tenant_id=tenant.tenant_id))
    reids = [e for e in events if e.action == "pii.reidentify"]
    assert reids
    assert all("ada@acme.example" not in e.payload for e in events)


@pytest.mark.parametrize(
    "body",
    [
        {"modes": {"credential": {"log": "flag"}}},
        {"modes": {"email": {"fax": "flag"}}},
        {"modes": {"horoscope": {"log": "flag"}}},
    ],
)
def test_policies_that_name_nonsense_or_weaken_credentials_are_refused(
    client: TestClient, make_tenant: Callable[[str], NewTenant], body: dict[str, Any]
) -> None:
    tenant = make_tenant("t")
    answer = client.put("/api/admin/pii-policy", json=body, headers=_admin(tenant))
    assert answer.status_code == 422
    assert answer.json()["code"] == "pii_policy_invalid"
    assert client.get("/api/admin/pii-policy", headers=_admin(tenant)).json()["version"] == 0
