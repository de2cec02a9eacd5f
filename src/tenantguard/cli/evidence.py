"""`tenantguard evidence export|verify`: signed evidence packs for auditors, checked offline."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from tenantguard.cli._common import database, err, load_settings, out
from tenantguard.clock import SystemClock
from tenantguard.errors import AuditVerificationFailed, RequestInvalid

evidence_app = typer.Typer(no_args_is_help=True, help="Evidence packs for auditors.")


def _moment(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RequestInvalid("Times are ISO 8601 with a zone, e.g. 2026-01-01T00:00:00Z.") from exc


@evidence_app.command("export")
def evidence_export(
    tenant: Annotated[UUID, typer.Option(help="The tenant the pack is about.")],
    start: Annotated[str, typer.Option("--from", help="Start of the period (ISO 8601, zoned).")],
    end: Annotated[str, typer.Option("--to", help="End of the period, excluded.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the pack.")],
    test_results: Annotated[
        Path | None, typer.Option(help="JUnit XML of this build's tests (its security suites).")
    ] = None,
) -> None:
    """Build a signed, timestamped evidence pack (a tar file) of a tenant and period."""
    from tenantguard.audit.checkpoints import Checkpointer  # noqa: PLC0415
    from tenantguard.crypto.keyring import open_keyring  # noqa: PLC0415
    from tenantguard.db.doctor import examine  # noqa: PLC0415
    from tenantguard.evidence.pack import build_pack  # noqa: PLC0415

    settings = load_settings()
    from tenantguard.evidence.pack import evidence_period  # noqa: PLC0415

    begins, ends = evidence_period(_moment(start), _moment(end))
    clock = SystemClock()
    ring = open_keyring(settings, clock=clock, create=False)
    try:
        with database(settings) as db:
            with db.system_transaction() as tx:
                doctor = examine(tx)
            checkpointer = Checkpointer(
                db,
                ring,
                settings.checkpoints(),
                clock=clock,
                publisher=settings.checkpoint_publisher(),
            )
            pack = build_pack(
                db,
                ring,
                checkpointer,
                tenant_id=tenant,
                start=begins,
                end=ends,
                doctor=doctor,
                test_results=test_results or settings.evidence_test_results,
                now=clock.now(),
            )
    finally:
        ring.close()
    output.write_bytes(pack)
    out.print(f"evidence pack of tenant {tenant} written to {output} ({len(pack)} bytes)")


@evidence_app.command("verify")
def evidence_verify(
    pack: Annotated[Path, typer.Argument(help="The pack to check.")],
    trusted_keys: Annotated[
        Path | None,
        typer.Option(help="The platform keys you trust (its /.well-known/jwks.json)."),
    ] = None,
    trust_embedded_keys: Annotated[
        bool, typer.Option(help="UNSAFE: check the signature against the pack's own keys.")
    ] = False,
) -> None:
    """Check a pack offline: signature, every byte against the manifest, the audit segment
    against its checkpoint. Exit 1 naming what fails."""
    from tenantguard.cli import pinned_keys  # noqa: PLC0415 (the package imports us)
    from tenantguard.evidence.pack import verify_pack  # noqa: PLC0415

    load_settings()
    keys = pinned_keys(trusted_keys, trust_embedded_keys=trust_embedded_keys, what="a pack")
    try:
        verdict = verify_pack(pack.read_bytes(), trusted_keys=keys)
    except AuditVerificationFailed as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    if keys is None:
        err.print("[yellow]warning: the signature was checked against the pack's own keys[/yellow]")
    tests = verdict.security_tests
    suites = (
        f"{tests.get('passed')} security tests passed, {len(tests.get('failed', []))} failed"
        if tests.get("provided")
        else "no security test results in the pack"
    )
    out.print(
        f"[green]evidence pack verifies[/green]: tenant {verdict.tenant_id}, {verdict.events}"
        f" audit events in a checkpointed log of {verdict.tree_size}, signed by"
        f" {verdict.signed_by}; {suites}"
    )
