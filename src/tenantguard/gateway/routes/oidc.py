"""OpenID Connect single sign-on: `PUT /api/admin/oidc` (an owner configures it) and the public
`start` / `callback` steps of a sign-in (see `identity.oidc` for every check made).

The client secret is part of the configuration, sealed under the tenant's key for that column
alone and never shown again; it is opened only to redeem a code, never to start a sign-in.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.audit.store import record_action
from tenantguard.errors import InvalidCredentials, NotFound
from tenantguard.gateway.auth import denials_audited, record_failure
from tenantguard.gateway.routes.identity import TokensOut, UsersManage, sign_in_answer
from tenantguard.gateway.runtime import Runtime, request_id, runtime
from tenantguard.identity import oidc, sessions, sso, users

router = APIRouter(tags=["identity"])
_TENANT_EXAMPLE = "00000000-0000-4000-8000-000000000001"


class OidcSettings(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "issuer": "https://login.acme.example",
                    "client_id": "tenantguard",
                    "client_secret": "the client secret the provider issued",
                    "redirect_uris": ["https://app.acme.example/sso/callback"],
                    "allowed_domains": ["acme.example"],
                    "jit_provisioning": True,
                    "default_role": "member",
                }
            ]
        },
    )
    issuer: str = Field(max_length=2048)
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Write-only: sealed, never shown again. Omit for a public client (PKCE).",
    )
    redirect_uris: list[str] = Field(min_length=1, max_length=20)
    allowed_domains: list[str] = Field(min_length=1, max_length=50)
    jit_provisioning: bool = False
    default_role: str = Field(default="member", pattern="^(admin|member|auditor)$")


class OidcConfigured(BaseModel):
    issuer: str
    client_id: str
    client_secret_set: bool
    redirect_uris: list[str]
    allowed_domains: list[str]
    jit_provisioning: bool
    default_role: str


class OidcStart(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"tenant": _TENANT_EXAMPLE, "redirect_uri": "https://app.acme.example/sso/callback"}
            ]
        },
    )
    tenant: UUID
    redirect_uri: str = Field(max_length=2048)


class OidcStarted(BaseModel):
    authorization_url: str
    binding: str = Field(
        description="Keep it for the browser that started (a cookie); the callback needs it."
    )


class OidcCallback(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"tenant": _TENANT_EXAMPLE, "state": "s", "code": "c", "binding": "b"}]
        },
    )
    tenant: UUID
    state: str = Field(min_length=1, max_length=512)
    code: str = Field(min_length=1, max_length=2048)
    binding: str = Field(min_length=1, max_length=128)


@router.put("/api/admin/oidc")
def put_oidc(body: OidcSettings, ctx: UsersManage, request: Request) -> OidcConfigured:
    """Configure single sign-on with the tenant's OpenID Connect provider (owners only: who
    controls the identity provider can sign in as anyone of the tenant's domains)."""
    rt = runtime(request)
    loopback = rt.config.unsafe_loopback_sso
    issuer = oidc.check_issuer(body.issuer, allow_loopback=loopback)
    redirects = [
        sso.check_url(u, what="A redirect URI", allow_loopback=loopback) for u in body.redirect_uris
    ]
    domains = sorted({sso.check_domain(d) for d in body.allowed_domains})
    now = rt.clock.now()
    with (
        denials_audited(rt, ctx, action="sso.oidc.configure", target_type="tenant"),
        rt.db.tenant_transaction(ctx.tenant_id) as tx,
    ):
        users.require_owner(tx, ctx, why="Only an owner configures single sign-on.")
        sealed = None
        if body.client_secret is not None:
            sealed = oidc.OIDC_CLIENT_SECRET.seal(
                rt.keyring, tx, ctx, (ctx.tenant_id,), body.client_secret.encode()
            )
        tx.execute(
            "INSERT INTO tenantguard.oidc_configs (tenant_id, issuer, client_id,"
            " client_secret_name, client_secret_sealed, redirect_uris, allowed_domains,"
            " jit_provisioning, default_role, updated_at)"
            " VALUES (%s, %s, %s, NULL, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id)"
            " DO UPDATE SET issuer = EXCLUDED.issuer, client_id = EXCLUDED.client_id,"
            " client_secret_name = NULL, client_secret_sealed = EXCLUDED.client_secret_sealed,"
            " redirect_uris = EXCLUDED.redirect_uris, allowed_domains = EXCLUDED.allowed_domains,"
            " jit_provisioning = EXCLUDED.jit_provisioning, default_role = EXCLUDED.default_role,"
            " updated_at = EXCLUDED.updated_at",
            (
                ctx.tenant_id,
                issuer,
                body.client_id,
                sealed,
                redirects,
                domains,
                body.jit_provisioning,
                body.default_role,
                now,
            ),
        )
        record_action(
            tx,
            ctx,
            action="sso.oidc.configure",
            target_type="tenant",
            target_id=str(ctx.tenant_id),
            now=now,
            payload={
                "issuer": issuer,
                "client_id": body.client_id,
                "client_secret_set": sealed is not None,
                "redirect_uris": redirects,
                "allowed_domains": domains,
                "jit": body.jit_provisioning,
            },
        )
    return OidcConfigured(
        issuer=issuer,
        client_id=body.client_id,
        client_secret_set=sealed is not None,
        redirect_uris=redirects,
        allowed_domains=domains,
        jit_provisioning=body.jit_provisioning,
        default_role=body.default_role,
    )


def _config(rt: Runtime, tenant: UUID, *, with_secret: bool) -> oidc.OidcConfig:
    try:
        return oidc.load_config(rt.db, tenant, keyring=rt.keyring if with_secret else None)
    except NotFound as exc:  # no SSO for this tenant (or no tenant): the usual opaque 401
        raise InvalidCredentials("sso_not_configured") from exc


@router.post("/api/auth/oidc/start")
def oidc_start(body: OidcStart, request: Request) -> OidcStarted:
    """Begin single sign-on: where to send the browser, and the binding to keep (public)."""
    rt = runtime(request)
    rid = request_id(request)
    try:
        config = _config(rt, body.tenant, with_secret=False)
        url, binding = rt.oidc.start(body.tenant, config, redirect_uri=body.redirect_uri)
    except InvalidCredentials as exc:
        record_failure(rt, exc, rid=rid, action="sso.oidc.start")
        raise
    return OidcStarted(authorization_url=url, binding=binding)


@router.post("/api/auth/oidc/callback")
def oidc_callback(body: OidcCallback, request: Request, response: Response) -> TokensOut:
    """Finish single sign-on with the provider's code and state, and the binding (public)."""
    rt = runtime(request)
    rid = request_id(request)

    def finish() -> sessions.Issued:
        config = _config(rt, body.tenant, with_secret=True)
        return rt.oidc.finish(
            body.tenant,
            config,
            state=body.state,
            code=body.code,
            binding=body.binding,
            request_id=rid,
        )

    return sign_in_answer(rt, rid, response, "sso.oidc.callback", finish)
