"""Database-backed sessions, 15-minute access tokens, and rotating refresh tokens.

A session is the unit of revocation. Every request made with an access token checks its
session (not revoked, not expired, its user still there, the role still granting the
capabilities), so revocation, removal and role changes take effect on the next request, not
when a token expires. Refresh tokens are opaque (`tg_rt_…`), stored as SHA-256 only, and
rotate on every use; presenting one that was already used revokes the whole session (its
family) and writes an audit event, because only a stolen copy can be presented twice.

Threat stopped: stolen tokens outliving a revocation; replayed refresh tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from tenantguard.audit.store import record_action
from tenantguard.authz import ROLE_ACTIONS
from tenantguard.clock import Clock
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import InvalidCredentials, NotFound
from tenantguard.identity import apikeys, tokens, totp, users
from tenantguard.settings import TokenConfig

SESSION_LIFETIME = timedelta(hours=12)
LAST_SEEN_RESOLUTION = timedelta(seconds=60)
_COLUMNS = (
    "id, user_id, created_at, expires_at, auth_time, amr, last_seen_at, revoked_at, revoke_reason"
)


@dataclass(frozen=True, slots=True)
class Session:
    id: UUID
    user_id: UUID
    created_at: datetime
    expires_at: datetime
    auth_time: datetime
    amr: tuple[str, ...]
    last_seen_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


@dataclass(frozen=True, slots=True)
class Issued:
    """A sign-in's or refresh's result: the tokens are shown to the client once."""

    session: Session
    access_token: str
    refresh_token: str
    expires_in: int


def _session(row: tuple[object, ...] | None) -> Session:
    if row is None:
        raise NotFound()
    values = list(row)
    values[5] = tuple(values[5])  # type: ignore[arg-type]
    return Session(*values)  # type: ignore[arg-type]


class PublicKeyCache:
    """The platform's verifying keys, reloaded every `ttl` seconds and on an unknown kid, but
    at most once per `min_reload` seconds (random kids must not become a database flood)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        ttl: float = 60.0,
        min_reload: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db, self._clock, self._ttl, self._min = db, clock, ttl, min_reload
        self._monotonic = monotonic
        self._keys: dict[str, signing.PublicKey] = {}
        self._loaded = float("-inf")
        self._lock = threading.Lock()

    def _reload(self) -> None:
        with self._db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            found = signing.public_keys(tx, now=self._clock.now())
        self._keys = {k.kid: k for k in found}
        self._loaded = self._monotonic()

    def get(self, kid: str) -> signing.PublicKey | None:
        with self._lock:
            age = self._monotonic() - self._loaded
            if age > self._ttl or (kid not in self._keys and age > self._min):
                self._reload()
            return self._keys.get(kid)


class Sessions:
    """Starting, refreshing, checking and revoking sessions, and issuing their tokens."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        config: TokenConfig,
        *,
        clock: Clock,
        lifetime: timedelta = SESSION_LIFETIME,
    ) -> None:
        self._db, self._keyring, self._config = db, keyring, config
        self._clock, self._lifetime = clock, lifetime
        self.keys = PublicKeyCache(db, clock)

    def _signing_key(self) -> signing.SigningKey:
        """Fetched before anything is written: no signing key means no session at all."""
        with self._db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            return signing.active(tx, self._keyring)

    def _access(
        self, key: signing.SigningKey, tenant_id: UUID, session: Session, user: users.User
    ) -> str:
        return tokens.issue(
            key,
            self._config,
            subject=user.id,
            tenant_id=tenant_id,
            session_id=session.id,
            capabilities=ROLE_ACTIONS[user.role],
            role=user.role,
            auth_time=session.auth_time,
            amr=session.amr,
            now=self._clock.now(),
        )

    @staticmethod
    def _new_refresh(
        conn: Connection, tenant_id: UUID, session_id: UUID, generation: int, now: datetime
    ) -> str:
        new = apikeys.generate("rt")
        conn.execute(
            "INSERT INTO tenantguard.refresh_tokens (tenant_id, session_id, generation,"
            " token_hash, issued_at) VALUES (%s, %s, %s, %s, %s)",
            (tenant_id, session_id, generation, new.key_hash, now),
        )
        return new.secret

    def start(
        self, tenant_id: UUID, user_id: UUID, *, amr: tuple[str, ...], request_id: str
    ) -> Issued:
        """Open a session for a user who has just proved who they are (by `amr`)."""
        key = self._signing_key()
        now = self._clock.now()
        with self._db.tenant_transaction(tenant_id) as tx:
            try:
                user = users.get(tx, tenant_id, user_id)
            except NotFound as exc:
                raise InvalidCredentials("user_removed", tenant_id=tenant_id) from exc
            session = _session(
                tx.execute(
                    "INSERT INTO tenantguard.sessions (tenant_id, id, user_id, created_at,"
                    " expires_at, auth_time, amr, last_seen_at) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                    f" %s) RETURNING {_COLUMNS}",
                    (tenant_id, uuid4(), user_id, now, now + self._lifetime, now, list(amr), now),
                ).fetchone()
            )
            refresh = self._new_refresh(tx, tenant_id, session.id, 1, now)
            ctx = TenantContext(tenant_id, Principal("user", str(user_id)), frozenset(), request_id)
            record_action(
                tx,
                ctx,
                action="session.start",
                target_type="session",
                target_id=str(session.id),
                now=now,
                payload={"amr": list(amr)},
            )
        access = self._access(key, tenant_id, session, user)
        return Issued(session, access, refresh, int(tokens.ACCESS_LIFETIME.total_seconds()))

    def refresh(self, presented: str, *, request_id: str) -> Issued:
        """Rotate a refresh token. A token presented a second time revokes its session."""
        key = self._signing_key()
        now = self._clock.now()
        token_hash = apikeys.parse(presented, kind="rt")
        with self._db.system_transaction() as tx:
            rows = tx.execute(
                "SELECT tenant_id, session_id, generation, used_at"
                " FROM tenantguard.resolve_refresh_token(%s)",
                (token_hash,),
            ).fetchall()
        if len(rows) != 1:
            raise InvalidCredentials("unknown")
        tenant_id, session_id, generation, used_at = rows[0]
        who = {"tenant_id": tenant_id, "credential_id": f"session:{session_id}"}
        reused = False
        with self._db.tenant_transaction(tenant_id) as tx:
            session = _session(
                tx.execute(
                    f"SELECT {_COLUMNS} FROM tenantguard.sessions WHERE tenant_id = %s AND id = %s"
                    " FOR UPDATE",
                    (tenant_id, session_id),
                ).fetchone()
            )
            ctx = TenantContext(
                tenant_id, Principal("user", str(session.user_id)), frozenset(), request_id
            )
            # Read again under the session's lock: a concurrent refresh with the same token
            # has either committed (used_at is set: this is a reuse) or not started.
            current = tx.execute(
                "SELECT used_at FROM tenantguard.refresh_tokens WHERE tenant_id = %s"
                " AND session_id = %s AND generation = %s",
                (tenant_id, session_id, generation),
            ).fetchone()
            used_at = current[0] if current is not None else used_at
            if used_at is not None:
                reused = True
                if session.revoked_at is None:
                    self._revoke_rows(
                        tx,
                        tenant_id,
                        where="id = %s",
                        value=session_id,
                        reason="refresh_reuse",
                        now=now,
                    )
                record_action(
                    tx,
                    ctx,
                    action="session.refresh_reuse",
                    outcome="denied",
                    reason="refresh_reuse",
                    target_type="session",
                    target_id=str(session_id),
                    now=now,
                    payload={"generation": generation},
                )
            else:
                user = self._check(tx, tenant_id, session, now)
                tx.execute(
                    "UPDATE tenantguard.refresh_tokens SET used_at = %s WHERE tenant_id = %s"
                    " AND session_id = %s AND generation = %s",
                    (now, tenant_id, session_id, generation),
                )
                refresh = self._new_refresh(tx, tenant_id, session_id, generation + 1, now)
                record_action(
                    tx,
                    ctx,
                    action="session.refresh",
                    target_type="session",
                    target_id=str(session_id),
                    now=now,
                    payload={"generation": generation + 1},
                )
        if reused:  # raised after the revocation committed
            raise InvalidCredentials("refresh_reuse", **who)
        access = self._access(key, tenant_id, session, user)
        return Issued(session, access, refresh, int(tokens.ACCESS_LIFETIME.total_seconds()))

    @staticmethod
    def _check(conn: Connection, tenant_id: UUID, session: Session, now: datetime) -> users.User:
        def denied(reason: str) -> InvalidCredentials:
            return InvalidCredentials(
                reason, tenant_id=tenant_id, credential_id=f"session:{session.id}"
            )

        if session.revoked_at is not None:
            raise denied("session_revoked")
        if session.expires_at <= now:
            raise denied("session_expired")
        try:
            return users.get(conn, tenant_id, session.user_id)
        except NotFound as exc:
            raise denied("user_removed") from exc

    def authenticate(self, token: str, *, request_id: str) -> TenantContext:
        """The context of a request made with an access token, checked against its session."""
        now = self._clock.now()
        claims = tokens.verify(token, self._config, key_for=self.keys.get, now=now)
        with self._db.tenant_transaction(claims.tenant_id) as tx:
            # The tenant's MFA policy rides along: one round trip, not two, per request.
            row = tx.execute(
                f"SELECT {_COLUMNS}, (SELECT m.roles FROM tenantguard.mfa_policies m"
                " WHERE m.tenant_id = s.tenant_id) FROM tenantguard.sessions s"
                " WHERE s.tenant_id = %s AND s.id = %s",
                (claims.tenant_id, claims.session_id),
            ).fetchone()
            if row is None:  # a signed token naming no session: the same 401 as any other
                raise InvalidCredentials("unknown_session", tenant_id=claims.tenant_id)
            session, policy = _session(row[:-1]), row[-1]
            user = self._check(tx, claims.tenant_id, session, now)
            if user.id != claims.subject:
                raise InvalidCredentials("subject_mismatch", tenant_id=claims.tenant_id)
            pending = user.role in totp.required_roles(claims.tenant_id, policy) and not (
                totp.SECOND_FACTORS & set(session.amr)
            )
            if now - session.last_seen_at >= LAST_SEEN_RESOLUTION:
                tx.execute(
                    "UPDATE tenantguard.sessions SET last_seen_at = %s WHERE tenant_id = %s"
                    " AND id = %s",
                    (now, claims.tenant_id, session.id),
                )
        # A role change applies on the next request: the token's capabilities are capped by
        # what the user's current role grants.
        capabilities = claims.capabilities & ROLE_ACTIONS[user.role]
        return TenantContext(
            claims.tenant_id,
            Principal("user", str(user.id)),
            capabilities,
            request_id,
            session_id=session.id,
            auth_time=session.auth_time,
            amr=session.amr,
            mfa_pending=pending,
        )

    def step_up(self, ctx: TenantContext, *, code: str | None, recovery_code: str | None) -> str:
        """Check a second factor for the session `ctx` acts in; on success the session's
        `auth_time` is now and its `amr` names the factor. Returns a fresh access token."""
        if ctx.session_id is None or ctx.principal.type != "user":
            raise InvalidCredentials("no_session", tenant_id=ctx.tenant_id)
        key = self._signing_key()
        now = self._clock.now()
        try:
            return self._step_up(ctx, key, code=code, recovery_code=recovery_code, now=now)
        except InvalidCredentials as exc:
            if exc.reason == "bad_totp":
                totp.note_failure(self._db, ctx.tenant_id, UUID(ctx.principal.id), now=now)
            raise

    def _step_up(
        self,
        ctx: TenantContext,
        key: signing.SigningKey,
        *,
        code: str | None,
        recovery_code: str | None,
        now: datetime,
    ) -> str:
        assert ctx.session_id is not None  # noqa: S101 (checked by step_up)
        with self._db.tenant_transaction(ctx.tenant_id) as tx:
            session = _session(
                tx.execute(
                    f"SELECT {_COLUMNS} FROM tenantguard.sessions WHERE tenant_id = %s AND id = %s"
                    " FOR UPDATE",
                    (ctx.tenant_id, ctx.session_id),
                ).fetchone()
            )
            user = self._check(tx, ctx.tenant_id, session, now)
            method = totp.verify(
                tx,
                ctx.tenant_id,
                self._keyring,
                user.id,
                code=code,
                recovery_code=recovery_code,
                now=now,
            )
            amr = tuple(sorted({*session.amr, method}))
            session = _session(
                tx.execute(
                    "UPDATE tenantguard.sessions SET auth_time = %s, amr = %s WHERE tenant_id = %s"
                    f" AND id = %s RETURNING {_COLUMNS}",
                    (now, list(amr), ctx.tenant_id, session.id),
                ).fetchone()
            )
            record_action(
                tx,
                ctx,
                action="session.step_up",
                target_type="session",
                target_id=str(session.id),
                now=now,
                payload={"method": method},
            )
        return self._access(key, ctx.tenant_id, session, user)

    @staticmethod
    def _revoke_rows(
        conn: Connection,
        tenant_id: UUID,
        *,
        where: str,
        value: object,
        reason: str,
        now: datetime,
    ) -> int:
        rows = conn.execute(
            "UPDATE tenantguard.sessions SET revoked_at = %s, revoke_reason = %s"
            f" WHERE tenant_id = %s AND {where} AND revoked_at IS NULL RETURNING id",
            (now, reason, tenant_id, value),
        ).fetchall()
        return len(rows)

    def revoke(
        self, conn: Connection, ctx: TenantContext, session_id: UUID, *, only_user: UUID | None
    ) -> None:
        """Revoke one session (of `only_user`, when the caller may only revoke their own)."""
        now = self._clock.now()
        session = get(conn, ctx.tenant_id, session_id)
        if only_user is not None and session.user_id != only_user:
            raise NotFound()
        self._revoke_rows(
            conn, ctx.tenant_id, where="id = %s", value=session_id, reason="revoked", now=now
        )
        record_action(
            conn,
            ctx,
            action="session.revoke",
            target_type="session",
            target_id=str(session_id),
            now=now,
        )

    def revoke_user(self, conn: Connection, ctx: TenantContext, user_id: UUID) -> int:
        now = self._clock.now()
        count = self._revoke_rows(
            conn, ctx.tenant_id, where="user_id = %s", value=user_id, reason="revoked", now=now
        )
        record_action(
            conn,
            ctx,
            action="session.revoke_user",
            target_type="user",
            target_id=str(user_id),
            now=now,
            payload={"sessions": count},
        )
        return count

    def revoke_tenant(self, conn: Connection, ctx: TenantContext) -> int:
        now = self._clock.now()
        count = self._revoke_rows(
            conn, ctx.tenant_id, where="true = %s", value=True, reason="revoked", now=now
        )
        record_action(
            conn,
            ctx,
            action="session.revoke_tenant",
            target_type="tenant",
            target_id=str(ctx.tenant_id),
            now=now,
            payload={"sessions": count},
        )
        return count


def get(conn: Connection, tenant_id: UUID, session_id: UUID) -> Session:
    return _session(
        conn.execute(
            f"SELECT {_COLUMNS} FROM tenantguard.sessions WHERE tenant_id = %s AND id = %s",
            (tenant_id, session_id),
        ).fetchone()
    )


def list_sessions(conn: Connection, tenant_id: UUID, *, user_id: UUID | None) -> list[Session]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.sessions WHERE tenant_id = %s"
        " AND (%s::uuid IS NULL OR user_id = %s::uuid) ORDER BY created_at DESC LIMIT 500",
        (tenant_id, user_id, user_id),
    ).fetchall()
    return [_session(r) for r in rows]
