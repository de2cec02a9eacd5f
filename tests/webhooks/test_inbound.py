"""Inbound webhooks through the gateway: a tenant's sources (Standard Webhooks, Stripe), the
raw bytes verified, replays refused (concurrent duplicates included), every refusal a 401
problem saying why and audited, nothing kept that did not verify, and no tenant reached with
another's secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.testing import FakeClock
from tenantguard.webhooks.signing import new_secret, secret_bytes, signature_header

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
BODY = b'{"type": "invoice.paid",  "data": {"id": "in_1"}}'


def _source(client: TestClient, h: dict[str, str], name: str, scheme: str, secret: str) -> str:
    assert client.put(f"/api/secrets/{name}-key", json={"value": secret}, headers=h).is_success
    made = client.put(
        f"/api/webhook-sources/{name}", json={"scheme": scheme, "secret": f"{name}-key"}, headers=h
    )
    assert made.status_code == 200, made.text
    return str(made.json()["url"])


def _standard(secret: str, msg_id: str, t: int, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(t),
        "webhook-signature": signature_header([secret_bytes(secret)], msg_id, t, body),
        "content-type": "application/json",
    }


def _events(db: Database, tenant_id: Any) -> list[tuple[str, str, str]]:
    with db.tenant_transaction(tenant_id) as tx:
        return [
            (e.action, e.outcome, e.reason)
            for e in iter_events(tx, tenant_id=tenant_id)
            if e.action == "webhook.received"
        ]


def _receipts(client: TestClient, h: dict[str, str], name: str) -> list[bytes]:
    listed = client.get(f"/api/webhook-sources/{name}/receipts", headers=h)
    assert listed.status_code == 200, listed.text
    return [base64.b64decode(r["body_base64"]) for r in listed.json()]


def test_a_signed_webhook_is_kept_as_sent_and_a_replay_refused(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    secret = new_secret()
    url = _source(client, h, "billing", "standard", secret)
    now = int(clock.now().timestamp())
    headers = _standard(secret, "msg_1", now)
    accepted = client.post(url, content=BODY, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert _receipts(client, h, "billing") == [BODY]  # the bytes as sent, not a re-encoding
    again = client.post(url, content=BODY, headers=headers)
    assert again.status_code == 401
    assert again.json()["code"] == "webhook_replayed"
    assert _receipts(client, h, "billing") == [BODY]
    assert _events(db, tenant.tenant_id) == [
        ("webhook.received", "success", ""),
        ("webhook.received", "denied", "webhook_replayed"),
    ]


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda h, b: (h, b + b" "), "webhook_signature_invalid"),
        (lambda h, b: ({**h, "webhook-id": "msg_2"}, b), "webhook_signature_invalid"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
         "webhook_signature_invalid"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
         "webhook_malformed"),
        (lambda h, b: ({**h, "webhook-signature": "v1,@@@"}, b), "webhook_malformed"),
    ],
)  # fmt: skip
def test_tampering_is_refused_with_its_reason_and_nothing_kept(
    client: TestClient,
    as_tenant: AsTenant,
    db: Database,
    clock: FakeClock,
    tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]],
    code: str,
) -> None:
    tenant, h = as_tenant("t")
    secret = new_secret()
    url = _source(client, h, "billing", "standard", secret)
    headers, body = tamper(_standard(secret, "msg_1", int(clock.now().timestamp())), BODY)
    refused = client.post(url, content=body, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["code"] == code
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert _receipts(client, h, "billing") == []
    assert _events(db, tenant.tenant_id) == [("webhook.received", "denied", code)]


def test_a_stale_webhook_is_refused_even_when_its_signature_holds(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    _, h = as_tenant("t")
    secret = new_secret()
    url = _source(client, h, "billing", "standard", secret)
    old = int(clock.now().timestamp()) - 301
    refused = client.post(url, content=BODY, headers=_standard(secret, "msg_1", old))
    assert refused.json()["code"] == "webhook_stale"


def test_stripe_signatures_over_the_raw_bytes(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    _, h = as_tenant("t")
    secret = "whsec_stripe_" + "a" * 24
    url = _source(client, h, "stripe", "stripe", secret)
    t = int(clock.now().timestamp())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    headers = {"stripe-signature": f"t={t},v1={mac}", "content-type": "application/json"}
    assert client.post(url, content=BODY, headers=headers).status_code == 200
    reencoded = json.dumps(json.loads(BODY)).encode()  # the same JSON, other bytes
    refused = client.post(url, content=reencoded, headers=headers)
    assert refused.json()["code"] == "webhook_signature_invalid"
    replayed = client.post(url, content=BODY, headers=headers)
    assert replayed.json()["code"] == "webhook_replayed"


def test_no_tenant_is_reached_with_another_tenants_secret_or_source(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    """B's secret signs nothing for A; an unknown source or tenant is refused like a bad
    signature (no oracle) and writes nothing to anyone's chain."""
    a, ha = as_tenant("a")
    b, hb = as_tenant("b")
    secret_a, secret_b = new_secret(), new_secret()
    url_a = _source(client, ha, "billing", "standard", secret_a)
    _source(client, hb, "billing", "standard", secret_b)
    now = int(clock.now().timestamp())
    forged = client.post(url_a, content=BODY, headers=_standard(secret_b, "msg_1", now))
    assert forged.json()["code"] == "webhook_signature_invalid"
    unknown = url_a.replace("/billing", "/nothing-here")
    missing = client.post(unknown, content=BODY, headers=_standard(secret_a, "msg_1", now))
    assert (missing.status_code, missing.json()["code"]) == (401, "webhook_signature_invalid")
    other = url_a.replace(str(a.tenant_id), str(b.tenant_id))  # B's source, A's signature
    assert (
        client.post(other, content=BODY, headers=_standard(secret_a, "msg_1", now)).status_code
        == 401
    )
    assert _receipts(client, ha, "billing") == []
    assert _receipts(client, hb, "billing") == []
    assert _events(db, a.tenant_id) == [("webhook.received", "denied", "webhook_signature_invalid")]
    assert _events(db, b.tenant_id) == [("webhook.received", "denied", "webhook_signature_invalid")]


def test_concurrent_duplicates_are_kept_once(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    _, h = as_tenant("t")
    secret = new_secret()
    url = _source(client, h, "billing", "standard", secret)
    headers = _standard(secret, "msg_dup", int(clock.now().timestamp()))
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post(url, content=BODY, headers=headers), range(8)))
    statuses = sorted(r.status_code for r in codes)
    assert statuses == [200] + [401] * 7
    assert {r.json()["code"] for r in codes if r.status_code == 401} == {"webhook_replayed"}
    assert _receipts(client, h, "billing") == [BODY]


def test_a_rotated_secret_takes_over_at_once_and_both_signatures_pass_the_overlap(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    _, h = as_tenant("t")
    old, new = new_secret(), new_secret()
    url = _source(client, h, "billing", "standard", old)
    assert client.put("/api/secrets/billing-key", json={"value": new}, headers=h).is_success
    now = int(clock.now().timestamp())
    stale_key = client.post(url, content=BODY, headers=_standard(old, "msg_1", now))
    assert stale_key.json()["code"] == "webhook_signature_invalid"
    both = signature_header([secret_bytes(old), secret_bytes(new)], "msg_2", now, BODY)
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": both}
    assert client.post(url, content=BODY, headers=headers).status_code == 200


def test_forgeries_do_not_use_up_the_tenants_own_request_quota(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    """A tenant limited to a few requests a minute still reaches its API after a stream of
    forged webhooks: those count against the platform's limit for the source only."""
    _, h = as_tenant("t")
    url = _source(client, h, "billing", "standard", new_secret())
    limits = {"limits": [{"metric": "requests", "scope": "tenant", "per": "minute", "limit": 6}]}
    assert client.put("/api/admin/quotas", json=limits, headers=h).status_code == 200
    forged = _standard(new_secret(), "msg_1", int(clock.now().timestamp()))
    for _ in range(10):
        assert client.post(url, content=BODY, headers=forged).status_code == 401
    assert client.get("/api/webhook-sources", headers=h).status_code == 200
