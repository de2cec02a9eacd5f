"""`tenantguard pii eval|scan`: the PII detectors' measured quality, and a scan from the shell."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from tenantguard.cli._common import out
from tenantguard.errors import RequestInvalid

pii_app = typer.Typer(no_args_is_help=True, help="The PII sentinel's detectors.")


@pii_app.command("eval")
def pii_eval(
    size: Annotated[int, typer.Option(min=1, help="Samples in the synthetic corpus.")] = 5000,
    seed: Annotated[int, typer.Option(help="The corpus seed (same seed, same corpus).")] = 0,
    locale: Annotated[
        list[str] | None, typer.Option(help="Locales to draw from (repeatable; default all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Precision, recall and F2 per class on a synthetic, multi-locale labelled corpus."""
    from tenantguard.pii.corpus import LOCALES, generate  # noqa: PLC0415
    from tenantguard.pii.detectors import DetectorRegistry, default_detectors  # noqa: PLC0415
    from tenantguard.pii.evaluate import evaluate  # noqa: PLC0415

    locales = tuple(locale) if locale else LOCALES
    counts = evaluate(
        generate(size, seed=seed, locales=locales), DetectorRegistry(default_detectors())
    )
    if as_json:
        document = {
            name: {
                "precision": round(c.precision, 4),
                "recall": round(c.recall, 4),
                "f1": round(c.f1, 4),
                "f2": round(c.f2, 4),
                "true_positives": c.true_positives,
                "false_positives": c.false_positives,
                "found": c.found,
                "missed": c.missed,
            }
            for name, c in counts.items()
        }
        sys.stdout.write(json.dumps({"size": size, "seed": seed, "classes": document}) + "\n")
        return
    table = Table(title=f"PII detectors on {size} samples (seed {seed})", title_justify="left")
    for column in ("class", "precision", "recall", "F2", "labelled", "detected"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, c in counts.items():
        table.add_row(
            name,
            f"{c.precision:.3f}",
            f"{c.recall:.3f}",
            f"{c.f2:.3f}",
            str(c.found + c.missed),
            str(c.true_positives + c.false_positives),
        )
    out.print(table)


@pii_app.command("scan")
def pii_scan(
    text: Annotated[str | None, typer.Argument(help="The text (default: standard input).")] = None,
) -> None:
    """Print the PII spans found in a text, as JSON lines."""
    from tenantguard.pii.detectors import DetectorRegistry, default_detectors  # noqa: PLC0415

    body = sys.stdin.read() if text is None else text
    if len(body) > 10_000_000:
        raise RequestInvalid("The text is over 10 MB.")
    for span in DetectorRegistry(default_detectors()).scan(body):
        line = {"start": span.start, "end": span.end, "class": span.pii_class, "score": span.score}
        sys.stdout.write(json.dumps(line) + "\n")
