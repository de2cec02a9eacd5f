"""`tenantguard operators …`: the platform realm's people, managed from the host only.

No API adds or removes an operator: whoever holds an operator's session must not be able to
mint another one. Each change is audited in the platform chain with the CLI as its actor.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from tenantguard.cli._common import CLI, database, load_settings, out
from tenantguard.clock import SystemClock
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext, accept_request_id
from tenantguard.identity import users

operators_app = typer.Typer(
    no_args_is_help=True, help="Platform operators (the vendor's staff; members of no tenant)."
)


def _ctx() -> TenantContext:
    return TenantContext(PLATFORM_TENANT_ID, CLI, frozenset(), accept_request_id(None))


@operators_app.command("add")
def operators_add(email: Annotated[str, typer.Argument(help="The operator's address.")]) -> None:
    """Add an operator; they sign in by magic link and must enrol TOTP before anything else."""
    settings = load_settings()
    with database(settings) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        user = users.add(tx, _ctx(), email=email, role="operator", now=SystemClock().now())
    print(f"operator {user.email} added: {user.id}")  # plain: scripts read the id


@operators_app.command("list")
def operators_list() -> None:
    """The operators, one per line: id and address."""
    settings = load_settings()
    with database(settings) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        found = users.list_users(tx, PLATFORM_TENANT_ID)
    for user in found:
        print(f"{user.id}  {user.email}")
    if not found:
        out.print("no operators")


@operators_app.command("remove")
def operators_remove(operator: Annotated[UUID, typer.Argument(help="The operator's id.")]) -> None:
    """Remove an operator; every session of theirs ends at once."""
    settings = load_settings()
    with database(settings) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        users.remove(tx, _ctx(), operator, now=SystemClock().now())
    out.print(f"operator {operator} removed; their sessions are revoked")
