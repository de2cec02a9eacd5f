"""The `tenantguard` command: set-up, the gateway, the doctor, tenants, audit, and the demo.

Settings are read once here (`Settings()`), from `TENANTGUARD_*`; flags override them. Every
command that creates a secret prints it once, on its own line, and has `--json` for scripts.
Errors print their safe detail and exit non-zero; nothing prints a stack trace at a user.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from tenantguard.audit import verify_tenant
from tenantguard.cli._common import CLI, database, err, load_settings, out
from tenantguard.cli.egress import egress_app
from tenantguard.cli.evidence import evidence_app
from tenantguard.cli.keys import keys_app, signing_app
from tenantguard.cli.operators import operators_app
from tenantguard.cli.pii import pii_app
from tenantguard.cli.providers import providers_app
from tenantguard.clock import SystemClock
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext, accept_request_id
from tenantguard.crypto import signing
from tenantguard.db import endpoints, migrate
from tenantguard.db.doctor import DoctorReport, examine
from tenantguard.db.roles import provision
from tenantguard.errors import (
    AuditVerificationFailed,
    ConfigurationError,
    RequestInvalid,
    TenantGuardError,
)

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)
db_app = typer.Typer(no_args_is_help=True, help="Database roles and migrations.")
tenants_app = typer.Typer(no_args_is_help=True, help="Tenants.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(audit_app, name="audit")
users_app = typer.Typer(no_args_is_help=True, help="Tenant users.")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(signing_app, name="signing-keys")
app.add_typer(providers_app, name="providers")
app.add_typer(operators_app, name="operators")
app.add_typer(evidence_app, name="evidence")
app.add_typer(pii_app, name="pii")
app.add_typer(egress_app, name="egress")


def print_report(report: DoctorReport, console: Console) -> None:
    if report.ok:
        console.print("[green]doctor: no findings[/green] — the database is safe to serve.")
        return
    table = Table(title="tenantguard doctor: findings", title_justify="left")
    for column in ("check", "subject", "problem"):
        table.add_column(column)
    for finding in report.findings:
        table.add_row(finding.check, finding.subject, finding.problem)
    console.print(table)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Findings as JSON.")] = False,
) -> None:
    """Check the live catalog: RLS on every tenant table, the service role, audit grants,
    durability. Exits 1 on any finding."""
    settings = load_settings()
    with database(settings) as db, db.system_transaction() as tx:
        report = examine(tx)
    if as_json:
        findings = [
            {"check": f.check, "subject": f.subject, "problem": f.problem} for f in report.findings
        ]
        out.print_json(json.dumps({"ok": report.ok, "findings": findings}))
    else:
        print_report(report, out)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the gateway. Refuses to start if the doctor has any finding."""
    import uvicorn  # noqa: PLC0415 (only the server needs it)

    from tenantguard.gateway import create_app  # noqa: PLC0415

    settings = load_settings(host=host, port=port)
    gateway = settings.gateway()
    served = create_app(settings)
    # What start-up made (modules, tables, the app) lives as long as the process: moved out of
    # the collector's sight, a full collection no longer walks it (a 90 ms pause seen in the
    # gateway benchmark's tail).
    gc.freeze()
    uvicorn.run(
        served,
        host=gateway.host,
        port=gateway.port,
        access_log=False,
        log_config=None,
        server_header=False,
    )


@app.command()
def demo(
    data_root: Annotated[
        Path | None, typer.Option(help="Keep the demo's data here (default: a fresh temp dir).")
    ] = None,
) -> None:
    """The guided demo: a gateway with two tenants, attacks refused, audit verified."""
    from tenantguard.demo import run_demo  # noqa: PLC0415

    if not run_demo(data_root=data_root, console=out):
        raise typer.Exit(1)


@app.command()
def init() -> None:
    """Set up a deployment: the data root, the first key-encryption key (key file or HSM),
    and, with the embedded default, a provisioned and migrated database. Idempotent."""
    from tenantguard.context import PLATFORM_TENANT_ID, TenantContext  # noqa: PLC0415
    from tenantguard.crypto import signing  # noqa: PLC0415
    from tenantguard.crypto.keyring import open_keyring  # noqa: PLC0415
    from tenantguard.db import Database  # noqa: PLC0415

    settings = load_settings()
    settings.data_root.mkdir(parents=True, exist_ok=True)
    ring = open_keyring(settings, clock=SystemClock(), create=True)
    out.print(f"key-encryption key: {ring.kek.active_id()} ({settings.kek_provider})")
    platform = TenantContext(PLATFORM_TENANT_ID, CLI, frozenset(), accept_request_id(None))
    with (
        endpoints(settings.database()) as found,
        Database(found.app_url, min_size=1, max_size=1) as db,
        db.tenant_transaction(PLATFORM_TENANT_ID) as tx,
    ):
        kid = signing.ensure(tx, platform, ring, now=SystemClock().now())
    where = "embedded, under " + str(settings.data_root / "pg") if found.embedded else "external"
    out.print(f"signing key: {kid}")
    out.print(f"database: {where}; data root: {settings.data_root}")


@app.command()
def outbox(
    last: Annotated[int, typer.Option(help="Show this many of the newest messages.")] = 5,
) -> None:
    """Show the mail the embedded default would have sent (sign-in links included)."""
    from tenantguard.mail import OutboxMailer  # noqa: PLC0415

    settings = load_settings()
    messages = OutboxMailer(settings.data_root / "outbox").messages()[-last:]
    if not messages:
        out.print("the outbox is empty")
    for message in messages:
        out.print(f"[bold]To:[/bold] {message['To']}  [bold]Subject:[/bold] {message['Subject']}")
        body = message.get_body(preferencelist=("plain",))
        print(body.get_content() if body is not None else "")


@users_app.command("add")
def users_add(
    tenant: Annotated[UUID, typer.Option("--tenant")],
    email: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option(help="owner, admin, member or auditor")] = "member",
) -> None:
    """Add a user to a tenant (the first owner, typically); they sign in by magic link."""
    from tenantguard.context import TenantContext  # noqa: PLC0415
    from tenantguard.identity import users  # noqa: PLC0415

    settings = load_settings()
    ctx = TenantContext(tenant, CLI, frozenset(), accept_request_id(None))
    with database(settings) as db, db.tenant_transaction(tenant) as tx:
        user = users.add(tx, ctx, email=email, role=role, now=SystemClock().now())
    out.print(f"user {user.email} ({user.role}) added: {user.id}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations as the owner role (idempotent)."""
    settings = load_settings()
    config = settings.database()
    with endpoints(config) as found:
        if found.owner_url is None:
            raise ConfigurationError("Set TENANTGUARD_DATABASE_OWNER_URL to run migrations.")
        applied = migrate.upgrade(found.owner_url)
    for migration in applied:
        out.print(f"applied {migration.version:04d}_{migration.name}")
    out.print(f"schema is at version {len(migrate.load_migrations())}")


@db_app.command("provision")
def db_provision(
    admin_url: Annotated[str, typer.Option(help="A superuser URL, used once, never stored.")],
    database: Annotated[str, typer.Option(help="The database to create.")] = "tenantguard",
) -> None:
    """Create the owner, app and auth roles and the database on an external server."""
    load_settings()
    provision(SecretStr(admin_url), database)
    out.print(f"provisioned database {database!r} with roles tenantguard_owner/_app/_auth")


@tenants_app.command("create")
def tenants_create(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create a tenant and print its id and admin API key (shown once)."""
    from tenantguard.data.tenants import create_tenant  # noqa: PLC0415

    settings = load_settings()
    with database(settings) as db:
        created = create_tenant(
            db, name=name, actor=CLI, request_id=accept_request_id(None), now=SystemClock().now()
        )
    if as_json:
        print(
            json.dumps({"tenant_id": str(created.tenant_id), "api_key": created.admin_key.secret})
        )
        return
    out.print(f"tenant {created.name!r} created: {created.tenant_id}")
    out.print("admin API key (shown once; store it now):")
    print(created.admin_key.secret)


@tenants_app.command("purge")
def tenants_purge(
    tenant: UUID,
    confirm: Annotated[str, typer.Option(help="The tenant id again: a purge cannot be undone.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Purge a tenant: revoke its credentials, destroy its data keys, delete its artifacts,
    files and rows, and check that nothing is left (the platform's audit keeps a tombstone).
    Run it again to complete a purge that was interrupted."""
    from tenantguard.crypto.keyring import open_keyring  # noqa: PLC0415
    from tenantguard.purge import Purger  # noqa: PLC0415

    if confirm != str(tenant):
        raise RequestInvalid("--confirm must repeat the tenant id.")
    settings = load_settings()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    store = settings.object_store()
    actor = TenantContext(PLATFORM_TENANT_ID, CLI, frozenset(), accept_request_id(None))
    try:
        with database(settings) as db:
            report = Purger(db, ring, store, settings.data_root, clock).purge(actor, tenant)
    finally:
        store.close()
        ring.close()
    if as_json:
        print(
            json.dumps(
                {
                    "tenant_id": str(tenant),
                    "verified": report.verified,
                    "already_done": report.already_done,
                    "rows": report.rows,
                    "objects": report.objects,
                    "keys_destroyed": report.keys_destroyed,
                }
            )
        )
        return
    if report.already_done:
        out.print(f"tenant {tenant}: already purged")
        return
    total = sum(report.rows.values())
    out.print(
        f"tenant {tenant}: purged ({total} rows in {len(report.rows)} tables,"
        f" {report.objects} objects, {report.keys_destroyed} data keys); nothing is left"
    )


@audit_app.command("verify")
def audit_verify(
    export: Annotated[
        Path | None, typer.Argument(help="An export file to check offline (no database).")
    ] = None,
    tenant: Annotated[
        UUID | None, typer.Option(help="Check this tenant's log in the database instead.")
    ] = None,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(help="The platform keys you trust (its JWKS, or an export's key list)."),
    ] = None,
    trust_embedded_keys: Annotated[
        bool,
        typer.Option(help="UNSAFE: check an export's signatures against its own key list."),
    ] = False,
) -> None:
    """Verify an audit log: offline from an export (`audit verify EXPORT`), or in the database
    (`--tenant`): the hash chain, the Merkle tree, and every signed checkpoint (stored and
    witnessed) against the log. Exit 1 naming the first bad entry."""
    if (export is None) == (tenant is None):
        err.print("give either an export file or --tenant")
        raise typer.Exit(2)
    if export is not None:
        _verify_export_file(export, trusted_keys, trust_embedded_keys=trust_embedded_keys)
        return
    assert tenant is not None  # noqa: S101 (checked above)
    from tenantguard.audit.checkpoints import verify_checkpoints  # noqa: PLC0415

    settings = load_settings()
    with database(settings) as db:
        with db.tenant_transaction(tenant) as tx:
            verdict = verify_tenant(tx, tenant_id=tenant)
        if not verdict.ok:
            err.print(
                f"[red]audit chain broken[/red] at seq {verdict.first_bad_seq}: {verdict.problem}"
            )
            raise typer.Exit(1)
        try:
            checked = verify_checkpoints(db, settings.checkpoints(), tenant)
        except AuditVerificationFailed as exc:
            err.print(f"[red]audit log contradicts a signed checkpoint[/red]: {exc.detail}")
            raise typer.Exit(1) from None
    out.print(
        f"[green]audit log intact[/green]: {verdict.checked} events, "
        f"head {verdict.head.hex()[:16]}…, {checked} signed checkpoints consistent with it"
    )


def pinned_keys(
    path: Path | None, *, trust_embedded_keys: bool, what: str
) -> list[signing.PublicKey] | None:
    """The keys an offline verification pins, from `--trusted-keys`; None only when the user
    said `--trust-embedded-keys` (then the file's own keys are used, with a warning)."""
    if path is None:
        if trust_embedded_keys:
            return None
        err.print(
            f"give --trusted-keys (the platform's JWKS): signatures checked against the keys"
            f" {what} carries prove nothing against whoever also replaced the keys; or, knowing"
            " that, --trust-embedded-keys"
        )
        raise typer.Exit(2)
    try:
        return signing.trusted_keys(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(f"{path} is not a key set (a JWKS or a key list).") from exc


def _verify_export_file(
    path: Path, trusted_keys: Path | None, *, trust_embedded_keys: bool
) -> None:
    from rich.progress import Progress  # noqa: PLC0415

    from tenantguard.audit.export import verify_export  # noqa: PLC0415

    load_settings()
    keys = pinned_keys(trusted_keys, trust_embedded_keys=trust_embedded_keys, what="an export")
    try:
        with path.open(encoding="utf-8") as first:
            total = int(json.loads(first.readline()).get("events", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        total = 0
    try:
        with path.open(encoding="utf-8") as lines, Progress(console=err, transient=True) as bar:
            task = bar.add_task("verifying events", total=total or None)
            verdict = verify_export(
                lines, trusted_keys=keys, progress=lambda n: bar.update(task, completed=n)
            )
    except OSError:
        err.print(f"[red]cannot read {path}[/red]")
        raise typer.Exit(2) from None
    except AuditVerificationFailed as exc:
        err.print(f"[red]export does not verify[/red] at {exc.detail}")
        raise typer.Exit(1) from None
    if not verdict.keys_pinned:
        err.print("[yellow]warning: signatures were checked against the export's own keys[/yellow]")
    out.print(
        f"[green]export verifies[/green]: tenant {verdict.tenant_id}, {verdict.events} events"
        f" as sealed at {verdict.sealed_at:%Y-%m-%dT%H:%M:%SZ}, {verdict.checkpoints} signed"
        f" checkpoints, root {verdict.root.hex()[:16]}…"
    )


@audit_app.command("export")
def audit_export(
    tenant: Annotated[UUID, typer.Option(help="The tenant whose log to export.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
) -> None:
    """Export a tenant's audit log for offline verification: events, signed checkpoints
    (stored and witnessed), the platform's public keys, and a seal signed now stating what the
    export covers; as JSON Lines."""
    from tenantguard.audit import checkpoint as notes  # noqa: PLC0415
    from tenantguard.audit import merkle  # noqa: PLC0415
    from tenantguard.audit.checkpoints import leaf_hashes, stored, witnessed  # noqa: PLC0415
    from tenantguard.audit.export import seal_text, write_export  # noqa: PLC0415
    from tenantguard.context import PLATFORM_TENANT_ID  # noqa: PLC0415
    from tenantguard.crypto.keyring import open_keyring  # noqa: PLC0415

    settings = load_settings()
    config = settings.checkpoints()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    try:
        with database(settings) as db:
            with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
                keys = signing.all_public_keys(tx)
                key = signing.active(tx, ring)
            with db.tenant_transaction(tenant) as tx:
                # Checkpoints first, then the leaves: each checkpoint is of a prefix of them.
                found = [c.note for c in stored(tx, tenant)]
                found += [n for n in witnessed(config.witness_dir, tenant) if n not in found]
                leaves = leaf_hashes(tx, tenant)
                head_row = tx.execute(
                    "SELECT chain_hash FROM tenantguard.audit_events WHERE tenant_id = %s"
                    " AND seq = %s",
                    (tenant, len(leaves) - 1),
                ).fetchone()
                now = clock.now()
                seal = notes.sign_text(
                    seal_text(
                        key_name=config.origin,
                        tenant_id=tenant,
                        events=len(leaves),
                        root=merkle.root(leaves),
                        head=bytes(head_row[0]) if head_row else bytes(32),
                        at=now,
                    ),
                    key,
                    key_name=config.origin,
                )
                with output.open("w", encoding="utf-8") as out_file:
                    written = write_export(
                        out_file,
                        tx,
                        tenant_id=tenant,
                        origin=notes.origin_of(config.origin, tenant),
                        key_name=config.origin,
                        keys=keys,
                        checkpoint_notes=found,
                        event_count=len(leaves),
                        exported_at=now,
                        seal=seal,
                    )
    finally:
        ring.close()
    out.print(f"exported {written} events and {len(found)} checkpoints to {output}")


@audit_app.command("checkpoint")
def audit_checkpoint(
    tenant: Annotated[UUID, typer.Option(help="The tenant whose log to checkpoint.")],
) -> None:
    """Sign a checkpoint of a tenant's log now (stored, and written to the witness directory)."""
    from tenantguard.audit.checkpoints import Checkpointer  # noqa: PLC0415
    from tenantguard.crypto.keyring import open_keyring  # noqa: PLC0415

    settings = load_settings()
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    try:
        with database(settings) as db:
            made = Checkpointer(
                db,
                ring,
                settings.checkpoints(),
                clock=clock,
                publisher=settings.checkpoint_publisher(),
            ).checkpoint(tenant)
    finally:
        ring.close()
    assert made is not None  # noqa: S101 (only_if_grown is off: always one)
    out.print(f"checkpoint of {made.tree_size} events signed by {made.kid}")
    print(made.note, end="")


def main() -> None:
    try:
        app()
    except TenantGuardError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        sys.exit(2)
