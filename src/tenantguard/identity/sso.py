"""What single sign-on by OIDC and by SAML share once the identity provider has vouched for an
email address: the address must be in one of the tenant's domains, and the person must be a
user of the tenant, or be provisioned just in time if the tenant asked for it.

Threat stopped: an identity provider (or an account at it) of another organisation signing in
to this tenant; silent account creation when the tenant did not opt in.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

from tenantguard.audit.store import record_action
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.db.pool import Database
from tenantguard.errors import InvalidCredentials, RequestInvalid
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued, Sessions

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_url(url: str, *, what: str) -> str:
    """An absolute https URL (http on loopback only: a local test provider), with no query,
    fragment or credentials; `what` names it in the refusal."""
    parts = urlsplit(url)
    if not parts.hostname or parts.query or parts.fragment or parts.username:
        raise RequestInvalid(f"{what} is an absolute https URL.")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        raise RequestInvalid(f"{what} is reached over https.")
    return url


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
