"""SAML single sign-on: `PUT /api/admin/saml` (configure), the public SP metadata, and the
public `start` / `acs` steps of a sign-in (see `identity.saml` for every check made)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantguard.audit.store import record_action
from tenantguard.errors import InvalidCredentials, NotFound
from tenantguard.gateway.auth import denials_audited, record_failure
from tenantguard.gateway.routes.identity import TokensOut, UsersManage, sign_in_answer
from tenantguard.gateway.runtime import Runtime, request_id, runtime
from tenantguard.identity import saml, sso, users
from tenantguard.identity.sessions import Issued

router = APIRouter(tags=["identity"])
_TENANT_EXAMPLE = "00000000-0000-4000-8000-000000000001"


class SamlSettings(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "idp_metadata": "<md:EntityDescriptor …/>",
                    "acs_urls": ["https://app.acme.example/saml/acs"],
                    "allowed_domains": ["acme.example"],
                    "jit_provisioning": True,
                    "default_role": "member",
                }
            ]
        },
    )
    idp_metadata: str = Field(min_length=1, max_length=saml.MAX_METADATA_CHARS)
    acs_urls: list[str] = Field(min_length=1, max_length=20)
    allowed_domains: list[str] = Field(min_length=1, max_length=50)
    jit_provisioning: bool = False
    default_role: str = Field(default="member", pattern="^(admin|member|auditor)$")


class SamlConfigured(BaseModel):
    idp_entity_id: str
    sp_entity_id: str
    acs_urls: list[str]
    allowed_domains: list[str]
    jit_provisioning: bool
    default_role: str


class SamlStart(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"tenant": _TENANT_EXAMPLE, "acs_url": "https://app.acme.example/saml/acs"}
            ]
        },
    )
    tenant: UUID
    acs_url: str = Field(max_length=2048)


class SamlAcs(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "tenant": _TENANT_EXAMPLE,
                    "saml_response": "PHNhbWxwOl…",
                    "relay_state": "r",
                    "binding": "b",
                }
            ]
        },
    )
    tenant: UUID
    saml_response: str = Field(
        min_length=1, max_length=524_288, description="As the IdP posted it."
    )
    relay_state: str = Field(min_length=1, max_length=512)
    binding: str = Field(min_length=1, max_length=128, description="What `start` gave the app.")


@router.put("/api/admin/saml")
def put_saml(body: SamlSettings, ctx: UsersManage, request: Request) -> SamlConfigured:
    """Configure single sign-on with the tenant's SAML identity provider (owners only: who
    controls the identity provider can sign in as anyone of the tenant's domains)."""
    rt = runtime(request)
    entity = rt.saml.check_metadata(ctx.tenant_id, body.idp_metadata)
    acs_urls = [
        sso.check_url(
            u,
            what="An assertion consumer service URL",
            allow_loopback=rt.config.unsafe_loopback_sso,
        )
        for u in body.acs_urls
    ]
    domains = sorted({sso.check_domain(d) for d in body.allowed_domains})
    now = rt.clock.now()
    with (
        denials_audited(rt, ctx, action="sso.saml.configure", target_type="tenant"),
        rt.db.tenant_transaction(ctx.tenant_id) as tx,
    ):
        users.require_owner(tx, ctx, why="Only an owner configures single sign-on.")
        tx.execute(
            "INSERT INTO tenantguard.saml_configs (tenant_id, idp_metadata, idp_entity_id,"
            " acs_urls, allowed_domains, jit_provisioning, default_role, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET"
            " idp_metadata = EXCLUDED.idp_metadata, idp_entity_id = EXCLUDED.idp_entity_id,"
            " acs_urls = EXCLUDED.acs_urls, allowed_domains = EXCLUDED.allowed_domains,"
            " jit_provisioning = EXCLUDED.jit_provisioning, default_role = EXCLUDED.default_role,"
            " updated_at = EXCLUDED.updated_at",
            (
                ctx.tenant_id,
                body.idp_metadata,
                entity,
                acs_urls,
                domains,
                body.jit_provisioning,
                body.default_role,
                now,
            ),
        )
        record_action(
            tx,
            ctx,
            action="sso.saml.configure",
            target_type="tenant",
            target_id=str(ctx.tenant_id),
            now=now,
            payload={
                "idp_entity_id": entity,
                "acs_urls": acs_urls,
                "allowed_domains": domains,
                "jit": body.jit_provisioning,
            },
        )
    return SamlConfigured(
        idp_entity_id=entity,
        sp_entity_id=rt.saml.entity_id(ctx.tenant_id),
        acs_urls=acs_urls,
        allowed_domains=domains,
        jit_provisioning=body.jit_provisioning,
        default_role=body.default_role,
    )


def _config(rt: Runtime, tenant: UUID) -> saml.SamlConfig:
    try:
        return saml.load_config(rt.db, tenant)
    except NotFound as exc:  # no SAML for this tenant (or no tenant): the usual opaque 401
        raise InvalidCredentials("sso_not_configured") from exc


@router.get(
    "/api/auth/saml/{tenant}/metadata",
    response_class=Response,
    responses={200: {"content": {"application/samlmetadata+xml": {}}}},
)
def saml_metadata(tenant: UUID, request: Request) -> Response:
    """This tenant's service-provider metadata, for its IdP (public, like any SP's)."""
    rt = runtime(request)
    config = saml.load_config(rt.db, tenant)  # NotFound: 404, as for any unknown resource
    return Response(rt.saml.metadata(tenant, config), media_type="application/samlmetadata+xml")


class SamlStarted(BaseModel):
    redirect_url: str
    binding: str = Field(
        description="Keep it for the browser that started (a cookie); the ACS step needs it."
    )


@router.post("/api/auth/saml/start")
def saml_start(body: SamlStart, request: Request) -> SamlStarted:
    """Begin single sign-on: where to send the browser, and the binding to keep (public)."""
    rt = runtime(request)
    rid = request_id(request)
    try:
        url, binding = rt.saml.start(body.tenant, _config(rt, body.tenant), acs_url=body.acs_url)
    except InvalidCredentials as exc:
        record_failure(rt, exc, rid=rid, action="sso.saml.start")
        raise
    return SamlStarted(redirect_url=url, binding=binding)


@router.post("/api/auth/saml/acs")
def saml_acs(body: SamlAcs, request: Request, response: Response) -> TokensOut:
    """Finish single sign-on with the IdP's response and the RelayState (public)."""
    rt = runtime(request)
    rid = request_id(request)

    def finish() -> Issued:
        return rt.saml.finish(
            body.tenant,
            _config(rt, body.tenant),
            saml_response=body.saml_response,
            relay_state=body.relay_state,
            binding=body.binding,
            request_id=rid,
        )

    return sign_in_answer(rt, rid, response, "sso.saml.acs", finish)
