"""Access tokens: 15-minute JWTs signed with the platform's Ed25519 keys. Pure.

Issued with header `{"alg": "Ed25519", "typ": "at+jwt", "kid": …}` (RFC 9864 names EdDSA over
Ed25519 `Ed25519`; the older `EdDSA` name is deprecated) and claims `iss`, `aud`, `sub`,
`tenant_id`, `sid`, `caps`, `jti`, `iat`, `nbf`, `exp`, `auth_time`, `amr`, `role`.

Verification trusts nothing in the token until the signature holds, and then checks everything:
the header is parsed first and must name exactly our algorithm and type, a well-formed `kid`
of a key valid now, and no key-carrying members (`jwk`, `jku`, `x5u`, `x5c`, `crit`); the
signature is verified with that key only and the algorithm pinned; every claim is present,
typed and checked against the injected clock with a small leeway. Every failure is the same
`InvalidCredentials` outward; the reason is for the audit.

Threat stopped: forged, stale, replayed-after-expiry and algorithm-confused tokens.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from tenantguard.authz import ACTIONS
from tenantguard.crypto.signing import PublicKey, SigningKey
from tenantguard.errors import InvalidCredentials
from tenantguard.settings import TokenConfig

ALGORITHM = "Ed25519"
TYPE = "at+jwt"
ACCESS_LIFETIME = timedelta(minutes=15)
LEEWAY = timedelta(seconds=30)
MAX_TOKEN_LENGTH = 8192
_KID = re.compile(r"[A-Za-z0-9_-]{43}")
_FORBIDDEN_HEADER = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    subject: UUID
    tenant_id: UUID
    session_id: UUID
    capabilities: frozenset[str]
    role: str
    token_id: str
    issued_at: datetime
    expires_at: datetime
    auth_time: datetime
    amr: tuple[str, ...]


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def issue(
    key: SigningKey,
    config: TokenConfig,
    *,
    subject: UUID,
    tenant_id: UUID,
    session_id: UUID,
    capabilities: frozenset[str],
    role: str,
    auth_time: datetime,
    amr: tuple[str, ...],
    now: datetime,
) -> str:
    claims = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": str(subject),
        "tenant_id": str(tenant_id),
        "sid": str(session_id),
        "caps": sorted(capabilities),
        "role": role,
        "jti": uuid4().hex,
        "iat": _ts(now),
        "nbf": _ts(now),
        "exp": _ts(now + ACCESS_LIFETIME),
        "auth_time": _ts(auth_time),
        "amr": list(amr),
    }
    header = {"alg": ALGORITHM, "typ": TYPE, "kid": key.kid}
    okp = OKPKey.import_key(key.private)
    return jwt.encode(header, claims, okp, algorithms=[ALGORITHM])


@functools.lru_cache(maxsize=64)
def _imported(public_key: bytes) -> OKPKey:
    """A public key, imported once: keys are immutable and few (the signing keys in overlap)."""
    return OKPKey.import_key(Ed25519PublicKey.from_public_bytes(public_key))


def looks_like_jwt(credential: str) -> bool:
    parts = credential.split(".")
    return len(parts) == 3 and all(_SEGMENT.fullmatch(p) for p in parts[:2])


def _header(token: str) -> dict[str, Any]:
    first = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCredentials("malformed_token") from exc
    if not isinstance(header, dict):
        raise InvalidCredentials("malformed_token")
    return header


def verify(
    token: str, config: TokenConfig, *, key_for: Callable[[str], PublicKey | None], now: datetime
) -> AccessClaims:
    """Verify `token`; `key_for(kid)` returns a key valid now, or None."""
    if len(token) > MAX_TOKEN_LENGTH or not looks_like_jwt(token):
        raise InvalidCredentials("malformed_token")
    header = _header(token)
    if header.get("alg") != ALGORITHM:
        raise InvalidCredentials("bad_algorithm")
    if header.get("typ") != TYPE or _FORBIDDEN_HEADER & header.keys():
        raise InvalidCredentials("bad_header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise InvalidCredentials("bad_kid")
    public = key_for(kid)
    if public is None or not public.verifies_at(now):
        raise InvalidCredentials("unknown_kid")
    try:
        okp = _imported(public.public_key)
        decoded = jwt.decode(token, okp, algorithms=[ALGORITHM])
    except (JoseError, ValueError) as exc:
        raise InvalidCredentials("bad_signature") from exc
    return _claims(decoded.claims, config, now)


def _claims(claims: Mapping[str, Any], config: TokenConfig, now: datetime) -> AccessClaims:
    def need(name: str, kind: type) -> Any:
        value = claims.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise InvalidCredentials("bad_claims")
        return value

    if need("iss", str) != config.issuer:
        raise InvalidCredentials("wrong_issuer")
    if need("aud", str) != config.audience:
        raise InvalidCredentials("wrong_audience")
    iat, nbf, exp, auth = (
        need("iat", int),
        need("nbf", int),
        need("exp", int),
        need("auth_time", int),
    )
    stamp, slack = now.timestamp(), LEEWAY.total_seconds()
    if exp <= stamp - slack:
        raise InvalidCredentials("expired")
    if nbf > stamp + slack or iat > stamp + slack:
        raise InvalidCredentials("not_yet_valid")
    if exp - iat > ACCESS_LIFETIME.total_seconds() or auth > iat:
        raise InvalidCredentials("bad_claims")
    caps = need("caps", list)
    amr = need("amr", list)
    if not all(isinstance(c, str) and c in ACTIONS for c in caps):
        raise InvalidCredentials("bad_claims")
    if not all(isinstance(m, str) for m in amr):
        raise InvalidCredentials("bad_claims")
    try:
        subject, tenant, session = (UUID(need(n, str)) for n in ("sub", "tenant_id", "sid"))
    except ValueError as exc:
        raise InvalidCredentials("bad_claims") from exc
    zone = now.tzinfo
    return AccessClaims(
        subject=subject,
        tenant_id=tenant,
        session_id=session,
        capabilities=frozenset(caps),
        role=need("role", str),
        token_id=need("jti", str),
        issued_at=datetime.fromtimestamp(iat, zone),
        expires_at=datetime.fromtimestamp(exp, zone),
        auth_time=datetime.fromtimestamp(auth, zone),
        amr=tuple(amr),
    )
