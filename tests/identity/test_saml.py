"""SAML single sign-on against a real IdP process (pysaml2 on loopback, signing with xmlsec1):
the happy path, and every refusal the issue names (bad signature, unsigned, wrong audience or
recipient, stale, replayed, mismatched InResponseTo) plus the attack forms of XML signatures
(tampering, wrapping, entities). Each refusal is the same 401 outward; the audit names why."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx
import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tenantguard.testing import FakeClock
from tests.support import bearer

SignIn = Callable[..., tuple[users.User, Issued]]
ACS = "https://app.acme.example/saml/acs"
ROOT = Path(__file__).resolve().parents[2]
_FORM_FIELD = re.compile(r'name="(SAMLResponse|RelayState)" value="([^"]*)"')


def configure(
    client: TestClient, tenant: NewTenant, owner: Issued, idp: str, *, jit: bool = True
) -> dict[str, Any]:
    """The tenant's owner uploads the IdP's metadata; the IdP is given the SP's metadata."""
    metadata = httpx.get(idp + "/metadata", timeout=10).text
    answer = client.put(
        "/api/admin/saml",
        headers=bearer(owner.access_token),
        json={
            "idp_metadata": metadata,
            "acs_urls": [ACS],
            "allowed_domains": ["ACME.example"],
            "jit_provisioning": jit,
            "default_role": "member",
        },
    )
    assert answer.status_code == 200, answer.text
    sp = client.get(f"/api/auth/saml/{tenant.tenant_id}/metadata")
    assert sp.status_code == 200
    assert sp.headers["content-type"].startswith("application/samlmetadata+xml")
    assert httpx.post(idp + "/trust", content=sp.text, timeout=10).status_code == 204
    return dict(answer.json())


@pytest.fixture
def saml_tenant(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, idp: str
) -> NewTenant:
    tenant = make_tenant("acme")
    _, owner = sign_in(tenant, "owner")
    configured = configure(client, tenant, owner, idp)
    assert configured["sp_entity_id"].endswith(f"/api/auth/saml/{tenant.tenant_id}/metadata")
    assert configured["allowed_domains"] == ["acme.example"]
    return tenant


def at_idp(client: TestClient, tenant: NewTenant, idp: str, **knobs: str) -> tuple[str, str, str]:
    """Start a sign-in and let the IdP answer it: (SAMLResponse, RelayState) of its form, and
    the binding `start` gave the app."""
    started = client.post(
        "/api/auth/saml/start", json={"tenant": str(tenant.tenant_id), "acs_url": ACS}
    )
    assert started.status_code == 200, started.text
    url = started.json()["redirect_url"]
    assert url.startswith(idp + "/sso?SAMLRequest=")
    knobs.setdefault("login", "ada@acme.example")
    page = httpx.get(url + "&" + urlencode(knobs), timeout=10)
    assert page.status_code == 200, page.text
    fields = dict(_FORM_FIELD.findall(page.text))
    return fields["SAMLResponse"], fields["RelayState"], started.json()["binding"]


def acs(
    client: TestClient, tenant: NewTenant, saml_response: str, relay_state: str, binding: str
) -> Any:
    return client.post(
        "/api/auth/saml/acs",
        json={
            "tenant": str(tenant.tenant_id),
            "saml_response": saml_response,
            "relay_state": relay_state,
            "binding": binding,
        },
    )


def failure_reason(db: Database, tenant_id: UUID, answer: Any) -> str:
    """The reason the audit recorded for a refused sign-in (the answer says nothing)."""
    assert answer.status_code == 401, answer.text
    assert answer.json()["code"] == "invalid_credentials"
    rid = answer.headers["x-request-id"]
    with db.tenant_transaction(tenant_id) as tx:
        found = [
            e.reason
            for e in iter_events(tx, tenant_id=tenant_id)
            if e.request_id == rid and e.outcome == "failure"
        ]
    assert len(found) == 1, found
    return found[0]


def xml_of(saml_response: str) -> str:
    return base64.b64decode(saml_response).decode()


def encoded(xml: str) -> str:
    return base64.b64encode(xml.encode()).decode()


# -- the happy path --------------------------------------------------------------------------


def test_sign_in_provisions_a_member_just_in_time(
    client: TestClient, saml_tenant: NewTenant, idp: str
) -> None:
    answer = acs(client, saml_tenant, *at_idp(client, saml_tenant, idp))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    access = answer.json()["access_token"]
    mine = client.get("/api/sessions", headers=bearer(access)).json()
    assert [s["amr"] for s in mine if s["current"]] == [["saml"]]
    assert client.get("/api/memory", headers=bearer(access)).status_code == 200


def test_a_response_signed_as_a_whole_as_well_is_accepted(
    client: TestClient, saml_tenant: NewTenant, idp: str
) -> None:
    answer = acs(client, saml_tenant, *at_idp(client, saml_tenant, idp, sign="both"))
    assert answer.status_code == 200, answer.text


def test_known_users_only_without_just_in_time_provisioning(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    idp: str,
    db: Database,
) -> None:
    tenant = make_tenant("strict")
    _, owner = sign_in(tenant, "owner")
    configure(client, tenant, owner, idp, jit=False)
    refused = acs(client, tenant, *at_idp(client, tenant, idp, login="new@acme.example"))
    assert failure_reason(db, tenant.tenant_id, refused) == "unknown_user"
    added = client.post(
        "/api/users",
        headers=bearer(owner.access_token),
        json={"email": "new@acme.example", "role": "auditor"},
    )
    assert added.status_code == 201
    accepted = acs(client, tenant, *at_idp(client, tenant, idp, login="new@acme.example"))
    assert accepted.status_code == 200, accepted.text


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"key": "rogue"}, "saml_SignatureError"),
        ({"sign": "none"}, "saml_SignatureError"),
        ({"sign": "response"}, "saml_SignatureError"),
        ({"destination": "https://evil.example/acs"}, "saml_"),
        ({"in_response_to": "id-someone-elses-request"}, "saml_"),
        ({"skew": "-3600"}, "saml_"),
        ({"skew": "3600"}, "saml_"),
        ({"login": "eve@evil.example"}, "domain_not_allowed"),
        ({"name_id": "transient", "login": "not-an-address"}, "bad_email"),
    ],
    ids=[
        "signed by a key the metadata does not name",
        "unsigned",
        "response signed, assertion not",
        "for another recipient",
        "answering another request",
        "expired",
        "not yet valid",
        "another organisation's account",
        "no usable email",
    ],
)
def test_bad_responses_are_refused_with_one_401(
    client: TestClient,
    saml_tenant: NewTenant,
    idp: str,
    db: Database,
    knobs: dict[str, str],
    reason: str,
) -> None:
    answer = acs(client, saml_tenant, *at_idp(client, saml_tenant, idp, **knobs))
    assert failure_reason(db, saml_tenant.tenant_id, answer).startswith(reason)


def test_the_assertion_lifetime_is_checked_against_our_clock_too(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database, clock: FakeClock
) -> None:
    """pysaml2 checks lifetimes against the system clock; the gateway checks them again
    against its own (injected) clock, so the check holds whichever clock drifts."""
    response, relay, binding = at_idp(client, saml_tenant, idp)
    clock.advance(timedelta(minutes=7))  # past the 5-minute lifetime and the 60 s leeway
    answer = acs(client, saml_tenant, response, relay, binding)
    assert failure_reason(db, saml_tenant.tenant_id, answer) == "assertion_expired"


def test_an_assertion_for_another_tenants_sp_is_refused(
    client: TestClient,
    saml_tenant: NewTenant,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    idp: str,
    db: Database,
) -> None:
    """The same IdP serves two tenants: an assertion whose audience is tenant B's SP does not
    sign anyone in to tenant A, though its signature is good."""
    other = make_tenant("other")
    _, owner = sign_in(other, "owner")
    theirs = configure(client, other, owner, idp)["sp_entity_id"]
    answer = acs(client, saml_tenant, *at_idp(client, saml_tenant, idp, audience=theirs))
    assert failure_reason(db, saml_tenant.tenant_id, answer).startswith("saml_")


def test_a_response_is_accepted_once(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database, owner_in: Any
) -> None:
    """Replaying a response fails on its used RelayState; and with the login in flight made
    unused again behind the service's back, on the assertion id already accepted."""
    response, relay, binding = at_idp(client, saml_tenant, idp)
    assert acs(client, saml_tenant, response, relay, binding).status_code == 200
    replay = acs(client, saml_tenant, response, relay, binding)
    assert failure_reason(db, saml_tenant.tenant_id, replay) == "relay_state_used_or_expired"
    conn = owner_in(saml_tenant.tenant_id)
    conn.execute(
        "UPDATE tenantguard.saml_logins SET used_at = NULL WHERE tenant_id = %s",
        (saml_tenant.tenant_id,),
    )
    again = acs(client, saml_tenant, response, relay, binding)
    assert failure_reason(db, saml_tenant.tenant_id, again) == "assertion_replayed"


def test_relay_state_binds_the_response_to_its_login(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database
) -> None:
    """A response is accepted only with the RelayState of the request it answers: not with
    another login's, nor a made-up one."""
    first, _, _ = at_idp(client, saml_tenant, idp)
    _, second_relay, second_binding = at_idp(client, saml_tenant, idp)
    crossed = acs(client, saml_tenant, first, second_relay, second_binding)
    assert failure_reason(db, saml_tenant.tenant_id, crossed).startswith("saml_")
    made_up = acs(client, saml_tenant, first, "made-up", second_binding)
    assert failure_reason(db, saml_tenant.tenant_id, made_up) == "unknown_relay_state"


def test_the_idps_form_alone_signs_no_one_in(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database
) -> None:
    """Login CSRF: a victim's browser made to post an attacker's IdP form lacks the binding
    the attacker's app kept; the login is refused, audited, and burnt."""
    response, relay, binding = at_idp(client, saml_tenant, idp, login="mallory@acme.example")
    forged = acs(client, saml_tenant, response, relay, "the-victims-own-cookie")
    assert failure_reason(db, saml_tenant.tenant_id, forged) == "binding_mismatch"
    late = acs(client, saml_tenant, response, relay, binding)
    assert failure_reason(db, saml_tenant.tenant_id, late) == "relay_state_used_or_expired"


def test_a_relay_state_of_one_tenant_means_nothing_in_another(
    client: TestClient,
    saml_tenant: NewTenant,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    idp: str,
    db: Database,
) -> None:
    other = make_tenant("other")
    _, owner = sign_in(other, "owner")
    configure(client, other, owner, idp)
    response, relay, binding = at_idp(client, saml_tenant, idp)
    answer = acs(client, other, response, relay, binding)
    assert failure_reason(db, other.tenant_id, answer) == "unknown_relay_state"


def test_a_tampered_assertion_is_refused(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database
) -> None:
    """Another person of the same domain, written into a signed assertion: the digest fails."""
    response, relay, binding = at_idp(client, saml_tenant, idp)
    xml = xml_of(response)
    assert xml.count("ada@acme.example") >= 2
    forged = encoded(xml.replace("ada@acme.example", "root@acme.example"))
    answer = acs(client, saml_tenant, forged, relay, binding)
    assert failure_reason(db, saml_tenant.tenant_id, answer).startswith("saml_")


def test_signature_wrapping_is_refused(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database
) -> None:
    """XML signature wrapping: an unsigned evil assertion put first, the signed original moved
    into it. The signature still verifies over the original, which is not the one used."""
    response, relay, binding = at_idp(client, saml_tenant, idp)
    xml = xml_of(response)
    start = xml.index("<ns1:Assertion") if "<ns1:Assertion" in xml else xml.index("<saml:Assertion")
    tag = xml[start + 1 : xml.index(" ", start)]
    end = xml.index(f"</{tag}>") + len(f"</{tag}>")
    original = xml[start:end]
    evil = re.sub(r'ID="[^"]+"', 'ID="id-evil"', original, count=1)
    evil = re.sub(r"<ds:Signature.*?</ds:Signature>", "", evil, flags=re.S)
    evil = evil.replace("ada@acme.example", "root@acme.example")
    subject_end = evil.index("</", evil.index("Subject>"))  # inside the evil assertion
    wrapped = evil[:subject_end] + original + evil[subject_end:]
    forged = encoded(xml[:start] + wrapped + xml[end:])
    answer = acs(client, saml_tenant, forged, relay, binding)
    assert failure_reason(db, saml_tenant.tenant_id, answer).startswith("saml_")


def test_entities_are_refused(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database
) -> None:
    """A DOCTYPE with an entity (XXE, billion laughs) is refused before anything is used."""
    response, relay, binding = at_idp(client, saml_tenant, idp)
    xml = xml_of(response)
    body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
    doctype = '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    forged = encoded(doctype + body.replace("ada@acme.example", "&x;", 1))
    answer = acs(client, saml_tenant, forged, relay, binding)
    assert failure_reason(db, saml_tenant.tenant_id, answer).startswith("saml_")


def test_garbage_is_the_same_401(
    client: TestClient, saml_tenant: NewTenant, idp: str, db: Database
) -> None:
    for junk in ("not base64 at all!", encoded("<notsaml/>"), encoded("")):
        _, relay, binding = at_idp(client, saml_tenant, idp)
        answer = acs(client, saml_tenant, junk or "x", relay, binding)
        assert failure_reason(db, saml_tenant.tenant_id, answer).startswith("saml_")


# -- configuration ---------------------------------------------------------------------------


def test_configuration_refuses_bad_metadata_and_urls(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, idp: str
) -> None:
    tenant = make_tenant("config")
    _, owner = sign_in(tenant, "owner")
    metadata = httpx.get(idp + "/metadata", timeout=10).text
    unsigned = re.sub(r"<\w+:KeyDescriptor.*?</\w+:KeyDescriptor>", "", metadata, flags=re.S)
    assert unsigned != metadata
    good = {"acs_urls": [ACS], "allowed_domains": ["acme.example"]}
    for bad in (
        {**good, "idp_metadata": "<not-metadata/>"},
        {**good, "idp_metadata": "]]> nonsense"},
        {**good, "idp_metadata": unsigned},
        {**good, "idp_metadata": metadata, "acs_urls": ["http://app.acme.example/acs"]},
        {**good, "idp_metadata": metadata, "acs_urls": ["https://app.acme.example/acs?x=1"]},
    ):
        answer = client.put("/api/admin/saml", headers=bearer(owner.access_token), json=bad)
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "request_invalid"


def test_unregistered_acs_and_unconfigured_tenant(
    client: TestClient, saml_tenant: NewTenant, make_tenant: Callable[[str], NewTenant]
) -> None:
    elsewhere = client.post(
        "/api/auth/saml/start",
        json={"tenant": str(saml_tenant.tenant_id), "acs_url": "https://evil.example/acs"},
    )
    assert elsewhere.status_code == 422
    other = make_tenant("no-sso")
    unconfigured = client.post(
        "/api/auth/saml/start", json={"tenant": str(other.tenant_id), "acs_url": ACS}
    )
    assert unconfigured.status_code == 401
    assert client.get(f"/api/auth/saml/{other.tenant_id}/metadata").status_code == 404


def test_configuring_saml_needs_a_fresh_second_factor(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, idp: str
) -> None:
    tenant = make_tenant("stale")
    _, owner = sign_in(tenant, "owner", amr=("email",))
    answer = client.put(
        "/api/admin/saml",
        headers=bearer(owner.access_token),
        json={
            "idp_metadata": httpx.get(idp + "/metadata", timeout=10).text,
            "acs_urls": [ACS],
            "allowed_domains": ["acme.example"],
        },
    )
    assert answer.status_code == 401
    assert answer.json()["code"] == "step_up_required"
