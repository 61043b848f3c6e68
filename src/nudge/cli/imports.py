"""`nudge import`: load shop exports into the store."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from nudge.cli.app import App, console, pass_app
from nudge.ingest.importer import Importer, ImportReport
from nudge.ingest.layouts import KINDS, PRESETS, Kind

# Files larger than this (a few seconds of work) show progress.
PROGRESS_BYTES = 2_000_000


def render_report(report: ImportReport) -> Table:
    """Build the summary table of one import."""
    table = Table(
        title=f"import {report.kind} ({report.format}) from {report.file.name}"
    )
    table.add_column("entity")
    for name in ("read", "inserted", "updated", "unchanged", "rejected", "merged"):
        table.add_column(name, justify="right")
    for entity, counts in report.counts.items():
        table.add_row(
            entity,
            *(
                f"{getattr(counts, name):,}"
                for name in (
                    "read",
                    "inserted",
                    "updated",
                    "unchanged",
                    "rejected",
                    "merged",
                )
            ),
        )
    return table


@click.command("import")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(PRESETS)),
    default="generic",
    show_default=True,
    help="Layout of the file.",
)
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding.")
@click.option(
    "--rejects",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write rejected rows (default: var/rejects/).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def import_(
    app: App,
    kind: Kind,
    file: Path,
    fmt: str,
    encoding: str,
    rejects: Path | None,
    as_json: bool,
) -> None:
    """Import KIND (customers, products, orders, events) from FILE.

    FILE is CSV (optionally gzipped) or Parquet. Importing the same file twice
    adds nothing; a later export updates changed rows.
    """
    importer = Importer(app.store(), app.settings)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    big = file.is_file() and file.stat().st_size > PROGRESS_BYTES
    with Progress(*columns, console=console, transient=True, disable=as_json) as bar:
        # Reading and checking show as a pulse; storing fills a bar by rows.
        task = bar.add_task(f"{kind}: reading and checking", total=None, visible=big)

        def progress(done: int, total: int) -> None:
            if big:
                bar.update(task, description=kind, completed=done, total=total)

        report = importer.run(
            kind, file, fmt, encoding=encoding, rejects_path=rejects, progress=progress
        )

    if as_json:
        click.echo(json.dumps(report.as_json()))
        return
    console.print(render_report(report))
    if report.rejects_file:
        console.print(f"rejected rows written to {report.rejects_file}")
    console.print(f"done in {report.seconds:.1f} s")
