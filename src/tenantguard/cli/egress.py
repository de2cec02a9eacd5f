"""`tenantguard egress grant|revoke|list`: private networks a tenant's outbound calls may reach
(its own model server, say), granted from the host by the platform's operator, with a reason,
audited in the tenant's chain. Tenants set only host lists, which narrow; reaching a private
address takes one of these."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from tenantguard.cli._common import CLI, database, load_settings, out
from tenantguard.clock import SystemClock
from tenantguard.context import TenantContext, accept_request_id
from tenantguard.data import egress

egress_app = typer.Typer(no_args_is_help=True, help="Egress grants of private networks.")


def _ctx(tenant: UUID) -> TenantContext:
    return TenantContext(tenant, CLI, frozenset(), accept_request_id(None))


@egress_app.command("grant")
def grant(
    tenant: Annotated[UUID, typer.Option(help="The tenant that may reach the network.")],
    network: Annotated[str, typer.Option(help="An address or network, e.g. 10.0.0.5/32.")],
    port: Annotated[list[int], typer.Option(help="A port it may reach (repeatable).")],
    reason: Annotated[str, typer.Option(help="Why (kept in the tenant's audit).")],
) -> None:
    """Let a tenant's outbound calls reach a private network on some ports."""
    settings = load_settings()
    clock = SystemClock()
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        made = egress.add_grant(
            tx,
            _ctx(tenant),
            network=network,
            ports=port,
            reason=reason,
            granted_by="cli",
            now=clock.now(),
        )
    out.print(f"granted {made.network} ports {made.ports} to {tenant}: {made.id}")


@egress_app.command("revoke")
def revoke(
    tenant: Annotated[UUID, typer.Option(help="The tenant.")],
    grant_id: Annotated[UUID, typer.Option("--id", help="The grant to revoke.")],
) -> None:
    """Revoke a grant: the next outbound call is refused."""
    settings = load_settings()
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        egress.revoke_grant(tx, _ctx(tenant), grant_id, now=SystemClock().now())
    out.print(f"revoked {grant_id}")


@egress_app.command("list")
def list_grants(tenant: Annotated[UUID, typer.Option(help="The tenant.")]) -> None:
    """The tenant's grants, revoked ones included."""
    settings = load_settings()
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        grants = egress.list_grants(tx, tenant)
    for g in grants:
        state = f"revoked {g.revoked_at:%Y-%m-%d}" if g.revoked_at else "active"
        out.print(f"{g.id}  {g.network}  ports {g.ports}  {state}  {g.reason}")
