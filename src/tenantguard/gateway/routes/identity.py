"""Users, sessions and tokens: `/api/users`, `/api/sessions`, `/api/admin/sessions`,
`/api/auth/refresh`, `/api/auth/logout`, magic links, TOTP and step-up, the MFA policy, and the
public `/.well-known/jwks.json`. (Single sign-on: `routes/oidc.py`, `routes/saml.py`.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.authz import ROLES
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.crypto import signing
from tenantguard.errors import InvalidCredentials, NotFound
from tenantguard.gateway.auth import Authorize, record_failure
from tenantguard.gateway.runtime import Runtime, request_id, runtime
from tenantguard.identity import sessions, totp, users

router = APIRouter(tags=["identity"])
Role = Annotated[str, Field(pattern="^(" + "|".join(ROLES) + ")$")]
_NO_STORE = {"Cache-Control": "no-store"}


class UserAdd(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "ada@example.com", "role": "member"}]},
    )
    email: str = Field(min_length=3, max_length=320)
    role: Role


class UserRole(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "auditor"}]})
    role: Role


class UserOut(BaseModel):
    id: UUID
    email: str
    role: str
    created_at: datetime

    @classmethod
    def of(cls, user: users.User) -> UserOut:
        return cls(id=user.id, email=user.email, role=user.role, created_at=user.created_at)


class SessionOut(BaseModel):
    id: UUID
    user_id: UUID
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    amr: list[str]
    revoked_at: datetime | None
    current: bool

    @classmethod
    def of(cls, session: sessions.Session, ctx: TenantContext) -> SessionOut:
        return cls(
            id=session.id,
            user_id=session.user_id,
            created_at=session.created_at,
            expires_at=session.expires_at,
            last_seen_at=session.last_seen_at,
            amr=list(session.amr),
            revoked_at=session.revoked_at,
            current=session.id == ctx.session_id,
        )


class RefreshIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"refresh_token": "tg_rt_0000000000000000000000000000000000000000"}]
        },
    )
    refresh_token: str = Field(min_length=1, max_length=128)


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 (the OAuth token type, not a secret)
    expires_in: int


def sign_in_answer(
    rt: Runtime, rid: str, response: Response, action: str, attempt: Callable[[], sessions.Issued]
) -> TokensOut:
    """The one way a public sign-in route answers: its failure audited (the same opaque 401
    outward), its tokens never cached."""
    try:
        issued = attempt()
    except InvalidCredentials as exc:
        record_failure(rt, exc, rid=rid, action=action)
        raise
    response.headers.update(_NO_STORE)
    return TokensOut(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


def after_floor(rt: Runtime, action: Callable[[], None]) -> None:
    """Run `action`, then wait until the magic-link floor has passed: every answer of a
    sign-in link request takes the same minimum time, whoever asked and whatever happened."""
    started = time.monotonic()
    try:
        action()
    finally:
        time.sleep(max(0.0, rt.magic_link_floor - (time.monotonic() - started)))


UsersRead = Annotated[TenantContext, Depends(Authorize("users:read"))]
UsersManage = Annotated[TenantContext, Depends(Authorize("users:manage"))]
SessionsSelf = Annotated[TenantContext, Depends(Authorize("sessions:self"))]
SessionsManage = Annotated[TenantContext, Depends(Authorize("sessions:manage"))]


def _own_user(ctx: TenantContext) -> UUID | None:
    return UUID(ctx.principal.id) if ctx.principal.type == "user" else None


@router.get("/api/users")
def list_users(ctx: UsersRead, request: Request) -> list[UserOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return [UserOut.of(u) for u in users.list_users(tx, ctx.tenant_id)]


@router.post("/api/users", status_code=201)
def add_user(body: UserAdd, ctx: UsersManage, request: Request) -> UserOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        return UserOut.of(users.add(tx, ctx, email=body.email, role=body.role, now=rt.clock.now()))


@router.patch("/api/users/{id}")
def set_role(id: UUID, body: UserRole, ctx: UsersManage, request: Request) -> UserOut:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        return UserOut.of(users.set_role(tx, ctx, id, body.role, now=rt.clock.now()))


@router.delete("/api/users/{id}", status_code=204)
def remove_user(id: UUID, ctx: UsersManage, request: Request) -> Response:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        users.remove(tx, ctx, id, now=rt.clock.now())
    return Response(status_code=204)


@router.get("/api/sessions")
def my_sessions(ctx: SessionsSelf, request: Request) -> list[SessionOut]:
    """The caller's own sessions (an API key has none)."""
    user = _own_user(ctx)
    if user is None:
        return []
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = sessions.list_sessions(tx, ctx.tenant_id, user_id=user)
    return [SessionOut.of(s, ctx) for s in found]


@router.delete("/api/sessions/{id}", status_code=204)
def revoke_my_session(id: UUID, ctx: SessionsSelf, request: Request) -> Response:
    rt = runtime(request)
    user = _own_user(ctx)
    if user is None:
        raise NotFound()
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        rt.sessions.revoke(tx, ctx, id, only_user=user)
    return Response(status_code=204)


@router.post("/api/auth/logout", status_code=204)
def logout(ctx: SessionsSelf, request: Request) -> Response:
    """End the session the calling access token belongs to."""
    rt = runtime(request)
    if ctx.session_id is None:
        raise NotFound()
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        rt.sessions.revoke(tx, ctx, ctx.session_id, only_user=None)
    return Response(status_code=204)


@router.get("/api/admin/sessions")
def all_sessions(ctx: SessionsManage, request: Request) -> list[SessionOut]:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        found = sessions.list_sessions(tx, ctx.tenant_id, user_id=None)
    return [SessionOut.of(s, ctx) for s in found]


@router.delete("/api/admin/sessions/{id}", status_code=204)
def revoke_session(id: UUID, ctx: SessionsManage, request: Request) -> Response:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        rt.sessions.revoke(tx, ctx, id, only_user=None)
    return Response(status_code=204)


@router.post("/api/admin/users/{id}/sessions/revoke")
def revoke_user_sessions(id: UUID, ctx: SessionsManage, request: Request) -> dict[str, int]:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        users.get(tx, ctx.tenant_id, id)
        return {"revoked": rt.sessions.revoke_user(tx, ctx, id)}


@router.post("/api/admin/sessions/revoke-all")
def revoke_all_sessions(ctx: SessionsManage, request: Request) -> dict[str, int]:
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        return {"revoked": rt.sessions.revoke_tenant(tx, ctx)}


@router.post("/api/auth/refresh")
def refresh(body: RefreshIn, request: Request, response: Response) -> TokensOut:
    """Rotate a refresh token (public: the refresh token is the credential)."""
    rt = runtime(request)
    rid = request_id(request)
    return sign_in_answer(
        rt,
        rid,
        response,
        "session.refresh",
        lambda: rt.sessions.refresh(body.refresh_token, request_id=rid),
    )


@router.get("/.well-known/jwks.json")
def jwks(request: Request) -> dict[str, Any]:
    """The public keys that verify access tokens now (public by design)."""
    rt = runtime(request)
    with rt.db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keys = signing.public_keys(tx, now=rt.clock.now())
    return signing.jwks(keys)


class MagicLinkRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"tenant": "00000000-0000-4000-8000-000000000001", "email": "ada@example.com"}
            ]
        },
    )
    tenant: UUID
    email: str = Field(min_length=1, max_length=320)


class MagicLinkRedeem(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "tenant": "00000000-0000-4000-8000-000000000001",
                    "token": "tg_ml_0000000000000000000000000000000000000000",
                }
            ]
        },
    )
    tenant: UUID
    token: str = Field(min_length=1, max_length=128)


@router.post("/api/auth/magic-link", status_code=202)
def request_magic_link(body: MagicLinkRequest, request: Request) -> dict[str, str]:
    """Always 202, after the same minimum time, whether or not the address is known."""
    rt = runtime(request)
    after_floor(
        rt,
        lambda: rt.magic_links.request(
            tenant_id=body.tenant, email=body.email, request_id=request_id(request)
        ),
    )
    return {"status": "If the address belongs to this tenant, a sign-in link is on its way."}


@router.post("/api/auth/magic-link/redeem")
def redeem_magic_link(body: MagicLinkRedeem, request: Request, response: Response) -> TokensOut:
    rt = runtime(request)
    rid = request_id(request)
    return sign_in_answer(
        rt,
        rid,
        response,
        "auth.magic_link.redeem",
        lambda: rt.magic_links.redeem(tenant_id=body.tenant, token=body.token, request_id=rid),
    )


class TotpEnrolmentOut(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpCode(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"code": "123456"}]})
    code: str = Field(pattern=r"^[0-9]{6}$")


class StepUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"code": "123456"}]})
    code: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    recovery_code: str | None = Field(default=None, max_length=32)


class AccessOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 (the OAuth token type, not a secret)
    expires_in: int


def _person(ctx: TenantContext) -> UUID:
    user = _own_user(ctx)
    if user is None:
        raise NotFound()  # second factors belong to people, not to API keys
    return user


@router.post("/api/mfa/totp", status_code=201)
def enroll_totp(ctx: SessionsSelf, request: Request, response: Response) -> TotpEnrolmentOut:
    """Start TOTP enrolment: the secret is shown here, once."""
    rt = runtime(request)
    user_id = _person(ctx)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        user = users.get(tx, ctx.tenant_id, user_id)
        enrolment = totp.enroll(tx, ctx, rt.keyring, user.id, user.email, now=rt.clock.now())
    response.headers.update(_NO_STORE)
    return TotpEnrolmentOut(
        secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri, qr_svg=enrolment.qr_svg
    )


@router.post("/api/mfa/totp/confirm")
def confirm_totp(
    body: TotpCode, ctx: SessionsSelf, request: Request, response: Response
) -> dict[str, list[str]]:
    """Activate the factor with a code from the authenticator; recovery codes, shown once."""
    rt = runtime(request)
    user_id = _person(ctx)
    try:
        with rt.db.tenant_transaction(ctx.tenant_id) as tx:
            codes = totp.confirm(tx, ctx, rt.keyring, user_id, body.code, now=rt.clock.now())
    except InvalidCredentials as exc:
        if exc.reason == "bad_totp":
            totp.note_failure(rt.db, ctx.tenant_id, user_id, now=rt.clock.now())
        record_failure(rt, exc, rid=request_id(request), action="mfa.totp.confirm")
        raise
    response.headers.update(_NO_STORE)
    return {"recovery_codes": codes}


@router.post("/api/auth/step-up")
def step_up(body: StepUpIn, ctx: SessionsSelf, request: Request, response: Response) -> AccessOut:
    """Prove a second factor now; sensitive actions need one from the last 5 minutes."""
    rt = runtime(request)
    try:
        token = rt.sessions.step_up(ctx, code=body.code, recovery_code=body.recovery_code)
    except InvalidCredentials as exc:
        record_failure(rt, exc, rid=request_id(request), action="session.step_up")
        raise
    response.headers.update(_NO_STORE)
    return AccessOut(access_token=token, expires_in=900)


class MfaPolicy(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"roles": ["owner", "admin"]}]}
    )
    roles: list[Role] = Field(max_length=4)


@router.get("/api/admin/mfa-policy")
def get_mfa_policy(ctx: UsersRead, request: Request) -> MfaPolicy:
    with runtime(request).db.tenant_transaction(ctx.tenant_id) as tx:
        return MfaPolicy(roles=list(totp.mfa_roles(tx, ctx.tenant_id)))


@router.put("/api/admin/mfa-policy")
def set_mfa_policy(body: MfaPolicy, ctx: UsersManage, request: Request) -> MfaPolicy:
    """Which roles must prove a second factor before acting (default: owner and admin)."""
    rt = runtime(request)
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        roles = totp.set_mfa_roles(tx, ctx, body.roles, now=rt.clock.now())
    return MfaPolicy(roles=list(roles))
