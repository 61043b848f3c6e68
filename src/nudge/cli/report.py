"""`nudge report` and `nudge health`: what the e-mails earned, and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import click
import pandas as pd
from rich.table import Table
from rich.text import Text

from nudge.cli.app import App, console, pass_app
from nudge.feedback.alerts import Alert, check
from nudge.feedback.attribution import ALL_VARIANTS
from nudge.feedback.report import (
    Column,
    Report,
    build_report,
    conversion_columns,
    engagement_columns,
    plain,
    revenue_columns,
    with_ranges,
)

DATE = click.DateTime(
    formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]
)
# Periods of the time series shown in the terminal (the HTML shows them all).
PERIODS_SHOWN = 14
LEVEL_STYLES = {"critical": "bold red", "warning": "yellow", "info": "dim"}


def _table(
    frame: pd.DataFrame, keys: Sequence[Column], values: Sequence[Column], title: str
) -> Table:
    """Build a rich table of key and value columns; cells are text, never markup."""
    table = Table(title=title)
    for _, heading, _ in keys:
        table.add_column(heading, no_wrap=True)
    for _, heading, _ in values:
        table.add_column(heading, justify="right")
    for row in frame.to_dict("records"):
        table.add_row(*[Text(fmt(row.get(key))) for key, _, fmt in [*keys, *values]])
    return table


@click.command()
@click.argument("campaign", required=False)
@click.option("--since", type=DATE, help="Only e-mails due from this date, UTC.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the report with charts to this HTML file.",
)
@pass_app
def report(
    app: App,
    campaign: str | None,
    since: datetime | None,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Show what the e-mails did and earned, per campaign, variant and segment.

    Revenue is what recipients ordered within the attribution window;
    attributed revenue is credited by last click (else last human open);
    incremental revenue is the difference with the holdout, with its
    confidence interval and whether it is significant yet.
    """
    with console.status("measuring", spinner="dots"):
        found = build_report(app.store(), app.settings, campaign, since)
    if html_file is not None:
        found.write_html(html_file)
    if as_json:
        click.echo(found.to_json())
        return
    print_report(found)
    if html_file is not None:
        console.print(f"HTML report written to {html_file}", highlight=False)


def print_report(found: Report, *, brief: bool = False) -> None:
    """Print the report's tables, the answer (money) first; brief: that one only."""
    scope = found.campaign or "all campaigns"
    since = f" since {found.since:%Y-%m-%d}" if found.since else ""
    console.print(
        Text(f"{scope}{since}, as of {found.generated_at:%Y-%m-%d %H:%M} UTC")
    )
    if found.empty:
        console.print("no e-mails in this report yet")
        return

    name: Column = ("campaign", "campaign", plain)
    variant: Column = ("variant", "variant", plain)
    segment: Column = ("segment", "segment", plain)
    period: Column = ("period", found.period, plain)
    engagement = engagement_columns()
    money = revenue_columns(found.currency, found.config.confidence, notes=False)
    rates = conversion_columns()
    campaigns = with_ranges(found.campaigns, found.currency)
    variants = with_ranges(found.variants, found.currency)
    latest = found.timeline[
        found.timeline["period"].isin(
            sorted(found.timeline["period"].unique())[-PERIODS_SHOWN:]
        )
    ]

    if brief:
        # The answer in a width a terminal has: did it earn, and is it sure?
        keep = ("revenue", "incremental_text", "verdict")
        short = [c for c in money if c[0] in keep]
        console.print(_table(campaigns, [name], [*rates, *short], "per campaign"))
        console.print(
            _table(variants, [name, variant], engagement[:5], "engagement per variant")
        )
        return
    console.print(_table(campaigns, [name], [*rates, *money], "revenue per campaign"))
    console.print(_table(campaigns, [name], engagement, "engagement per campaign"))
    console.print(
        _table(variants, [name, variant], [*rates, *money], "revenue per variant")
    )
    console.print(
        _table(variants, [name, variant], engagement, "engagement per variant")
    )
    console.print(
        _table(
            found.segments,
            [name, segment],
            [*engagement[:5], *rates, *money[:3]],
            "per customer segment (at the time of the send)",
        )
    )
    console.print(
        _table(
            latest, [period, name], [*engagement[:5], *money[:3]], f"per {found.period}"
        )
    )
    for effect in found.effects:
        if effect.note:
            part = (
                "" if effect.variant == ALL_VARIANTS else f", variant {effect.variant}"
            )
            console.print(
                Text(f"{effect.campaign}{part}: {effect.note}"), style="yellow"
            )
    console.print(
        f"windows: last click within {found.config.click_window_days:g} days, else "
        f"human open within {found.config.open_window_days:g}; an effect is "
        "significant only when its confidence interval excludes zero",
        highlight=False,
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@click.option(
    "--notify", is_flag=True, help="Also POST the alerts to the alert webhook."
)
@pass_app
def health(app: App, as_json: bool, notify: bool) -> None:
    """Check bounces, unsubscribes, complaints, CTR, silent runs and pulls.

    Exits with 1 when any alert is a warning or worse.
    """
    alerts = check(app.store(), app.settings, notify=notify)
    problems = [a for a in alerts if a.is_problem]
    if as_json:
        click.echo(
            json.dumps(
                {"healthy": not problems, "alerts": [a.as_json() for a in alerts]}
            )
        )
    elif alerts:
        console.print(_alert_table(alerts))
    else:
        console.print("healthy: no alerts")
    if problems:
        raise click.exceptions.Exit(1)


def _alert_table(alerts: list[Alert]) -> Table:
    """Build the table of alerts, worst first."""
    table = Table(title="alerts")
    for heading in ("level", "check", "campaign", "what"):
        table.add_column(heading)
    for alert in alerts:
        table.add_row(
            Text(alert.level, style=LEVEL_STYLES[alert.level]),
            Text(alert.code.replace("_", " ")),
            Text(alert.campaign or "–"),
            Text(alert.message),
        )
    return table
