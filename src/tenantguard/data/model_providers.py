"""Model providers, bring your own key: strict BYOK as an invariant.

A tenant's provider names a kind, a base URL, the vault secret that holds its key, and the
models it may serve. `resolve(model)` finds the tenant's own provider for the model, or one
shared with the tenant by an explicit, audited grant; otherwise it raises
`ModelProviderMissing`. There is no silent shared pool: a request uses the tenant's own
credential or a granted one, or fails, and the audit says which: a denial and a shared
provider's use as `model.resolve`; the tenant's own key's read as the vault's `secret.read`
(with `RecentReads`, once a minute; the caller's event of each call names the key's version).

Reaching private endpoints (Ollama, vLLM) additionally needs an egress grant (agents issue).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from pydantic import SecretStr

from tenantguard.audit.store import record_action
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import secrets
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import ModelProviderMissing, NotFound, RequestInvalid

Kind = Literal[
    "openai", "anthropic", "mistral", "ollama", "vllm", "openai_compatible", "anthropic_compatible"
]
ANTHROPIC_KINDS = frozenset({"anthropic", "anthropic_compatible"})  # the Messages API
KINDS: tuple[str, ...] = get_args(Kind)
# Hosted kinds: a default base URL, HTTPS only, and a key is required.
HOSTED: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "mistral": "https://api.mistral.ai/v1",
}
_COLUMNS = "id, name, kind, base_url, secret_name, models, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class ModelProvider:
    id: UUID
    name: str
    kind: str
    base_url: str
    secret_name: str | None
    models: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What a model call needs, for one call: never stored, never logged."""

    provider: str
    kind: str
    base_url: str
    model: str
    api_key: SecretStr | None
    shared: bool
    key_version: int | None = None  # the vault version of `api_key`, for the call's audit
    audited: secrets.ReadKey | None = None  # to `RecentReads.mark` once committed


def _provider(row: tuple[object, ...]) -> ModelProvider:
    values = list(row)
    values[5] = tuple(values[5])  # type: ignore[arg-type]
    return ModelProvider(*values)  # type: ignore[arg-type]


_URL_TEXT = re.compile(r"[!-~]+")  # printable ASCII, no blanks or control characters


def check_base_url(kind: str, base_url: str | None) -> str:
    """The provider's base URL, validated on the very string that is stored: printable ASCII,
    http(s), a host, a valid port if any, and no credentials, query, fragment or backslash
    (not even empty ones); https for hosted kinds, which default to their public endpoint."""
    url = base_url if base_url is not None else HOSTED.get(kind)
    if url is None:
        raise RequestInvalid(f"A {kind} provider needs a base_url.")
    invalid = RequestInvalid(
        "A base_url is an absolute http(s) URL of printable ASCII, without credentials,"
        " query or fragment."
    )
    if not _URL_TEXT.fullmatch(url) or set(url) & set("@?#\\"):
        raise invalid
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise invalid from exc
    if parts.scheme not in ("http", "https") or not host:
        raise invalid
    if kind in HOSTED and parts.scheme != "https":
        raise RequestInvalid(f"A {kind} provider is reached over https only.")
    return url.rstrip("/")


def put(
    conn: Connection,
    ctx: TenantContext,
    name: str,
    *,
    kind: str,
    base_url: str | None,
    secret_name: str | None,
    models: list[str],
    now: datetime,
) -> ModelProvider:
    """Create or replace the tenant's provider `name`."""
    if kind not in KINDS:
        raise RequestInvalid("Unknown provider kind.")
    url = check_base_url(kind, base_url)
    if kind in HOSTED and secret_name is None:
        raise RequestInvalid(f"A {kind} provider needs the name of the secret holding its key.")
    if secret_name is not None:
        try:
            secrets.versions(conn, ctx.tenant_id, secret_name)
        except NotFound as exc:
            raise RequestInvalid("No secret of that name in this tenant's vault.") from exc
    unique_models = sorted(set(models))
    existing = conn.execute(
        "SELECT id FROM tenantguard.model_providers WHERE tenant_id = %s AND name = %s"
        " AND deleted_at IS NULL FOR UPDATE",
        (ctx.tenant_id, name),
    ).fetchone()
    if existing is None:
        row = conn.execute(
            "INSERT INTO tenantguard.model_providers (tenant_id, id, name, kind, base_url,"
            " secret_name, models, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s,"
            f" %s, %s) RETURNING {_COLUMNS}",
            (ctx.tenant_id, uuid4(), name, kind, url, secret_name, unique_models, now, now),
        ).fetchone()
    else:
        row = conn.execute(
            "UPDATE tenantguard.model_providers SET kind = %s, base_url = %s, secret_name = %s,"
            f" models = %s, updated_at = %s WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}",
            (kind, url, secret_name, unique_models, now, ctx.tenant_id, existing[0]),
        ).fetchone()
    assert row is not None  # noqa: S101 (RETURNING of the row just written)
    record_action(
        conn,
        ctx,
        action="model_provider.put",
        target_type="model_provider",
        target_id=name,
        now=now,
        payload={
            "kind": kind,
            "base_url": url,
            "secret_name": secret_name,
            "models": unique_models,
        },
    )
    return _provider(row)


def list_providers(conn: Connection, tenant_id: UUID) -> list[ModelProvider]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.model_providers WHERE tenant_id = %s"
        " AND deleted_at IS NULL ORDER BY name",
        (tenant_id,),
    ).fetchall()
    return [_provider(r) for r in rows]


def get(conn: Connection, tenant_id: UUID, name: str) -> ModelProvider:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.model_providers WHERE tenant_id = %s AND name = %s"
        " AND deleted_at IS NULL",
        (tenant_id, name),
    ).fetchone()
    if row is None:
        raise NotFound()
    return _provider(row)


def delete(conn: Connection, ctx: TenantContext, name: str, *, now: datetime) -> None:
    provider = get(conn, ctx.tenant_id, name)
    conn.execute(
        "UPDATE tenantguard.model_providers SET deleted_at = %s WHERE tenant_id = %s AND id = %s",
        (now, ctx.tenant_id, provider.id),
    )
    record_action(
        conn,
        ctx,
        action="model_provider.delete",
        target_type="model_provider",
        target_id=name,
        now=now,
    )


def grant_shared(
    conn: Connection,
    ctx: TenantContext,
    shared_provider: str,
    *,
    reason: str,
    granted_by: str,
    now: datetime,
) -> None:
    """Let `ctx`'s tenant use the platform's provider `shared_provider`. Audited in the
    tenant's chain; the operator realm (identity issue) will gate who may call this."""
    conn.execute(
        "INSERT INTO tenantguard.model_provider_grants (tenant_id, shared_provider, granted_at,"
        " granted_by, reason) VALUES (%s, %s, %s, %s, %s)",
        (ctx.tenant_id, shared_provider, now, granted_by, reason),
    )
    record_action(
        conn,
        ctx,
        action="model_provider.grant_shared",
        target_type="model_provider",
        target_id=shared_provider,
        now=now,
        payload={"granted_by": granted_by, "reason": reason},
    )


def revoke_shared(
    conn: Connection, ctx: TenantContext, shared_provider: str, *, now: datetime
) -> None:
    revoked = conn.execute(
        "UPDATE tenantguard.model_provider_grants SET revoked_at = %s WHERE tenant_id = %s"
        " AND shared_provider = %s AND revoked_at IS NULL RETURNING granted_at",
        (now, ctx.tenant_id, shared_provider),
    ).fetchone()
    if revoked is None:
        raise NotFound()
    record_action(
        conn,
        ctx,
        action="model_provider.revoke_shared",
        target_type="model_provider",
        target_id=shared_provider,
        now=now,
    )


def _serving(
    conn: Connection, tenant_id: UUID, model: str, *, among: list[str] | None = None
) -> ModelProvider | None:
    """The first provider (by name) serving `model`, only among `among` when given."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tenantguard.model_providers WHERE tenant_id = %s"
        " AND deleted_at IS NULL AND %s = ANY (models)"
        " AND (%s::text[] IS NULL OR name = ANY (%s::text[])) ORDER BY name LIMIT 1",
        (tenant_id, model, among, among),
    ).fetchone()
    return None if row is None else _provider(row)


def resolve(
    db: Database,
    ctx: TenantContext,
    keyring: Keyring,
    model: str,
    *,
    now: datetime,
    recent: secrets.RecentReads | None = None,
) -> ResolvedModel:
    """The provider and key for `model`, acting for `ctx`'s tenant: its own provider, else a
    granted shared one, else `ModelProviderMissing`."""
    with db.tenant_transaction(ctx.tenant_id) as tx:
        own = resolve_own(tx, ctx, keyring, model, now=now, recent=recent)
    if own is None:
        return resolve_shared(db, ctx, keyring, model, now=now)
    if recent is not None:
        recent.mark(own.audited)
    return own


def resolve_own(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    model: str,
    *,
    now: datetime,
    recent: secrets.RecentReads | None = None,
) -> ResolvedModel | None:
    """The tenant's own provider for `model` and its key, in the caller's transaction `conn`
    (mark `audited` in `recent` once it commits), or None."""
    own = _serving(conn, ctx.tenant_id, model)
    if own is None:
        return None
    if own.secret_name is None:
        return ResolvedModel(own.name, own.kind, own.base_url, model, None, shared=False)
    unsealed = secrets.read_current(
        conn, ctx, keyring, own.secret_name, use=f"model:{own.name}", now=now, recent=recent
    )
    return ResolvedModel(
        own.name,
        own.kind,
        own.base_url,
        model,
        SecretStr(unsealed.value.decode("utf-8")),
        shared=False,
        key_version=unsealed.version,
        audited=unsealed.audited,
    )


def resolve_shared(
    db: Database, ctx: TenantContext, keyring: Keyring, model: str, *, now: datetime
) -> ResolvedModel:
    """A platform provider shared with `ctx`'s tenant by a live grant, for a tenant with none
    of its own for `model`; else `ModelProviderMissing`. Audited in the tenant's chain either
    way, every call; the platform key's read in the platform's."""
    with db.tenant_transaction(ctx.tenant_id) as tx:
        granted = [
            str(r[0])
            for r in tx.execute(
                "SELECT shared_provider FROM tenantguard.model_provider_grants WHERE tenant_id = %s"
                " AND revoked_at IS NULL ORDER BY shared_provider",
                (ctx.tenant_id,),
            ).fetchall()
        ]
    platform = TenantContext(PLATFORM_TENANT_ID, ctx.principal, frozenset(), ctx.request_id)
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        shared = _serving(tx, PLATFORM_TENANT_ID, model, among=granted)
        key = None
        if shared is not None and shared.secret_name is not None:
            use = f"model:{shared.name}:for:{ctx.tenant_id}"
            value = secrets.read(tx, platform, keyring, shared.secret_name, use=use, now=now)
            key = SecretStr(value.decode("utf-8"))
    with db.tenant_transaction(ctx.tenant_id) as tx:
        record_action(
            tx,
            ctx,
            action="model.resolve",
            target_type="model",
            target_id=model,
            now=now,
            outcome="success" if shared is not None else "denied",
            reason="" if shared is not None else "no_provider",
            payload={"shared_provider": shared.name if shared is not None else None},
        )
    if shared is None:
        raise ModelProviderMissing()
    return ResolvedModel(shared.name, shared.kind, shared.base_url, model, key, shared=True)
