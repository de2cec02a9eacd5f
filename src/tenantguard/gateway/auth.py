"""Authentication and authorisation of a request: the `Authorize(action)` dependency.

Every `/api` route declares, through `Authorize`, the one action it performs. The dependency
reads `Authorization: Bearer <api key or access token>`, resolves it (an access token is
verified and checked against its session on every request; one opaque 401 for every failure,
the reason kept for the audit), builds the `TenantContext`, and refuses with `capability_denied`
unless the key holds the action's capability. Failures and denials are audited before the
error is answered; if that audit write fails, the request fails with 503. A request that
passes is then counted (`requests`, per the platform's limits and the tenant's): over a
limit, it is a 429 with `Retry-After`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import Request

from tenantguard.audit.store import AuditRecord, append, record_action
from tenantguard.authz import ACTIONS, REPEATABLE_ACTIONS, SENSITIVE_ACTIONS, in_realm
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.errors import CapabilityDenied, InvalidCredentials, RateLimited, StepUpRequired
from tenantguard.gateway import idempotency
from tenantguard.gateway.runtime import Runtime, request_id, runtime
from tenantguard.identity import keystore
from tenantguard.identity.tokens import looks_like_jwt
from tenantguard.quotas.core import Subject

_log = structlog.get_logger("tenantguard.auth")
_ANONYMOUS = Principal(type="anonymous", id="")
STEP_UP_WINDOW = timedelta(minutes=5)
# What a person whose role needs MFA may do before proving a second factor: manage their own
# sessions and enrol or use a factor (those routes declare sessions:self).
MFA_PENDING_ACTIONS = frozenset({"sessions:self"})


def fresh_second_factor(ctx: TenantContext, now: datetime) -> bool:
    """Whether `ctx` may take a sensitive action now: API keys may (their scope is explicit);
    a person needs a second factor (TOTP or a recovery code) within `STEP_UP_WINDOW`."""
    if ctx.principal.type != "user":
        return True
    second = {"otp", "recovery"} & set(ctx.amr)
    return bool(second) and ctx.auth_time is not None and now - ctx.auth_time <= STEP_UP_WINDOW


def bearer_credential(header: str | None) -> str:
    if header is None:
        raise InvalidCredentials("missing")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential or " " in credential.strip():
        raise InvalidCredentials("malformed")
    return credential.strip()


class Authorize:
    """A route dependency: authenticate, then require the capability for `action`."""

    def __init__(self, action: str) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")  # at import: a route names a typo
        self.action = action

    def __call__(self, request: Request) -> TenantContext:
        rt = runtime(request)
        rid = request_id(request)
        now = rt.clock.now()
        resolved = None
        try:
            presented = bearer_credential(request.headers.get("authorization"))
            if looks_like_jwt(presented):
                ctx = rt.sessions.authenticate(presented, request_id=rid)
            else:
                with rt.db.system_transaction() as tx:
                    resolved = keystore.resolve(tx, presented, now=now)
                ctx = TenantContext(
                    tenant_id=resolved.tenant_id,
                    principal=Principal(type="api_key", id=str(resolved.key_id)),
                    capabilities=resolved.capabilities,
                    request_id=rid,
                    agent=resolved.agent,
                    expires_at=resolved.expires_at,
                )
        except InvalidCredentials as exc:
            record_failure(rt, exc, rid=rid, action=self.action)
            raise
        # A token can name any action; only its realm's actions can ever be performed.
        allowed = ctx.allows(self.action) and in_realm(ctx.tenant_id, self.action)
        stale = allowed and (
            (self.action in SENSITIVE_ACTIONS and not fresh_second_factor(ctx, now))
            or (ctx.mfa_pending and self.action not in MFA_PENDING_ACTIONS)
        )
        needs_touch = resolved is not None and resolved.needs_touch
        if needs_touch or not allowed or stale:
            with rt.db.tenant_transaction(ctx.tenant_id) as tx:
                if resolved is not None and needs_touch:
                    keystore.touch(tx, ctx.tenant_id, resolved.key_id, now=now)
                if not allowed or stale:
                    reason = "step_up_required" if allowed else f"capability_missing:{self.action}"
                    record_action(
                        tx,
                        ctx,
                        action=self.action,
                        outcome="denied",
                        reason=reason,
                        target_type="route",
                        target_id=request.url.path,
                        now=now,
                    )
        if not allowed:
            raise CapabilityDenied(self.action)
        if stale:
            raise StepUpRequired()
        # Rate limit and quota, after the gate: only a request that would be served counts.
        # The tenant's own limits do not gate its quota routes: it can always lift them.
        try:
            rt.meter.charge(
                ctx.tenant_id,
                "requests",
                subject_of(ctx),
                own_limits=not self.action.startswith("quotas:"),
            )
        except RateLimited as limited:  # logged, not audited: a flood must not flood the audit
            _log.warning(
                "request.limited",
                tenant_id=str(ctx.tenant_id),
                code=limited.code,
                action=self.action,
                request_id=rid,
            )
            raise
        # A repeat of a keyed POST or PATCH is answered from its record, charged as a request
        # (a read by POST runs again instead: its consent and policy are checked anew).
        if self.action not in REPEATABLE_ACTIONS:
            idempotency.begin(rt, ctx, request)
        return ctx


def subject_of(ctx: TenantContext, *, agent: str | None = None, run: str | None = None) -> Subject:
    """Whom a consumption counts against: the credential (a key, a person), the agent (the
    run's, else the one the credential is bound to) and the run."""
    return Subject(
        credential=f"{ctx.principal.type}:{ctx.principal.id}",
        agent=agent if agent is not None else ctx.agent,
        run=run,
    )


@contextlib.contextmanager
def denials_audited(
    rt: Runtime, ctx: TenantContext, *, action: str, target_type: str, target_id: str = ""
) -> Iterator[None]:
    """Record a `CapabilityDenied` raised in the block, then re-raise it.

    The block's own transaction rolled back with the denial, so the record is written in a
    transaction of its own: a refused escalation leaves a trace.
    """
    try:
        yield
    except CapabilityDenied as exc:
        with rt.db.tenant_transaction(ctx.tenant_id) as tx:
            record_action(
                tx,
                ctx,
                action=action,
                outcome="denied",
                reason=f"capability_missing:{exc.capability}",
                target_type=target_type,
                target_id=target_id,
                now=rt.clock.now(),
            )
        raise


def _credential_type(credential_id: str) -> str:
    if not credential_id:
        return ""
    return "session" if credential_id.startswith("session:") else "api_key"


def record_failure(rt: Runtime, exc: InvalidCredentials, *, rid: str, action: str) -> None:
    """Audit an authentication failure: in the key's tenant if the key is known, else in the
    platform chain. The outward answer stays the same 401 either way."""
    tenant = exc.tenant_id or PLATFORM_TENANT_ID
    _log.info("auth.failed", reason=exc.reason)
    with rt.db.tenant_transaction(tenant) as tx:
        append(
            tx,
            tenant_id=tenant,
            request_id=rid,
            now=rt.clock.now(),
            record=AuditRecord(
                action="auth.authenticate",
                outcome="failure",
                actor=_ANONYMOUS,
                reason=exc.reason,
                target_type=_credential_type(exc.credential_id),
                target_id=exc.credential_id,
                payload={"for_action": action},
            ),
        )


@dataclass(frozen=True, slots=True, order=True)
class Operation:
    """One method on one path of the gateway, and the actions it declares."""

    method: str
    path: str
    actions: tuple[str, ...]


def operations(app: FastAPI) -> list[Operation]:
    """Every method of every route, with its declared actions. The security suites enumerate
    this (and check it against the OpenAPI document) instead of keeping a hand list."""
    found: list[Operation] = []
    for context in iter_route_contexts(app.routes):
        route = context.route
        if not isinstance(route, APIRoute):
            continue
        declared: list[str] = []
        pending = list(route.dependant.dependencies)
        while pending:
            dependant = pending.pop()
            if isinstance(dependant.call, Authorize):
                declared.append(dependant.call.action)
            pending.extend(dependant.dependencies)
        found.extend(
            Operation(method, context.path or route.path, tuple(sorted(declared)))
            for method in context.methods or ()
            if method != "HEAD"
        )
    return sorted(found)
