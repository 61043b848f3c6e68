"""`nudge campaigns`, `plan`, `preview` and `approve`: campaigns by hand."""

from __future__ import annotations

import getpass
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import pandas as pd
from rich.table import Table
from rich.text import Text

from nudge.campaigns.planner import (
    OUTCOMES,
    REASONS,
    SUPPRESSIONS,
    CampaignSummary,
    Plan,
)
from nudge.campaigns.preview import preview as make_preview
from nudge.campaigns.service import CampaignService, PlanResult
from nudge.cli.app import App, console, errors, pass_app
from nudge.cli.app import json_ready as _plain
from nudge.errors import ConfigError
from nudge.jobs import pipeline

DATE = click.DateTime(
    formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]
)
AS_OF_HELP = "Moment to plan for, UTC (default: now)."
SHORT = {
    "no_address": "no address",
    "unsubscribed": "unsub.",
    "no_consent": "no consent",
    "cap": "cap",
    "lost_to_another": "lost",
    "list_too_short": "list short",
    "below_threshold": "low value",
}


def _service(app: App) -> CampaignService:
    return CampaignService(app.store(), app.settings)


def _cell(value: object) -> Text:
    """Return a table cell that shows text as written (no rich markup)."""
    return Text(str(value))


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_plain, indent=2))


# ------------------------------------------------------------------ campaigns


@click.group()
def campaigns() -> None:
    """List and validate the campaign files in config/campaigns/."""


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def list_(app: App, as_json: bool) -> None:
    """Show every campaign: trigger, audience, template, priority and approval."""
    service = CampaignService(app.engine, app.settings)
    loaded = [f.campaign for f in service.campaigns()]
    if as_json:
        _echo_json([c.model_dump(mode="json") for c in loaded])
        return
    table = Table(title=f"campaigns in {service.campaigns_dir}")
    table.add_column("campaign", no_wrap=True)
    table.add_column("trigger")
    table.add_column("audience", ratio=3)
    table.add_column("template")
    table.add_column("prio", justify="right")
    table.add_column("approval")
    for c in loaded:
        trigger = c.trigger
        when = (
            f"cron {trigger.schedule}"
            if trigger.schedule
            else f"{trigger.event} +{trigger.delay}"
        )
        table.add_row(
            _cell(c.name if c.enabled else f"{c.name} (disabled)"),
            _cell(when),
            _cell(c.audience),
            _cell(c.template),
            str(c.priority),
            c.approval,
        )
    console.print(table)


@campaigns.command()
@pass_app
def validate(app: App) -> None:
    """Check every campaign file, its audience and its template; list problems."""
    service = CampaignService(app.engine, app.settings)
    with console.status("checking campaigns and templates", spinner="dots"):
        good, problems = service.check()
    for problem in problems:
        errors.print(problem, style="red", highlight=False, soft_wrap=True)
    if problems:
        raise ConfigError(
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''} "
            f"in {service.campaigns_dir}"
        )
    console.print(f"{len(good)} campaigns valid in {service.campaigns_dir}")


# ------------------------------------------------------------------ plan


@click.command()
@click.argument("names", nargs=-1, metavar="[CAMPAIGN]...")
@click.option("--as-of", type=DATE, help=AS_OF_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--diff", is_flag=True, help="Compare with each campaign's last plan.")
@click.option("--dry-run", is_flag=True, help="Show the plan without storing it.")
@click.option(
    "--sample",
    type=click.IntRange(0, 1000),
    default=None,
    help="Decisions to show as a sample (default from [campaigns] sample_size).",
)
@pass_app
def plan(
    app: App,
    names: tuple[str, ...],
    as_of: datetime | None,
    as_json: bool,
    diff: bool,
    dry_run: bool,
    sample: int | None,
) -> None:
    """Decide who gets which campaign (or nothing, and why) and store the plan.

    Without CAMPAIGN names every due campaign takes part; named campaigns
    are planned even when their schedule is not due.
    """
    service = _service(app)
    with console.status("planning", spinner="dots") as status:
        # A stored plan's e-mails go into the send ledger for `nudge send`.
        planned = pipeline.plan_and_record(
            service.engine,
            app.settings,
            names,
            as_of=as_of,
            save=not dry_run,
            step=status.update,
            service=service,
        )
    result = planned.plan
    made = result.plan
    size = service.config.sample_size if sample is None else sample
    shown = _sample(made, size)
    diffs = _diffs(service, made, result.run_id) if diff else []
    if as_json:
        _echo_json(_plan_json(result, shown, diffs))
        return

    console.print(_header(result))
    summaries = made.summaries()
    if summaries:
        console.print(_outcome_table(summaries))
        console.print(_suppression_table(summaries))
    for due in made.due:
        mark = "due" if due.due else "skipped"
        console.print(
            f"{mark}: {due.campaign}: {due.note}", highlight=False, markup=False
        )
    if len(shown):
        console.print(_sample_table(shown))
    for found in diffs:
        console.print(_diff_table(found))
    if result.status == "awaiting_approval" and result.run_id is not None:
        console.print(
            f"run {result.run_id} waits for approval: review it, then "
            f"`nudge approve {result.run_id}`",
            style="yellow",
        )


def _header(result: PlanResult) -> str:
    """Say which run this is and what it was planned from."""
    made = result.plan
    stored = "stored" if result.profiles_stored else "computed now, not stored"
    run = f"plan run {result.run_id}" if result.run_id is not None else "dry run"
    return (
        f"{run} as of {made.as_of:%Y-%m-%d %H:%M} UTC, status {result.status}; "
        f"profiles of {result.profiles_as_of:%Y-%m-%d %H:%M} ({stored}); "
        f"{made.seconds:.1f} s"
    )


def _outcome_table(summaries: list[CampaignSummary]) -> Table:
    """Build the table of audience sizes and outcomes per campaign."""
    table = Table(title="plan by campaign")
    table.add_column("campaign")
    for heading in ("audience", "chosen", "deferred", "holdout", "suppressed"):
        table.add_column(heading, justify="right")
    table.add_column("variants")
    table.add_column("value", justify="right")
    for s in summaries:
        table.add_row(
            s.campaign,
            f"{s.audience:,}",
            f"{s.chosen:,}",
            f"{s.deferred:,}",
            f"{s.holdout:,}",
            f"{sum(s.suppressed.values()):,}",
            ", ".join(f"{k} {v:,}" for k, v in s.variants.items()) or "-",
            f"{s.expected_value:,.2f}",
        )
    return table


def _suppression_table(summaries: list[CampaignSummary]) -> Table:
    """Build the table of suppressed audience members by reason."""
    table = Table(title="suppressed by reason")
    table.add_column("campaign")
    for reason in SUPPRESSIONS:
        table.add_column(SHORT[reason], justify="right")
    for s in summaries:
        table.add_row(
            s.campaign, *(f"{s.suppressed.get(r, 0):,}" for r in SUPPRESSIONS)
        )
    return table


def _sample(made: Plan, size: int) -> pd.DataFrame:
    """Pick a stable sample of decisions, spread over the outcomes."""
    decisions = made.decisions
    if size == 0 or decisions.empty:
        return decisions.iloc[0:0]
    each = max(1, math.ceil(size / len(OUTCOMES)))
    mixed = decisions.sample(frac=1.0, random_state=0)
    picked = mixed.groupby("outcome", sort=False).head(each)
    return picked.head(size).sort_values(["campaign", "outcome"], kind="stable")


def _sample_table(shown: pd.DataFrame) -> Table:
    """Build the table of sampled decisions."""
    table = Table(title="a sample of decisions")
    for heading in ("campaign", "customer", "outcome", "reason", "why", "variant"):
        table.add_column(heading)
    table.add_column("send at (UTC)")
    for row in shown.to_dict("records"):
        send_at = row["send_at"]
        table.add_row(
            _cell(row["campaign"]),
            _cell(row["external_id"]),
            _cell(row["outcome"]),
            _cell(REASONS.get(str(row["reason"]), str(row["reason"]))),
            _cell(row["detail"]),
            _cell(row["variant"] if isinstance(row["variant"], str) else ""),
            "" if pd.isna(send_at) else f"{pd.Timestamp(send_at):%Y-%m-%d %H:%M}",
        )
    return table


def _diffs(
    service: CampaignService, made: Plan, run_id: int | None
) -> list[dict[str, Any]]:
    """Compare each campaign of a plan with the last earlier plan of it."""
    found = []
    for name in made.campaigns:
        before_run, before = service.previous_decisions(name, run_id)
        now = made.decisions[made.decisions["campaign"] == name]
        entry: dict[str, Any] = {"campaign": name, "previous_run": before_run}
        counts: dict[str, list[int]] = {}
        for outcome in OUTCOMES:
            counts[outcome] = [
                int((before["outcome"] == outcome).sum()),
                int((now["outcome"] == outcome).sum()),
            ]
        counts["audience"] = [len(before), len(now)]
        sending = ("chosen", "deferred")
        was = set(before.loc[before["outcome"].isin(sending), "customer_id"].tolist())
        is_ = set(now.loc[now["outcome"].isin(sending), "customer_id"].tolist())
        entry.update(
            counts=counts,
            newly_sent=len(is_ - was),
            no_longer_sent=len(was - is_),
        )
        found.append(entry)
    return found


def _diff_table(found: dict[str, Any]) -> Table | str:
    """Build the table comparing one campaign with its last plan."""
    if found["previous_run"] is None:
        return f"{found['campaign']}: no earlier plan to compare with"
    table = Table(
        title=f"{found['campaign']}: against plan run {found['previous_run']}"
    )
    for heading in ("", "before", "now", "change"):
        table.add_column(heading, justify="right" if heading else "left")
    for name, (before, now) in found["counts"].items():
        table.add_row(name, f"{before:,}", f"{now:,}", f"{now - before:+,}")
    table.add_row("newly sent", "", "", f"{found['newly_sent']:+,}")
    table.add_row("no longer sent", "", "", f"{-found['no_longer_sent']:+,}")
    return table


def _plan_json(
    result: PlanResult, shown: pd.DataFrame, diffs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return a plan as JSON-ready data."""
    made = result.plan
    return {
        "run": result.run_id,
        "status": result.status,
        "as_of": made.as_of.isoformat(),
        "profiles_as_of": result.profiles_as_of.isoformat(),
        "profiles_stored": result.profiles_stored,
        "seconds": round(made.seconds, 2),
        "campaigns": [s.as_json() for s in made.summaries()],
        "not_due": [
            {"campaign": d.campaign, "note": d.note} for d in made.due if not d.due
        ],
        "sample": [
            {str(k): _plain(v) for k, v in row.items() if k != "customer_id"}
            for row in shown.to_dict("records")
        ],
        "diff": diffs,
    }


# ------------------------------------------------------------------ preview


@click.command()
@click.argument("campaign")
@click.option(
    "--customer",
    "customers",
    multiple=True,
    metavar="ID",
    help="The shop's customer id to preview (repeatable).",
)
@click.option(
    "--sample", type=click.IntRange(1, 200), help="Preview N customers of the audience."
)
@click.option("--as-of", type=DATE, help=AS_OF_HELP)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the files (default: var/preview/CAMPAIGN).",
)
@click.option("--open", "open_", is_flag=True, help="Open the gallery in a browser.")
@click.option("--screenshot", is_flag=True, help="Save PNGs with headless Chromium.")
@pass_app
def preview(
    app: App,
    campaign: str,
    customers: tuple[str, ...],
    sample: int | None,
    as_of: datetime | None,
    out: Path | None,
    open_: bool,
    screenshot: bool,
) -> None:
    """Render a campaign's e-mails for real customers: HTML, text, .eml, gallery."""
    if bool(customers) == (sample is not None):
        raise click.UsageError("give either --customer ID or --sample N")
    service = _service(app)
    folder = out or app.settings.path(app.settings.var_dir) / "preview" / campaign
    with console.status("planning and rendering", spinner="dots"):
        report = make_preview(
            service,
            campaign,
            as_of=as_of,
            customers=customers,
            sample=sample,
            out=folder,
            screenshot=screenshot,
        )

    table = Table(title=f"preview of {campaign} in {report.out}")
    for heading in ("customer", "outcome", "why", "variant", "subject", "products"):
        table.add_column(heading)
    for e in report.entries:
        table.add_row(
            _cell(e.external_id),
            _cell(e.outcome),
            _cell(e.detail),
            _cell(e.variant),
            _cell(e.message.subject if e.message else "(not rendered)"),
            str(len(e.items)),
        )
    console.print(table)
    console.print(f"gallery: {report.index}")
    if open_:
        click.launch(str(report.index))


# ------------------------------------------------------------------ approve


@click.command()
@click.argument("run", type=int)
@click.option("--by", help="Who approves (default: the login name).")
@pass_app
def approve(app: App, run: int, by: str | None) -> None:
    """Approve a plan run that waits for approval, so that it can be sent."""
    service = _service(app)
    approver = by or getpass.getuser()
    stored = service.approve(run, approver)
    console.print(
        f"plan run {run} approved by {stored['approved_by']} at "
        f"{stored['approved_at']:%Y-%m-%d %H:%M} UTC"
    )
