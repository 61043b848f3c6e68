"""`nudge run`, `send`, `event`, `sends` and `esp setup`: the send pipeline by hand."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

import click
from rich.table import Table

from nudge.campaigns.service import naive_utc, utc_now
from nudge.cli.app import App, console, pass_app
from nudge.cli.app import json_ready as _plain
from nudge.cli.campaigns import DATE
from nudge.delivery import ledger, registry
from nudge.delivery.esp.klaviyo import KlaviyoAdapter
from nudge.delivery.esp.mailchimp import MailchimpAdapter
from nudge.delivery.setup import SetupReport, setup_klaviyo, setup_mailchimp
from nudge.jobs import pipeline
from nudge.jobs.pipeline import Context, Delivered, Planned
from nudge.store.send_models import SEND_STATUSES

ESP_CHOICE = click.Choice(registry.names())
NOW_HELP = "Deliver what is due by this moment, UTC (default: now)."


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_plain, indent=2))


def _delivery_table(report: Delivered, title: str) -> Table:
    table = Table(title=title)
    table.add_column("status")
    table.add_column("e-mails", justify="right")
    for status, n in sorted(report.statuses.items()):
        table.add_row(status, f"{n:,}")
    if not report.statuses:
        table.add_row("nothing due", "0")
    return table


def _print_delivery(app: App, report: Delivered, title: str) -> None:
    console.print(_delivery_table(report, title))
    for reason, n in sorted(report.errors.items(), key=lambda kv: -kv[1]):
        console.print(f"  {n:,} × {reason}", highlight=False, markup=False)
    for sample in report.samples:
        console.print(
            f"  would send to {sample['to']} via {sample['esp']}: {sample['subject']}",
            highlight=False,
            markup=False,
        )
    if report.by_esp.get("outbox") and not report.dry_run:
        console.print(f"e-mails written to {pipeline.outbox_folder(app.settings)}")
    console.print(
        f"{report.rows:,} ledger rows in {report.chunks} chunks, {report.seconds:.1f} s"
    )


def _planned_line(planned: Planned) -> str:
    result = planned.plan
    recorded = planned.recorded
    sends = int(result.plan.decisions["outcome"].isin(["chosen", "deferred"]).sum())
    text = (
        f"plan run {result.run_id} as of {result.plan.as_of:%Y-%m-%d %H:%M} UTC: "
        f"{sends:,} e-mails planned over {len(result.plan.campaigns)} campaigns"
    )
    if recorded is not None:
        text += (
            f"; ledger: {recorded.created:,} new rows ({recorded.holdout:,} holdout), "
            f"{recorded.already:,} already there"
        )
    return text


def _moment(now: datetime | None, as_of: datetime | None) -> datetime:
    """Return the dispatch moment: --now, else the later of --as-of and now."""
    if now is not None:
        return naive_utc(now)
    current = utc_now()
    return max(naive_utc(as_of), current) if as_of is not None else current


# ------------------------------------------------------------------ run


@click.command()
@click.argument("names", nargs=-1, metavar="[CAMPAIGN]...")
@click.option("--as-of", type=DATE, help="Moment to plan for, UTC (default: now).")
@click.option("--now", type=DATE, help=NOW_HELP)
@click.option("--esp", type=ESP_CHOICE, help="Send through this ESP this time.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def run(
    app: App,
    names: tuple[str, ...],
    as_of: datetime | None,
    now: datetime | None,
    esp: str | None,
    as_json: bool,
) -> None:
    """Plan campaigns (the named ones, or every due one) and send what is due.

    The same pipeline the scheduler runs, in this process: plan, record each
    e-mail in the send ledger, render and deliver. E-mails due later (quiet
    hours, delays) and runs that need approval wait for `nudge send`.
    """
    engine = app.store()
    with console.status("planning", spinner="dots") as status:
        planned = pipeline.plan_and_record(
            engine, app.settings, names, as_of=as_of, step=status.update
        )
        report = Delivered()
        if planned.run_id is not None:
            status.update("delivering")
            report = pipeline.dispatch(
                engine,
                app.settings,
                now=_moment(now, as_of),
                run_id=planned.run_id,
                esp=esp,
            )
    if as_json:
        _echo_json(
            {
                "run_id": planned.run_id,
                "status": planned.plan.status,
                "recorded": planned.recorded.__dict__ if planned.recorded else None,
                "delivery": report.as_json(),
            }
        )
        return
    console.print(_planned_line(planned), highlight=False)
    _print_delivery(app, report, f"run {planned.run_id}: delivery")
    waiting = ledger.counts(engine, run_id=planned.run_id).get("planned", 0)
    if waiting:
        console.print(
            f"{waiting:,} e-mails wait (later send times or approval); "
            "`nudge send` delivers them when due",
            style="yellow",
        )


# ------------------------------------------------------------------ send


@click.command()
@click.argument("campaign", required=False)
@click.option("--run", "run_id", type=int, help="Only this plan run's e-mails.")
@click.option("--esp", type=ESP_CHOICE, help="Send through this ESP this time.")
@click.option("--dry-run", is_flag=True, help="Render and count; send nothing.")
@click.option("--now", type=DATE, help=NOW_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def send(
    app: App,
    campaign: str | None,
    run_id: int | None,
    esp: str | None,
    dry_run: bool,
    now: datetime | None,
    as_json: bool,
) -> None:
    """Deliver the planned e-mails that are due (of one campaign, if named).

    Consent and unsubscribes are checked again just before each e-mail goes;
    an e-mail the ESP already has is never sent twice.
    """
    engine = app.store()
    if campaign is not None:
        Context(engine, app.settings).service.campaigns([campaign])
    with console.status("delivering", spinner="dots"):
        report = pipeline.dispatch(
            engine,
            app.settings,
            now=_moment(now, None),
            run_id=run_id,
            campaign=campaign,
            esp=esp,
            dry_run=dry_run,
        )
    if as_json:
        _echo_json(report.as_json())
        return
    title = "dry run: nothing sent" if dry_run else "delivery"
    _print_delivery(app, report, title)


# ------------------------------------------------------------------ event


@click.command()
@click.argument("kind", type=click.Choice(pipeline.EVENT_KINDS))
@click.option("--customer", help="The shop's customer id.")
@click.option("--product", help="The shop's product id.")
@click.option("--at", type=DATE, help="When it happened, UTC (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def event(
    app: App,
    kind: str,
    customer: str | None,
    product: str | None,
    at: datetime | None,
    as_json: bool,
) -> None:
    """Inject a trigger event and send what it makes due now.

    The event is stored with the shop's data; the campaigns it triggers are
    planned for the customer, and e-mails due later (a delay) are sent by
    the dispatcher then.
    """
    engine = app.store()
    found = pipeline.record_event(
        engine, app.settings, kind, customer=customer, product=product, at=at
    )
    report = Delivered()
    planned = found.planned
    if planned is not None and planned.run_id is not None:
        report = pipeline.dispatch(
            engine, app.settings, now=_moment(None, at), run_id=planned.run_id
        )
    if as_json:
        _echo_json(
            {
                "kind": kind,
                "stored": found.stored,
                "run_id": planned.run_id if planned else None,
                "delivery": report.as_json(),
            }
        )
        return
    console.print(f"stored: {found.stored}", highlight=False, markup=False)
    if planned is None:
        console.print(f"no enabled campaign is triggered by {kind}")
        return
    console.print(_planned_line(planned), highlight=False)
    _print_delivery(app, report, "sent now")


# ------------------------------------------------------------------ sends


@click.command()
@click.option("--run", "run_id", type=int, help="Only this plan run.")
@click.option("--campaign", help="Only this campaign.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def sends(app: App, run_id: int | None, campaign: str | None, as_json: bool) -> None:
    """Show the send ledger: e-mails by status."""
    found = ledger.counts(app.store(), run_id=run_id, campaign=campaign)
    if as_json:
        _echo_json(found)
        return
    table = Table(title="send ledger")
    table.add_column("status")
    table.add_column("e-mails", justify="right")
    for status in SEND_STATUSES:
        table.add_row(status, f"{found.get(status, 0):,}")
    console.print(table)


# ------------------------------------------------------------------ esp setup


@click.group()
def esp() -> None:
    """Set an ESP up for nudge."""


@esp.command()
@click.argument("name", type=click.Choice(["klaviyo", "mailchimp"]))
@pass_app
def setup(app: App, name: str) -> None:
    """Create nudge's templates (Klaviyo) or merge fields (Mailchimp) in an ESP."""
    context = Context(app.store(), app.settings)
    try:
        adapter = context.adapter(name)
        report: SetupReport
        if name == "klaviyo":
            files = context.service.campaigns()
            templates = sorted(
                {
                    (f.campaign.template, v.name)
                    for f in files
                    if f.campaign.esp == "klaviyo"
                    for v in f.campaign.variants
                }
                or {
                    (f.campaign.template, v.name)
                    for f in files
                    for v in f.campaign.variants
                }
            )
            report = setup_klaviyo(
                cast(KlaviyoAdapter, adapter),
                context.renderer,
                context.shop,
                templates,
                metric=app.settings.klaviyo_metric,
            )
        else:
            report = setup_mailchimp(cast(MailchimpAdapter, adapter))
    finally:
        context.close()
    for label, names in (
        ("created", report.created),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
    ):
        for item in names:
            console.print(f"{label}: {item}", highlight=False, markup=False)
    for step in report.steps:
        console.print(step, highlight=False, markup=False)
