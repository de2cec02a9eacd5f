"""OpenID Connect single sign-on per tenant: authorization code with PKCE, state and nonce.

`start` records a login in flight (the state hashed, the nonce and the PKCE verifier, for ten
minutes, single-use) and returns the provider's authorization URL; it refuses a redirect URI the
tenant did not register (no open redirect). `finish` exchanges the code (with the verifier),
then validates the ID token: the signature against the provider's JWKS (cached, refetched once
on an unknown `kid`), an allow-listed algorithm, `iss`, `aud` (and `azp`), `exp`/`iat` with a
small leeway, and the `nonce`. The email must be verified and in one of the tenant's domains;
an unknown user is provisioned with the default role only if the tenant asked for it. Every
failure is `InvalidCredentials` with its reason for the audit.

Threat stopped: login CSRF and code injection (state, PKCE), ID-token replay (nonce), tokens of
another client or issuer, and sign-ins from the wrong organisation's accounts.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tenantguard.clock import Clock
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Database
from tenantguard.egress.check import EgressPolicy, loopback_grants
from tenantguard.egress.transport import egress_client
from tenantguard.errors import InvalidCredentials, NotFound, RequestInvalid
from tenantguard.identity import sso
from tenantguard.identity.sessions import Issued, Sessions

LOGIN_LIFETIME = timedelta(minutes=10)
LEEWAY = timedelta(seconds=60)
ID_TOKEN_ALGORITHMS = ["RS256", "ES256", "Ed25519", "EdDSA", "PS256"]


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str | None
    redirect_uris: tuple[str, ...]
    allowed_domains: tuple[str, ...]
    jit_provisioning: bool
    default_role: str


OIDC_CLIENT_SECRET = EncryptedColumn("oidc_configs", "client_secret_sealed", ("tenant_id",))
_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")


def check_issuer(issuer: str, *, allow_loopback: bool = False) -> str:
    """https, with a global (or DNS) host; http on loopback only when allowed (tests)."""
    return sso.check_url(issuer, what="An issuer", allow_loopback=allow_loopback).rstrip("/")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class OidcClient:
    """The relying party: one instance per gateway, provider metadata and keys cached."""

    def __init__(
        self,
        db: Database,
        sessions: Sessions,
        *,
        clock: Clock,
        http: httpx.Client | None = None,
        allow_loopback: bool = False,
    ) -> None:
        self._db, self._sessions, self._clock = db, sessions, clock
        self._allow_loopback = allow_loopback
        # Discovery, keys and token calls go out through the egress guard like every outbound
        # call: an issuer whose name resolves to an internal address is refused at connect.
        grants = loopback_grants() if allow_loopback else ()
        self._http = http or egress_client(EgressPolicy(grants=grants), follow_redirects=False)
        self._metadata: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, KeySet] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._http.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidCredentials("provider_unreachable") from exc
        if not isinstance(document, dict):
            raise InvalidCredentials("provider_bad_document")
        return document

    def metadata(self, issuer: str) -> dict[str, Any]:
        """The provider's discovery document, checked before it is cached: its issuer is the
        configured one, and every endpoint it names is a URL we would accept as an issuer
        (https, no private address literals): a hostile document cannot aim our requests."""
        with self._lock:
            found = self._metadata.get(issuer)
        if found is None:
            found = self._get_json(issuer + "/.well-known/openid-configuration")
            named = found.get("issuer")
            if not isinstance(named, str) or named.rstrip("/") != issuer:
                raise InvalidCredentials("issuer_mismatch")
            for field in _ENDPOINTS:
                url = found.get(field)
                if not isinstance(url, str):
                    raise InvalidCredentials("provider_bad_document")
                try:
                    sso.check_url(
                        url, what=field, allow_loopback=self._allow_loopback, allow_query=True
                    )
                except RequestInvalid as exc:
                    raise InvalidCredentials("provider_bad_endpoint") from exc
            with self._lock:
                self._metadata[issuer] = found
        return found

    def _key_set(self, issuer: str, *, refresh: bool) -> KeySet:
        with self._lock:
            keys = None if refresh else self._keys.get(issuer)
        if keys is None:
            document = self._get_json(str(self.metadata(issuer)["jwks_uri"]))
            try:
                keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError) as exc:
                raise InvalidCredentials("provider_bad_keys") from exc
            with self._lock:
                self._keys[issuer] = keys
        return keys

    def start(self, tenant_id: UUID, config: OidcConfig, *, redirect_uri: str) -> tuple[str, str]:
        """The provider's authorization URL, and the binding value the app keeps for the
        browser that started (a cookie): the callback needs it (login CSRF)."""
        if redirect_uri not in config.redirect_uris:
            raise RequestInvalid("That redirect URI is not registered for this tenant.")
        endpoint = str(self.metadata(config.issuer)["authorization_endpoint"])
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, binding = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
        now = self._clock.now()
        with self._db.tenant_transaction(tenant_id) as tx:
            tx.execute(
                "INSERT INTO tenantguard.oidc_logins (tenant_id, state_hash, nonce, code_verifier,"
                " redirect_uri, created_at, expires_at, binding_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    tenant_id,
                    hashlib.sha256(state.encode()).digest(),
                    nonce,
                    verifier,
                    redirect_uri,
                    now,
                    now + LOGIN_LIFETIME,
                    sso.binding_hash(binding),
                ),
            )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": config.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid email",
                "state": state,
                "nonce": nonce,
                "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in endpoint else "?"
        return f"{endpoint}{separator}{query}", binding

    def finish(
        self,
        tenant_id: UUID,
        config: OidcConfig,
        *,
        state: str,
        code: str,
        binding: str,
        request_id: str,
    ) -> Issued:
        now = self._clock.now()
        with self._db.tenant_transaction(tenant_id) as tx:
            row = tx.execute(
                "SELECT nonce, code_verifier, redirect_uri, expires_at, used_at, binding_hash"
                " FROM tenantguard.oidc_logins WHERE tenant_id = %s AND state_hash = %s"
                " FOR UPDATE",
                (tenant_id, hashlib.sha256(state.encode()).digest()),
            ).fetchone()
            if row is None:
                raise InvalidCredentials("unknown_state", tenant_id=tenant_id)
            nonce, verifier, redirect_uri, expires_at, used_at, stored_binding = row
            if used_at is not None or expires_at <= now:
                raise InvalidCredentials("state_used_or_expired", tenant_id=tenant_id)
            tx.execute(
                "UPDATE tenantguard.oidc_logins SET used_at = %s WHERE tenant_id = %s"
                " AND state_hash = %s",
                (now, tenant_id, hashlib.sha256(state.encode()).digest()),
            )
        sso.check_binding(stored_binding, binding, tenant_id=tenant_id)
        id_token = self._exchange(
            config,
            code=code,
            verifier=str(verifier),
            redirect_uri=str(redirect_uri),
            tenant_id=tenant_id,
        )
        claims = self.validate_id_token(
            id_token, config, nonce=str(nonce), now=now, tenant_id=tenant_id
        )
        email = self._email(claims, config, tenant_id)
        return self._sign_in(tenant_id, config, email, request_id=request_id, now=now)

    def _exchange(
        self, config: OidcConfig, *, code: str, verifier: str, redirect_uri: str, tenant_id: UUID
    ) -> str:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": config.client_id,
            "code_verifier": verifier,
        }
        endpoint = str(self.metadata(config.issuer)["token_endpoint"])
        try:
            if config.client_secret:  # client_secret_basic, the OIDC default
                response = self._http.post(
                    endpoint, data=form, auth=(config.client_id, config.client_secret)
                )
            else:  # a public client: PKCE alone
                response = self._http.post(endpoint, data=form)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidCredentials("token_exchange_failed", tenant_id=tenant_id) from exc
        token = body.get("id_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str):
            raise InvalidCredentials("token_exchange_refused", tenant_id=tenant_id)
        return token

    def validate_id_token(
        self, id_token: str, config: OidcConfig, *, nonce: str, now: datetime, tenant_id: UUID
    ) -> dict[str, Any]:
        def denied(reason: str) -> InvalidCredentials:
            return InvalidCredentials(reason, tenant_id=tenant_id)

        decoded = None
        for refresh in (False, True):  # an unknown kid: refetch the keys once
            try:
                decoded = jwt.decode(
                    id_token,
                    self._key_set(config.issuer, refresh=refresh),
                    algorithms=ID_TOKEN_ALGORITHMS,
                )
                break
            except (JoseError, ValueError) as exc:
                if refresh:
                    raise denied("bad_id_token_signature") from exc
        assert decoded is not None  # noqa: S101 (the loop either decoded or raised)
        claims = decoded.claims
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        stamp, slack = now.timestamp(), LEEWAY.total_seconds()
        checks = [
            (str(claims.get("iss", "")).rstrip("/") == config.issuer, "wrong_issuer"),
            (config.client_id in audiences, "wrong_audience"),
            (len(audiences) == 1 or claims.get("azp") == config.client_id, "wrong_azp"),
            (isinstance(claims.get("exp"), int) and claims["exp"] > stamp - slack, "expired"),
            (
                isinstance(claims.get("iat"), int) and claims["iat"] <= stamp + slack,
                "issued_in_the_future",
            ),
            (
                "nbf" not in claims
                or (isinstance(claims["nbf"], int) and claims["nbf"] <= stamp + slack),
                "not_yet_valid",
            ),
            (claims.get("nonce") == nonce, "wrong_nonce"),
        ]
        for passed, reason in checks:
            if not passed:
                raise denied(reason)
        return dict(claims)

    @staticmethod
    def _email(claims: dict[str, Any], config: OidcConfig, tenant_id: UUID) -> str:
        if claims.get("email_verified") is not True:
            raise InvalidCredentials("email_not_verified", tenant_id=tenant_id)
        return sso.domain_email(claims.get("email"), config.allowed_domains, tenant_id=tenant_id)

    def _sign_in(
        self, tenant_id: UUID, config: OidcConfig, email: str, *, request_id: str, now: datetime
    ) -> Issued:
        return sso.sign_in(
            self._db,
            self._sessions,
            tenant_id,
            email,
            jit_provisioning=config.jit_provisioning,
            default_role=config.default_role,
            via="oidc",
            request_id=request_id,
            now=now,
        )


def load_config(db: Database, tenant_id: UUID, *, keyring: Keyring | None = None) -> OidcConfig:
    """The tenant's configuration; with `keyring`, its client secret opened too (only the
    callback needs it: starting a sign-in never decrypts it)."""
    with db.tenant_transaction(tenant_id) as tx:
        row = tx.execute(
            "SELECT issuer, client_id, redirect_uris, allowed_domains, jit_provisioning,"
            " default_role, client_secret_sealed, client_secret_name"
            " FROM tenantguard.oidc_configs WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
        if row is None:
            raise NotFound()
        issuer, client_id, redirect_uris, domains, jit, role, sealed, legacy_name = row
        if sealed is None and legacy_name is not None:
            # Configured before the secret moved into the configuration: configure it again.
            raise InvalidCredentials("client_secret_needs_reconfiguring", tenant_id=tenant_id)
        secret = None
        if keyring is not None and sealed is not None:
            opened = OIDC_CLIENT_SECRET.open(keyring, tx, tenant_id, (tenant_id,), bytes(sealed))
            secret = opened.decode()
    return OidcConfig(
        str(issuer),
        str(client_id),
        secret,
        tuple(redirect_uris),
        tuple(domains),
        bool(jit),
        str(role),
    )
