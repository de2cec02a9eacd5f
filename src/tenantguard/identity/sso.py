"""What single sign-on by OIDC and by SAML share once the identity provider has vouched for an
email address: the address must be in one of the tenant's domains, and the person must be a
user of the tenant, or be provisioned just in time if the tenant asked for it.

Threat stopped: an identity provider (or an account at it) of another organisation signing in
to this tenant; silent account creation when the tenant did not opt in.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

from tenantguard.audit.store import record_action
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.db.pool import Database
from tenantguard.errors import InvalidCredentials, RequestInvalid
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued, Sessions

_LOOPBACK_NAMES = {"localhost"}
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(
    url: str, *, what: str, allow_loopback: bool = False, allow_query: bool = False
) -> str:
    """An absolute https URL with no fragment or credentials (and no query unless allowed),
    whose host, if an IP address, is a global one. Plain http and loopback hosts only with
    `allow_loopback` (the UNSAFE_LOOPBACK_SSO setting, for local test providers); `what`
    names the URL in the refusal. (Names that resolve to private addresses are the egress
    guard's to refuse when the request is made.)"""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.fragment or "#" in url or parts.username or parts.password:
        raise RequestInvalid(f"{what} is an absolute https URL.")
    if parts.query and not allow_query:
        raise RequestInvalid(f"{what} has no query part.")
    if _loopback(host):
        if not allow_loopback:
            raise RequestInvalid(f"{what} may not point at this machine.")
        if parts.scheme not in ("http", "https"):
            raise RequestInvalid(f"{what} is reached over https.")
        return url
    if parts.scheme != "https":
        raise RequestInvalid(f"{what} is reached over https.")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if not address.is_global:
        raise RequestInvalid(f"{what} may not point at a private or reserved address.")
    return url


def binding_hash(binding: str) -> bytes:
    return hashlib.sha256(b"tenantguard.sso.binding\x00" + binding.encode()).digest()


def check_binding(stored: object, presented: str, *, tenant_id: UUID) -> None:
    """The browser that finishes a sign-in must present the binding `start` gave the app for
    the browser that began it (login CSRF). Checked after the login in flight is used up, so
    a wrong binding burns the login."""
    if not isinstance(stored, bytes | memoryview) or not hmac.compare_digest(
        bytes(stored), binding_hash(presented)
    ):
        raise InvalidCredentials("binding_mismatch", tenant_id=tenant_id)


def check_domain(domain: str) -> str:
    """An ASCII DNS name of two labels or more (an email domain a tenant claims)."""
    value = domain.strip().lower()
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise RequestInvalid("An email domain is a DNS name such as acme.example.")
    return value


def domain_email(email: object, domains: tuple[str, ...], *, tenant_id: UUID) -> str:
    """The normalised address, if it is one and its domain is one of `domains`."""
    if not isinstance(email, str):
        raise InvalidCredentials("no_email", tenant_id=tenant_id)
    try:
        address = users.normal_email(email)
    except RequestInvalid as exc:
        raise InvalidCredentials("bad_email", tenant_id=tenant_id) from exc
    if address.rsplit("@", 1)[1] not in domains:
        raise InvalidCredentials("domain_not_allowed", tenant_id=tenant_id)
    return address


def sign_in(
    db: Database,
    sessions: Sessions,
    tenant_id: UUID,
    email: str,
    *,
    jit_provisioning: bool,
    default_role: str,
    via: str,
    request_id: str,
    now: datetime,
) -> Issued:
    """Open a session for the tenant's user `email` (provisioned first, if allowed), with the
    method `via` (`oidc`, `saml`) as its authentication method. Tenants only: operators of
    the platform realm sign in by their own route."""
    if tenant_id == PLATFORM_TENANT_ID:
        raise InvalidCredentials("wrong_realm")
    ctx = TenantContext(tenant_id, Principal("system", via), frozenset(), request_id)
    with db.tenant_transaction(tenant_id) as tx:
        user = users.find(tx, tenant_id, email)
        if user is None:
            if not jit_provisioning:
                raise InvalidCredentials("unknown_user", tenant_id=tenant_id)
            user = users.add(tx, ctx, email=email, role=default_role, now=now)
            record_action(
                tx,
                ctx,
                action="user.provision",
                target_type="user",
                target_id=str(user.id),
                now=now,
                payload={"via": via},
            )
    return sessions.start(tenant_id, user.id, amr=(via,), request_id=request_id)
