"""SAML 2.0 single sign-on per tenant, as a service provider (pysaml2, signatures by xmlsec1).

Each tenant is its own SP: entity id `<public_url>/api/auth/saml/<tenant>/metadata`, assertion
consumer service URLs the tenant registers (its app receives the IdP's POST and forwards it),
and one identity provider, from the metadata the tenant's admin uploads. `start` records a
login in flight (its RelayState hashed, the AuthnRequest id and the ACS URL, for ten minutes,
single-use) and returns the IdP's redirect URL. `finish` takes the IdP's response and accepts
it only if, all of them:

- the login in flight exists, is unused and unexpired (then it is used up, whatever follows),
  and the caller presents the binding value `start` gave the app for that browser;
- the response is a success answering exactly that request (`InResponseTo`);
- every assertion is signed by a key of the IdP's metadata (never a key the message carries),
  checked by xmlsec1; an unsigned assertion is refused even inside a signed response;
- the issuer is the tenant's IdP, the audience is this tenant's SP, and the bearer
  confirmation's recipient is the ACS URL of the request;
- `NotBefore` / `NotOnOrAfter` of the conditions and of the confirmation hold now (a 60 s
  leeway), checked by pysaml2 against the system clock and again here against ours;
- the assertion id was never accepted before for this tenant (replay);
- the email (an emailAddress NameID, or the `mail`/`email` attribute) is in one of the
  tenant's domains, and the person is a user (or is provisioned, if the tenant asked for it).

Every refusal is `InvalidCredentials` with its reason for the audit. XML is parsed by pysaml2
through defusedxml: no DTDs, no entities, no external references.

Threat stopped: forged, unsigned, wrapped, replayed, stale or misdirected assertions; an
assertion for another SP (or another tenant) presented here; login CSRF (the RelayState).
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS

from tenantguard.clock import Clock
from tenantguard.db.pool import Database
from tenantguard.errors import InvalidCredentials, NotFound, RequestInvalid, ServiceUnavailable
from tenantguard.identity import sso
from tenantguard.identity.sessions import Issued, Sessions

LOGIN_LIFETIME = timedelta(minutes=10)
LEEWAY = timedelta(seconds=60)
MAX_METADATA_CHARS = 262_144
_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
_EMAIL_ATTRIBUTES = ("mail", "email", "emailAddress")


class SamlUnavailable(ServiceUnavailable):
    code = "saml_unavailable"
    title = "SAML unavailable"
    default_detail = "SAML sign-in is not available on this deployment (xmlsec1 is missing)."


@dataclass(frozen=True, slots=True)
class SamlConfig:
    idp_metadata: str
    idp_entity_id: str
    acs_urls: tuple[str, ...]
    allowed_domains: tuple[str, ...]
    jit_provisioning: bool
    default_role: str


def sp_entity_id(public_url: str, tenant_id: UUID) -> str:
    return f"{public_url.rstrip('/')}/api/auth/saml/{tenant_id}/metadata"


def _hash(relay_state: str) -> bytes:
    return hashlib.sha256(relay_state.encode()).digest()


def _stamp(value: str | None) -> datetime | None:
    """An xs:dateTime of SAML (UTC, `Z`, optional fraction) as an aware datetime."""
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


class SamlServiceProvider:
    """The service provider of every tenant; one instance per gateway."""

    def __init__(
        self,
        db: Database,
        sessions: Sessions,
        *,
        clock: Clock,
        public_url: str,
        xmlsec_binary: str | None = None,
        allow_loopback: bool = False,
    ) -> None:
        self._db, self._sessions, self._clock = db, sessions, clock
        self._public_url, self._allow_loopback = public_url, allow_loopback
        self._xmlsec = xmlsec_binary or shutil.which("xmlsec1")

    def entity_id(self, tenant_id: UUID) -> str:
        return sp_entity_id(self._public_url, tenant_id)

    def _client(
        self, tenant_id: UUID, *, idp_metadata: str, acs_urls: tuple[str, ...]
    ) -> Saml2Client:
        """A pysaml2 client for one tenant, built per use (a few ms: no cache to go stale)."""
        if self._xmlsec is None:
            raise SamlUnavailable()
        settings: dict[str, Any] = {
            "entityid": self.entity_id(tenant_id),
            "xmlsec_binary": self._xmlsec,
            "metadata": {"inline": [idp_metadata]},
            "accepted_time_diff": int(LEEWAY.total_seconds()),
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(u, BINDING_HTTP_POST) for u in acs_urls]
                    },
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "allow_unsolicited": False,
                    "authn_requests_signed": False,
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                    "only_use_keys_in_metadata": True,
                }
            },
        }
        return Saml2Client(SPConfig().load(settings))

    def check_metadata(self, tenant_id: UUID, idp_metadata: str) -> str:
        """The entity id of the one IdP `idp_metadata` describes; refused unless it has an
        HTTP-Redirect single sign-on endpoint and a signing certificate."""
        try:
            client = self._client(
                tenant_id, idp_metadata=idp_metadata, acs_urls=("https://sp.invalid/acs",)
            )
            idps = list(client.metadata.identity_providers())
        except SamlUnavailable:
            raise
        except Exception as exc:  # pysaml2 raises many kinds for bad XML
            raise RequestInvalid("The IdP metadata is not valid SAML metadata.") from exc
        if len(idps) != 1:
            raise RequestInvalid("The metadata must describe exactly one identity provider.")
        entity = str(idps[0])
        endpoints = list(client.metadata.single_sign_on_service(entity, BINDING_HTTP_REDIRECT))
        if not endpoints:
            raise RequestInvalid("The identity provider has no HTTP-Redirect sign-on endpoint.")
        for endpoint in endpoints:
            sso.check_url(
                str(endpoint.get("location", "")),
                what="The IdP's sign-on URL",
                allow_loopback=self._allow_loopback,
                allow_query=True,
            )
        if not client.metadata.certs(entity, "idpsso", use="signing"):
            raise RequestInvalid("The identity provider's metadata names no signing key.")
        return entity

    def metadata(self, tenant_id: UUID, config: SamlConfig) -> str:
        """This tenant's SP metadata, for its IdP."""
        client = self._client(tenant_id, idp_metadata=config.idp_metadata, acs_urls=config.acs_urls)
        return str(entity_descriptor(client.config))

    def start(self, tenant_id: UUID, config: SamlConfig, *, acs_url: str) -> tuple[str, str]:
        """The IdP's redirect URL, and the binding value the app keeps for the browser that
        started (a cookie): the ACS step needs it, so the IdP's form alone signs no one in."""
        if acs_url not in config.acs_urls:
            raise RequestInvalid("That assertion consumer service URL is not registered.")
        client = self._client(tenant_id, idp_metadata=config.idp_metadata, acs_urls=config.acs_urls)
        relay_state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        request_id, info = client.prepare_for_authenticate(
            entityid=config.idp_entity_id,
            relay_state=relay_state,
            binding=BINDING_HTTP_REDIRECT,
            assertion_consumer_service_url=acs_url,
        )
        now = self._clock.now()
        with self._db.tenant_transaction(tenant_id) as tx:
            tx.execute(
                "INSERT INTO tenantguard.saml_logins (tenant_id, relay_hash, request_id, acs_url,"
                " created_at, expires_at, binding_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    tenant_id,
                    _hash(relay_state),
                    request_id,
                    acs_url,
                    now,
                    now + LOGIN_LIFETIME,
                    sso.binding_hash(binding),
                ),
            )
        return str(dict(info["headers"])["Location"]), binding

    def _use_login(
        self, tenant_id: UUID, relay_state: str, binding: str, now: datetime
    ) -> tuple[str, str]:
        """Use up the login in flight `relay_state` names: (request id, ACS URL). A wrong
        binding is refused after the login is used up (it burns the login)."""
        with self._db.tenant_transaction(tenant_id) as tx:
            row = tx.execute(
                "SELECT request_id, acs_url, expires_at, used_at, binding_hash"
                " FROM tenantguard.saml_logins WHERE tenant_id = %s AND relay_hash = %s"
                " FOR UPDATE",
                (tenant_id, _hash(relay_state)),
            ).fetchone()
            if row is None:
                raise InvalidCredentials("unknown_relay_state", tenant_id=tenant_id)
            request_id, acs_url, expires_at, used_at, stored_binding = row
            if used_at is not None or expires_at <= now:
                raise InvalidCredentials("relay_state_used_or_expired", tenant_id=tenant_id)
            tx.execute(
                "UPDATE tenantguard.saml_logins SET used_at = %s WHERE tenant_id = %s"
                " AND relay_hash = %s",
                (now, tenant_id, _hash(relay_state)),
            )
        sso.check_binding(stored_binding, binding, tenant_id=tenant_id)
        return str(request_id), str(acs_url)

    def finish(
        self,
        tenant_id: UUID,
        config: SamlConfig,
        *,
        saml_response: str,
        relay_state: str,
        binding: str,
        request_id: str,
    ) -> Issued:
        now = self._clock.now()
        authn_request_id, acs_url = self._use_login(tenant_id, relay_state, binding, now)
        assertion = self.validate(
            tenant_id,
            config,
            saml_response,
            authn_request_id=authn_request_id,
            acs_url=acs_url,
            now=now,
        )
        email = sso.domain_email(assertion.email, config.allowed_domains, tenant_id=tenant_id)
        with self._db.tenant_transaction(tenant_id) as tx:
            fresh = tx.execute(
                "INSERT INTO tenantguard.saml_assertions (tenant_id, assertion_id, accepted_at,"
                " expires_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (tenant_id, assertion.id, now, assertion.not_on_or_after),
            ).fetchone()
        if fresh is None:
            raise InvalidCredentials("assertion_replayed", tenant_id=tenant_id)
        return sso.sign_in(
            self._db,
            self._sessions,
            tenant_id,
            email,
            jit_provisioning=config.jit_provisioning,
            default_role=config.default_role,
            via="saml",
            request_id=request_id,
            now=now,
        )

    def validate(
        self,
        tenant_id: UUID,
        config: SamlConfig,
        saml_response: str,
        *,
        authn_request_id: str,
        acs_url: str,
        now: datetime,
    ) -> Assertion:
        """The accepted assertion of `saml_response` (base64, as the IdP posted it), or
        `InvalidCredentials` with the reason."""

        def denied(reason: str) -> InvalidCredentials:
            return InvalidCredentials(reason, tenant_id=tenant_id)

        client = self._client(tenant_id, idp_metadata=config.idp_metadata, acs_urls=config.acs_urls)
        refused = None
        try:
            parsed = client.parse_authn_request_response(
                saml_response, BINDING_HTTP_POST, outstanding={authn_request_id: acs_url}
            )
        except Exception as exc:  # noqa: BLE001 (pysaml2 raises dozens of kinds: all refuse)
            refused = f"saml_{type(exc).__name__}"
        if refused is not None:
            # Raised outside the handler, unchained: pysaml2's traceback (whose frames hold
            # its temporary key files open) is freed now, not at the next garbage collection.
            raise denied(refused)
        if parsed is None or parsed.assertion is None or len(parsed.assertions) != 1:
            raise denied("saml_no_single_assertion")
        found = parsed.assertion
        return _checked(
            found,
            denied,
            in_response_to=parsed.in_response_to,
            expected={
                "request": authn_request_id,
                "issuer": config.idp_entity_id,
                "audience": self.entity_id(tenant_id),
                "recipient": acs_url,
            },
            email=_email_of(parsed),
            now=now,
        )


@dataclass(frozen=True, slots=True)
class Assertion:
    """What this SP keeps of an accepted assertion."""

    id: str
    email: str | None
    not_on_or_after: datetime


def _email_of(parsed: Any) -> str | None:
    name_id = parsed.name_id
    if name_id is not None and name_id.format == NAMEID_FORMAT_EMAILADDRESS and name_id.text:
        return str(name_id.text).strip()
    attributes = parsed.ava or {}
    for name in _EMAIL_ATTRIBUTES:
        values = attributes.get(name)
        if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str):
            return values[0]
    return None


def _checked(
    assertion: Any,
    denied: Any,
    *,
    in_response_to: str | None,
    expected: dict[str, str],
    email: str | None,
    now: datetime,
) -> Assertion:
    """Our own checks, after pysaml2's: each a guardrail should a pysaml2 default change."""
    conditions = assertion.conditions
    audiences = [
        (a.text or "").strip()
        for restriction in (conditions.audience_restriction if conditions else [])
        for a in restriction.audience
    ]
    bearers = [
        c.subject_confirmation_data
        for c in (assertion.subject.subject_confirmation if assertion.subject else [])
        if c.method == _BEARER and c.subject_confirmation_data is not None
    ]
    until = [_stamp(conditions.not_on_or_after if conditions else None)]
    until += [_stamp(b.not_on_or_after) for b in bearers]
    limits = [t for t in until if t is not None]
    not_before = _stamp(conditions.not_before if conditions else None)
    checks = [
        (assertion.signature is not None, "assertion_unsigned"),
        (in_response_to == expected["request"], "wrong_in_response_to"),
        (
            assertion.issuer is not None
            and (assertion.issuer.text or "").strip() == expected["issuer"],
            "wrong_issuer",
        ),
        (expected["audience"] in audiences, "wrong_audience"),
        (len(bearers) >= 1, "no_bearer_confirmation"),
        (all(b.recipient == expected["recipient"] for b in bearers), "wrong_recipient"),
        (
            all(b.in_response_to == expected["request"] for b in bearers),
            "wrong_in_response_to",
        ),
        (bool(limits) and min(limits) > now - LEEWAY, "assertion_expired"),
        (not_before is None or not_before <= now + LEEWAY, "assertion_not_yet_valid"),
        (bool(assertion.id) and len(assertion.id) <= 256, "bad_assertion_id"),
    ]
    for passed, reason in checks:
        if not passed:
            raise denied(reason)
    return Assertion(id=str(assertion.id), email=email, not_on_or_after=min(limits))


def load_config(db: Database, tenant_id: UUID) -> SamlConfig:
    with db.tenant_transaction(tenant_id) as tx:
        row = tx.execute(
            "SELECT idp_metadata, idp_entity_id, acs_urls, allowed_domains, jit_provisioning,"
            " default_role FROM tenantguard.saml_configs WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
    if row is None:
        raise NotFound()
    metadata, entity, acs_urls, domains, jit, role = row
    return SamlConfig(
        str(metadata), str(entity), tuple(acs_urls), tuple(domains), bool(jit), str(role)
    )
