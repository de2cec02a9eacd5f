"""`tenantguard providers …`: the platform's shared model providers and grants of them.

Shared providers live in the platform realm; a tenant uses one only after a grant with a
reason, audited in its own chain. (The operator realm, with sign-in and step-up, arrives with
the identity and operator-access issues; until then these run with the CLI's authority.)
"""

from __future__ import annotations

import sys
from typing import Annotated
from uuid import UUID

import typer

from tenantguard.cli._common import CLI, database, load_settings, out
from tenantguard.clock import SystemClock
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext, accept_request_id
from tenantguard.crypto.keyring import open_keyring
from tenantguard.data import model_providers, secrets
from tenantguard.errors import RequestInvalid

providers_app = typer.Typer(no_args_is_help=True, help="Shared model providers and grants.")


def _ctx(tenant: UUID) -> TenantContext:
    return TenantContext(tenant, CLI, frozenset(), accept_request_id(None))


@providers_app.command("put-shared")
def put_shared(
    name: str,
    kind: Annotated[str, typer.Option(help="openai, anthropic, mistral, ollama, vllm, ...")],
    model: Annotated[list[str], typer.Option(help="A model it serves (repeatable).")],
    base_url: Annotated[str | None, typer.Option(help="Default for hosted kinds.")] = None,
    key_from_stdin: Annotated[
        bool, typer.Option(help="Read the provider's API key from standard input.")
    ] = False,
) -> None:
    """Create or replace a shared provider in the platform realm."""
    settings = load_settings()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    platform = _ctx(PLATFORM_TENANT_ID)
    with database(settings) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        secret_name = None
        if key_from_stdin:
            key = sys.stdin.readline().strip()
            if not key:
                raise RequestInvalid("No key on standard input.")
            secret_name = f"shared-{name}"
            secrets.write(tx, platform, ring, secret_name, key.encode(), now=clock.now())
        model_providers.put(
            tx,
            platform,
            name,
            kind=kind,
            base_url=base_url,
            secret_name=secret_name,
            models=model,
            now=clock.now(),
        )
    out.print(f"shared provider {name!r} serves {', '.join(sorted(set(model)))}")


@providers_app.command("grant")
def grant(
    tenant: Annotated[UUID, typer.Option("--tenant")],
    shared: Annotated[str, typer.Option(help="The shared provider's name.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the tenant's audit).")],
) -> None:
    """Let a tenant use a shared provider (audited in the tenant's chain)."""
    settings = load_settings()
    clock = SystemClock()
    with database(settings) as db:
        with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            model_providers.get(tx, PLATFORM_TENANT_ID, shared)  # it must exist
        with db.tenant_transaction(tenant) as tx:
            model_providers.grant_shared(
                tx,
                _ctx(tenant),
                shared,
                reason=reason,
                granted_by=f"{CLI.type}:{CLI.id}",
                now=clock.now(),
            )
    out.print(f"tenant {tenant} may use shared provider {shared!r}")


@providers_app.command("revoke")
def revoke(
    tenant: Annotated[UUID, typer.Option("--tenant")],
    shared: Annotated[str, typer.Option(help="The shared provider's name.")],
) -> None:
    """Withdraw a tenant's grant of a shared provider; effective on the next resolution."""
    settings = load_settings()
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        model_providers.revoke_shared(tx, _ctx(tenant), shared, now=SystemClock().now())
    out.print(f"tenant {tenant} may no longer use shared provider {shared!r}")
