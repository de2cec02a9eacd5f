"""Magic-link sign-in: a single-use, 15-minute link, bound to its tenant, stored hashed.

Requesting a link answers the same way whether or not the address belongs to a user of the
tenant (or the tenant exists): the caller sees nothing, the audit sees everything. The gateway
also holds every answer to a fixed minimum duration, so mail latency does not show either.
Redeeming a link opens a session with `amr = ["email"]`.

Threat stopped: user enumeration; replayed, stale or cross-tenant links.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode
from uuid import UUID, uuid4

import structlog

from tenantguard.audit.chain import Outcome
from tenantguard.audit.store import AuditRecord, append
from tenantguard.clock import Clock
from tenantguard.context import PLATFORM_TENANT_ID, Principal
from tenantguard.db.pool import Database
from tenantguard.errors import InvalidCredentials, RequestInvalid, ServiceUnavailable
from tenantguard.identity import apikeys, users
from tenantguard.identity.sessions import Issued, Sessions
from tenantguard.mail import Mailer, compose

LINK_LIFETIME = timedelta(minutes=15)
_ANONYMOUS = Principal("anonymous", "")
_log = structlog.get_logger("tenantguard.auth")


@dataclass(frozen=True, slots=True)
class LinkConfig:
    sender: str
    public_url: str  # where the gateway's sign-in page lives, for the link


class MagicLinks:
    def __init__(
        self, db: Database, sessions: Sessions, mailer: Mailer, config: LinkConfig, *, clock: Clock
    ) -> None:
        self._db, self._sessions, self._mailer = db, sessions, mailer
        self._config, self._clock = config, clock

    def _audit(
        self,
        tenant_id: UUID,
        *,
        action: str,
        outcome: Outcome,
        reason: str,
        target: str,
        request_id: str,
    ) -> None:
        with self._db.tenant_transaction(tenant_id) as tx:
            append(
                tx,
                tenant_id=tenant_id,
                request_id=request_id,
                now=self._clock.now(),
                record=AuditRecord(
                    action=action,
                    outcome=outcome,
                    actor=_ANONYMOUS,
                    reason=reason,
                    target_type="user",
                    target_id=target,
                ),
            )

    def request(
        self, *, tenant_id: UUID, email: str, request_id: str, platform: bool = False
    ) -> None:
        """Send a sign-in link if `email` is a user of `tenant_id`. Never says whether it is.
        `platform` says the caller is the operators' route: each realm signs in only its own
        people, so a tenant route naming the platform realm sends nothing (and vice versa)."""
        now = self._clock.now()
        if (tenant_id == PLATFORM_TENANT_ID) != platform:
            self._audit(
                PLATFORM_TENANT_ID,
                action="auth.magic_link.request",
                outcome="failure",
                reason="wrong_realm",
                target="",
                request_id=request_id,
            )
            return
        try:
            address = users.normal_email(email)
        except RequestInvalid:
            address = ""
        with self._db.tenant_transaction(tenant_id) as tx:
            exists = tx.execute(
                "SELECT 1 FROM tenantguard.tenants WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
            user = users.find(tx, tenant_id, address) if exists and address else None
            secret = None
            if user is not None:
                new = apikeys.generate("ml")
                tx.execute(
                    "INSERT INTO tenantguard.magic_links (tenant_id, id, user_id, token_hash,"
                    " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (tenant_id, uuid4(), user.id, new.key_hash, now, now + LINK_LIFETIME),
                )
                secret = new.secret
        if user is None or secret is None:
            self._audit(
                tenant_id if exists else PLATFORM_TENANT_ID,
                action="auth.magic_link.request",
                outcome="failure",
                reason="unknown_user" if exists else "unknown_tenant",
                target="",
                request_id=request_id,
            )
            return
        base = self._config.public_url.rstrip("/")
        if platform:
            link = f"{base}/operator/auth/magic?" + urlencode({"token": secret})
        else:
            link = f"{base}/auth/magic?" + urlencode({"tenant": str(tenant_id), "token": secret})
        body = (
            f"Sign in to tenantguard with this link. It works once, for 15 minutes:\n\n"
            f"{link}\n\nIf you did not ask for it, ignore this message.\n"
        )
        try:
            self._mailer.send(
                compose(
                    sender=self._config.sender,
                    to=user.email,
                    subject="Your sign-in link",
                    body=body,
                )
            )
        except ServiceUnavailable:
            _log.warning("auth.magic_link.mail_failed")
            self._audit(
                tenant_id,
                action="auth.magic_link.request",
                outcome="failure",
                reason="mail_failed",
                target=str(user.id),
                request_id=request_id,
            )
            return
        self._audit(
            tenant_id,
            action="auth.magic_link.request",
            outcome="success",
            reason="",
            target=str(user.id),
            request_id=request_id,
        )

    def redeem(
        self, *, tenant_id: UUID, token: str, request_id: str, platform: bool = False
    ) -> Issued:
        """Use a link once; open a session. Every failure is `InvalidCredentials`."""
        now = self._clock.now()
        if (tenant_id == PLATFORM_TENANT_ID) != platform:
            raise InvalidCredentials("wrong_realm")
        token_hash = apikeys.parse(token, kind="ml")
        with self._db.tenant_transaction(tenant_id) as tx:
            row = tx.execute(
                "SELECT id, user_id, expires_at, used_at FROM tenantguard.magic_links"
                " WHERE tenant_id = %s AND token_hash = %s FOR UPDATE",
                (tenant_id, token_hash),
            ).fetchone()
            if row is None:
                raise InvalidCredentials("unknown_link")
            link_id, user_id, expires_at, used_at = row
            credential = f"magic_link:{link_id}"
            if users.find_by_id(tx, tenant_id, user_id) is None:
                raise InvalidCredentials(
                    "user_removed", tenant_id=tenant_id, credential_id=credential
                )
            if used_at is not None:
                raise InvalidCredentials("link_used", tenant_id=tenant_id, credential_id=credential)
            if expires_at <= now:
                raise InvalidCredentials(
                    "link_expired", tenant_id=tenant_id, credential_id=credential
                )
            # Using one link burns every other outstanding link of the user.
            tx.execute(
                "UPDATE tenantguard.magic_links SET used_at = %s WHERE tenant_id = %s"
                " AND user_id = %s AND used_at IS NULL",
                (now, tenant_id, user_id),
            )
        return self._sessions.start(tenant_id, user_id, amr=("email",), request_id=request_id)
