"""`tenantguard keys …`: status, rotation, KEK rewrap, re-encryption, rotation policy."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from typing import Annotated
from uuid import UUID

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from tenantguard.audit.store import AuditRecord, append
from tenantguard.cli._common import CLI, database, load_settings, out
from tenantguard.clock import SystemClock
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext, accept_request_id
from tenantguard.crypto import signing
from tenantguard.crypto.fields import reencrypt
from tenantguard.crypto.keyring import Keyring, open_keyring
from tenantguard.data.columns import ENCRYPTED_COLUMNS
from tenantguard.data.tenants import tenant_ids
from tenantguard.errors import RequestInvalid

keys_app = typer.Typer(no_args_is_help=True, help="Data keys and key-encryption keys.")
TenantOption = Annotated[UUID, typer.Option("--tenant", help="The tenant to act on.")]


def _ctx(tenant: UUID) -> TenantContext:
    return TenantContext(tenant, CLI, frozenset(), accept_request_id(None))


@keys_app.command("status")
def status(
    tenant: Annotated[
        UUID | None, typer.Option("--tenant", help="One tenant (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Key versions, their ages, and what is due for rotation."""
    settings = load_settings()
    now = SystemClock().now()
    rows: list[dict[str, object]] = []
    with database(settings) as db:
        for tenant_id in [tenant] if tenant else tenant_ids(db):
            with db.tenant_transaction(tenant_id) as tx:
                found = Keyring.status(tx, tenant_id)
            due = set(found.due(now))
            for v in found.versions:
                state = "active" if v.active else "destroyed" if v.destroyed_at else "retired"
                rows.append(
                    {
                        "tenant": str(tenant_id),
                        "purpose": v.purpose,
                        "version": v.version,
                        "kek": v.kek_id,
                        "age_days": (now - v.created_at).days,
                        "state": state,
                        "due": v.active and v.purpose in due,
                        "rotation_days": found.rotation.days,
                    }
                )
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="Data keys", title_justify="left")
    for column in ("tenant", "purpose", "version", "kek", "age_days", "state", "due"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                str(row[c])
                for c in ("tenant", "purpose", "version", "kek", "age_days", "state", "due")
            )
        )
    out.print(table)


@keys_app.command("rotate")
def rotate(
    tenant: TenantOption,
    purpose: Annotated[list[str] | None, typer.Option(help="Only these purposes.")] = None,
) -> None:
    """New data key versions for a tenant; old versions keep opening old data."""
    settings = load_settings()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        rotated = ring.rotate(tx, _ctx(tenant), purpose)
    for name, version in rotated.items():
        out.print(f"{name}: now version {version}")
    if not rotated:
        out.print("no active data keys to rotate")


@keys_app.command("rewrap")
def rewrap(
    new_kek: Annotated[bool, typer.Option(help="Create a new KEK version first.")] = True,
    tenant: Annotated[
        UUID | None, typer.Option("--tenant", help="One tenant (default: all).")
    ] = None,
) -> None:
    """Rewrap data keys under the newest KEK. Data is not touched. Each tenant commits on its
    own, so an interrupted run is finished by running it again with --no-new-kek."""
    settings = load_settings()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    with database(settings) as db:
        if new_kek:
            kek_id = ring.kek.rotate()
            with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
                append(
                    tx,
                    tenant_id=PLATFORM_TENANT_ID,
                    request_id=accept_request_id(None),
                    now=clock.now(),
                    record=AuditRecord(
                        action="kek.rotate",
                        outcome="success",
                        actor=CLI,
                        target_type="kek",
                        target_id=kek_id,
                    ),
                )
            out.print(f"new key-encryption key: {kek_id}")
        total = 0
        for tenant_id in [tenant] if tenant else tenant_ids(db):
            with db.tenant_transaction(tenant_id) as tx:
                total += ring.rewrap(tx, _ctx(tenant_id))
    out.print(f"rewrapped {total} data keys under {ring.kek.active_id()}")


@keys_app.command("reencrypt")
def reencrypt_command(tenant: TenantOption) -> None:
    """Move a tenant's sealed values onto the newest key versions (resumable, idempotent)."""
    settings = load_settings()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    ctx = _ctx(tenant)
    with (
        database(settings) as db,
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=out
        ) as progress,
    ):
        for column in ENCRYPTED_COLUMNS:
            with db.tenant_transaction(tenant) as tx:
                (total,) = tx.execute(
                    f"SELECT count(*) FROM tenantguard.{column.table}"  # a registered name
                    f" WHERE tenant_id = %s AND {column.column} IS NOT NULL",
                    (tenant,),
                ).fetchone() or (0,)
            task = progress.add_task(column.purpose, total=int(str(total)))
            result = reencrypt(
                db, ring, ctx, column, clock=clock, progress=partial(progress.advance, task)
            )
            progress.console.print(
                f"{column.purpose}: {result.reencrypted} of {result.examined} values re-sealed"
            )


@keys_app.command("policy")
def policy(
    tenant: TenantOption,
    rotation_days: Annotated[int, typer.Option(help="Rotate data keys after this many days.")],
) -> None:
    """Set a tenant's rotation period (default 90 days)."""
    settings = load_settings()
    ring = open_keyring(settings, clock=SystemClock(), create=False)
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        ring.set_rotation(tx, _ctx(tenant), timedelta(days=rotation_days))
    out.print(f"tenant {tenant}: data keys rotate every {rotation_days} days")


signing_app = typer.Typer(no_args_is_help=True, help="The platform's Ed25519 signing keys.")


@signing_app.command("rotate")
def signing_rotate(
    overlap_hours: Annotated[
        float, typer.Option(help="How long the previous key keeps verifying.")
    ] = 24.0,
) -> None:
    """Make a new signing key active; the previous one verifies until the overlap ends."""
    settings = load_settings()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    with database(settings) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        kid = signing.rotate(
            tx,
            _ctx(PLATFORM_TENANT_ID),
            ring,
            now=clock.now(),
            overlap=timedelta(hours=overlap_hours),
        )
    out.print(f"signing key {kid} is active")


@signing_app.command("export")
def signing_export() -> None:
    """Print the public keys that verify now, as a JWKS (for independent verifiers)."""
    settings = load_settings()
    with database(settings) as db, db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        keys = signing.public_keys(tx, now=SystemClock().now())
    print(json.dumps(signing.jwks(keys), indent=2))


@keys_app.command("shred")
def shred(
    tenant: TenantOption,
    confirm: Annotated[
        str, typer.Option(help="The tenant id again: crypto-shredding cannot be undone.")
    ],
) -> None:
    """Destroy every data key of a tenant: nothing sealed under them opens again, for anyone.
    (The full tenant purge, rows and artifacts included, builds on this.)"""
    if confirm != str(tenant):
        raise RequestInvalid("--confirm must repeat the tenant id.")
    settings = load_settings()
    ring = open_keyring(settings, clock=SystemClock(), create=False)
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        destroyed = ring.destroy_all(tx, _ctx(tenant))
    out.print(f"tenant {tenant}: {destroyed} data keys destroyed")
