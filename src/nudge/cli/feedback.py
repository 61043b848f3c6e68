"""`nudge feedback`: pull engagement from the ESPs into the store."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Table

from nudge.cli.app import App, console, pass_app
from nudge.feedback import service
from nudge.feedback.events import EVENT_KINDS, FeedbackError, PullReport

TIME = click.DateTime(
    formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]
)


@click.group()
def feedback() -> None:
    """Read opens, clicks, unsubscribes and bounces back from the ESPs."""


@feedback.command()
@click.option(
    "--esp",
    type=click.Choice([*service.PULLED, *service.TRACKED]),
    help="Read only this ESP (default: every configured one).",
)
@click.option(
    "--since",
    type=TIME,
    help="Read events after this time, UTC, instead of the stored watermarks.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def pull(app: App, esp: str | None, since: datetime | None, as_json: bool) -> None:
    """Store new engagement events once each and suppress who opted out."""
    engine = app.store()
    with console.status("pulling feedback", spinner="dots"):
        report = service.pull(engine, app.settings, esp, since)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        console.print(report_table(report))
        for note in report.notes:
            console.print(note)
        if report.missing_metrics:
            shown = ", ".join(report.missing_metrics)
            console.print(f"metrics not in the account yet: {shown}", style="yellow")
    if report.failures:
        where, reason = next(iter(report.failures.items()))
        more = len(report.failures) - 1
        extra = f" (and {more} more)" if more else ""
        raise FeedbackError(f"pull from {where} failed{extra}: {reason}")


def report_table(report: PullReport) -> Table:
    """Build the table of a pull: events by kind, links, skips and failures."""
    esps = ", ".join(report.esps) or "none"
    table = Table(title=f"feedback pulled from {esps}")
    table.add_column("figure")
    table.add_column("count", justify="right")
    for kind in EVENT_KINDS:
        if report.stored.get(kind):
            table.add_row(f"new {kind.replace('_', ' ')}", f"{report.stored[kind]:,}")
    table.add_row("new events", f"{report.total_stored:,}", style="bold")
    table.add_row("seen before", f"{report.duplicates:,}")
    table.add_row("linked to a send", f"{report.linked:,}")
    table.add_row("not linked to a send", f"{report.unlinked:,}")
    for reason, count in sorted(report.flagged.items()):
        table.add_row(f"stored, {reason.replace('_', ' ')}", f"{count:,}")
    for reason, count in sorted(report.skipped.items()):
        table.add_row(f"skipped, {reason.replace('_', ' ')}", f"{count:,}")
    table.add_row("machine opens flagged", f"{report.machine_opens:,}")
    table.add_row("customers suppressed", f"{report.suppressed:,}")
    for where in report.failures:
        table.add_row(f"failed: {where}", "-", style="red")
    return table
