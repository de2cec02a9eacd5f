"""Outbound webhook endpoints: the URL checked by the egress guard's rules when registered, the
signing secret shown once, rotation with an overlap in which both secrets sign."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import webhook_endpoints
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.egress.check import EgressPolicy
from tenantguard.errors import RequestInvalid
from tenantguard.testing import FakeClock
from tenantguard.webhooks.signing import secret_bytes, signature_header, verify_standard

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
URL = "/api/webhook-endpoints"


def _create(client: TestClient, h: dict[str, str], url: str = "https://hooks.example/tg") -> dict:  # type: ignore[type-arg]
    made = client.post(URL, json={"url": url, "event_types": ["webhook.test"]}, headers=h)
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_the_secret_is_shown_once(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("t")
    made = _create(client, h)
    assert made["secret"].startswith("whsec_")
    assert len(secret_bytes(made["secret"])) == 32
    listed = client.get(URL, headers=h)
    one = client.get(f"{URL}/{made['id']}", headers=h)
    assert made["secret"] not in listed.text + one.text
    assert [e["id"] for e in listed.json()] == [made["id"]]
    assert "secret" not in one.json()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example/x", "scheme"),
        ("https://user:pw@hooks.example/x", "credentials"),
        ("http://10.0.0.5/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://[::ffff:127.0.0.1]/x", "mapped loopback"),
        ("not a url", "garbage"),
    ],
)
def test_urls_the_guard_refuses_are_refused_at_registration(
    client: TestClient, as_tenant: AsTenant, url: str, why: str
) -> None:
    _, h = as_tenant("t")
    refused = client.post(URL, json={"url": url, "event_types": ["webhook.test"]}, headers=h)
    assert refused.status_code == 422, why
    assert client.get(URL, headers=h).json() == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/x", "http://[::1]/x", "https://hooks.example:22/x"]
)
def test_loopback_and_other_ports_are_refused_under_the_default_policy(url: str) -> None:
    """(The gateway of these tests is granted loopback, for its local servers: asked here of
    the policy a deployment has.)"""
    with pytest.raises(RequestInvalid, match="egress guard"):
        webhook_endpoints.check_endpoint_url(url, EgressPolicy())
    assert webhook_endpoints.check_endpoint_url("https://hooks.example/x", EgressPolicy())


def test_unknown_event_types_are_refused(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("t")
    body = {"url": "https://hooks.example/tg", "event_types": ["everything"]}
    assert client.post(URL, json=body, headers=h).status_code == 422


def test_rotation_signs_with_both_until_the_overlap_ends(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    made = _create(client, h)
    rotated = client.post(
        f"{URL}/{made['id']}/rotate-secret", json={"overlap_seconds": 3600}, headers=h
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != made["secret"]
    ctx = TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "t")
    endpoint = UUID(made["id"])

    def keys() -> list[bytes]:
        with db.tenant_transaction(tenant.tenant_id) as tx:
            return webhook_endpoints.signing_keys(tx, ctx, keyring, endpoint, now=clock.now())

    assert keys() == [secret_bytes(new), secret_bytes(made["secret"])]
    header = signature_header(keys(), "msg_1", 1_700_000_000, b"{}")
    for receiver in (made["secret"], new):  # a receiver on either secret accepts
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": "1700000000",
            "webhook-signature": header,
        }
        verify_standard([secret_bytes(receiver)], headers, b"{}", now=1_700_000_000)
    clock.advance(timedelta(seconds=3601))
    assert keys() == [secret_bytes(new)]


def test_deleted_endpoints_are_gone(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("t")
    made = _create(client, h)
    assert client.delete(f"{URL}/{made['id']}", headers=h).status_code == 204
    assert client.get(f"{URL}/{made['id']}", headers=h).status_code == 404
    assert client.get(URL, headers=h).json() == []
    again = client.post(f"{URL}/{made['id']}/rotate-secret", json={}, headers=h)
    assert again.status_code == 404
