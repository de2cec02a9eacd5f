"""`create_app(settings)`: the gateway, assembled in one place.

The lifespan resolves the database (embedded or external), runs the doctor on the service's
own connection, and refuses to serve on any finding (`DoctorFailed`). Middleware, outermost
first: request id and access log, the body limit, idempotency keys; then FastAPI's routing
with the one problem handler.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from fastapi import FastAPI

from tenantguard.artifacts.service import Artifacts
from tenantguard.audit.checkpoints import Checkpointer, Periodic
from tenantguard.clock import Clock, SystemClock
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import Keyring, open_keyring
from tenantguard.data.operator_access import OperatorAccess
from tenantguard.data.tenants import tenant_ids
from tenantguard.db import Database, endpoints
from tenantguard.db.doctor import examine
from tenantguard.egress.check import EgressPolicy, loopback_grants
from tenantguard.errors import ConfigurationError, DoctorFailed
from tenantguard.gateway import problems
from tenantguard.gateway.idempotency import IdempotencyMiddleware, Replayed, replay
from tenantguard.gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tenantguard.gateway.routes import (
    apikeys,
    artifacts,
    audit,
    health,
    identity,
    memory,
    model_providers,
    models,
    oidc,
    operator,
    operator_access,
    pii,
    quotas,
    retention,
    runs,
    saml,
    secrets,
    tools,
    webhooks,
)
from tenantguard.gateway.runtime import Runtime
from tenantguard.identity.magiclinks import LinkConfig, MagicLinks
from tenantguard.identity.oidc import OidcClient
from tenantguard.identity.saml import SamlServiceProvider
from tenantguard.identity.sessions import Sessions
from tenantguard.mail import Mailer
from tenantguard.models.prices import parse_prices
from tenantguard.pii.detectors import DetectorRegistry, default_detectors
from tenantguard.pii.sentinel import Sentinel
from tenantguard.purge import Purger
from tenantguard.quotas.core import QuotaPolicyInvalid, parse_limits
from tenantguard.quotas.meter import Meter
from tenantguard.quotas.stores import open_store
from tenantguard.retention import Expiry
from tenantguard.settings import Settings
from tenantguard.tools.builtin import builtin_registry
from tenantguard.tools.registry import check_for_mode
from tenantguard.webhooks.delivery import Deliverer

MAX_BODY_BYTES = 1_048_576
_STARTUP = TenantContext(PLATFORM_TENANT_ID, Principal("system", "gateway"), frozenset(), "startup")
_log = structlog.get_logger("tenantguard.gateway")


def _meter(settings: Settings, db: Database, clock: Clock, stack: contextlib.ExitStack) -> Meter:
    """The quota meter the settings describe; bad platform limits or a store that does not
    answer stop the start."""
    try:
        platform_limits = parse_limits(settings.platform_limits)
    except QuotaPolicyInvalid as bad:
        raise ConfigurationError(f"platform_limits: {bad.detail}") from bad
    store, close = open_store(settings.quota_store, settings.redis_url, db)
    stack.callback(close)
    return Meter(store, platform_limits, db=db, clock=clock)


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
    keyring: Keyring | None = None,
    mailer: Mailer | None = None,
) -> FastAPI:
    """Build the gateway. With `database` (or `keyring`), use that one (the caller owns it);
    otherwise open the one `settings` describe, for the lifetime of the app. A key provider
    that cannot be opened stops the start (fail closed)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with contextlib.ExitStack() as stack:
            db = database
            if db is None:
                config = settings.database()
                found = stack.enter_context(endpoints(config))
                db = stack.enter_context(
                    Database(
                        found.app_url,
                        min_size=config.pool_min,
                        max_size=config.pool_max,
                        application_name="tenantguard-gateway",
                    )
                )
            with db.system_transaction() as tx:
                report = examine(tx)
            if not report.ok:
                for finding in report.findings:
                    _log.error(
                        "doctor.finding",
                        check=finding.check,
                        subject=finding.subject,
                        problem=finding.problem,
                    )
                raise DoctorFailed()
            # The tools this mode allows; a registry with a forbidden one stops the start.
            tool_registry, executors = builtin_registry(settings.deployment_mode)
            check_for_mode(tool_registry, settings.deployment_mode)
            the_clock = clock or SystemClock()
            ring = keyring
            if ring is None:
                ring = open_keyring(settings, clock=the_clock)
                stack.callback(ring.close)
            with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:  # first start: first key
                signing.ensure(tx, _STARTUP, ring, now=the_clock.now())
            sessions = Sessions(db, ring, settings.tokens(), clock=the_clock)
            the_mailer = mailer or settings.mailer()
            meter = _meter(settings, db, the_clock, stack)
            model_clients = models.ModelClients()
            stack.callback(model_clients.close)
            loopback = settings.unsafe_loopback_sso
            oidc_client = OidcClient(db, sessions, clock=the_clock, allow_loopback=loopback)
            stack.callback(oidc_client.close)
            sentinel = Sentinel(db, ring, DetectorRegistry(default_detectors()), clock=the_clock)
            sentinel.install()  # audit events are screened by each tenant's PII policy
            stack.callback(setattr, db, "audit_screen", None)
            checkpointer = Checkpointer(
                db,
                ring,
                settings.checkpoints(),
                clock=the_clock,
                publisher=settings.checkpoint_publisher(),
            )
            platform_egress = EgressPolicy(
                grants=loopback_grants() if settings.unsafe_loopback_egress else ()
            )
            deliverer = Deliverer(db, ring, the_clock, platform_egress)
            artifact_store = settings.object_store()
            stack.callback(artifact_store.close)
            expiry = Expiry(db, artifact_store, the_clock)
            passes = [
                Periodic("webhook-deliveries", deliverer.run, settings.webhook_delivery_seconds),
                Periodic("retention-expiry", expiry.run, settings.retention_seconds),
                Periodic(
                    "audit-checkpoints",
                    lambda: checkpointer.checkpoint_all(tenant_ids(db)),
                    settings.checkpoints().interval_seconds,
                ),
                Periodic(
                    "audit-verifier",
                    lambda: checkpointer.verify_all(tenant_ids(db)),
                    settings.checkpoints().verify_seconds,
                ),
            ]
            for periodic in passes:
                periodic.start()
                stack.callback(periodic.stop)
            app.state.runtime = Runtime(
                db=db,
                clock=the_clock,
                config=settings.gateway(),
                keyring=ring,
                sessions=sessions,
                magic_links=MagicLinks(
                    db,
                    sessions,
                    the_mailer,
                    LinkConfig(sender=settings.mail_from, public_url=settings.public_url),
                    clock=the_clock,
                ),
                magic_link_floor=settings.magic_link_floor_seconds,
                oidc=oidc_client,
                saml=SamlServiceProvider(
                    db,
                    sessions,
                    clock=the_clock,
                    public_url=settings.public_url,
                    allow_loopback=loopback,
                ),
                checkpointer=checkpointer,
                operator_access=OperatorAccess(db, clock=the_clock),
                sentinel=sentinel,
                meter=meter,
                mailer=the_mailer,
                mail_from=settings.mail_from,
                prices=parse_prices(settings.model_prices),
                data_root=settings.data_root,
                model_clients=model_clients,
                deliverer=deliverer,
                purger=Purger(db, ring, artifact_store, settings.data_root, the_clock),
                expiry=expiry,
                artifacts=Artifacts(
                    db,
                    ring,
                    artifact_store,
                    settings.artifact_store,
                    the_clock,
                    max_bytes=settings.artifact_max_bytes,
                    url_max_seconds=settings.artifact_url_max_seconds,
                ),
                tools=tool_registry,
                executors=executors,
                egress=platform_egress,
                evidence_test_results=settings.evidence_test_results,
                workspace_max_bytes=settings.workspace_max_bytes,
                workspace_max_entries=settings.workspace_max_entries,
                idempotency_retention=timedelta(hours=settings.idempotency_retention_hours),
            )
            _log.info("gateway.ready", mode=settings.deployment_mode)
            yield
            app.state.runtime = None

    app = FastAPI(
        title="tenantguard",
        summary="The security kernel for multi-tenant AI agent platforms",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    _mount(app, artifact_max_bytes=settings.artifact_max_bytes)
    return app


def _mount(app: FastAPI, *, artifact_max_bytes: int) -> None:
    """The handlers, the routes and the middleware (added last: outermost)."""
    problems.install(app)
    app.add_exception_handler(Replayed, replay)  # a repeat's kept answer (not a problem)
    routers = (
        health.router,
        apikeys.router,
        memory.router,
        runs.router,
        secrets.router,
        model_providers.router,
        identity.router,
        oidc.router,
        saml.router,
        operator.router,
        operator_access.router,
        pii.router,
        tools.router,
        quotas.router,
        models.router,
        audit.router,
        webhooks.router,
        artifacts.router,
        retention.router,
    )
    for router in routers:
        app.include_router(router)
    app.add_middleware(IdempotencyMiddleware)  # inside the body limit: reads bounded bodies
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=MAX_BODY_BYTES,
        routes={("POST", "/api/artifacts"): max(MAX_BODY_BYTES, artifact_max_bytes)},
    )
    app.add_middleware(RequestIdMiddleware)  # added last: outermost
