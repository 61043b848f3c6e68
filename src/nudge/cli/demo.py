"""`nudge demo`: a synthetic shop run through every stage, ending in the outbox."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import click
from rich.table import Table

from nudge.campaigns.service import CampaignService, naive_utc, utc_now
from nudge.cli.app import App, console, pass_app
from nudge.delivery import ledger
from nudge.demo.synth import generate_shop, write_csv
from nudge.ingest.importer import Importer
from nudge.insight import service as insight_service
from nudge.insight.config import InsightConfig
from nudge.jobs import pipeline
from nudge.store import db as store


@click.command()
@click.option(
    "--seed", default=7, show_default=True, help="Seed of the synthetic shop."
)
@click.option(
    "--customers", default=3000, show_default=True, help="Number of customers."
)
@click.option("--products", default=400, show_default=True, help="Number of products.")
@pass_app
def demo(app: App, seed: int, customers: int, products: int) -> None:
    """Create a synthetic shop, import it and run the pipeline on it."""
    started = time.perf_counter()
    store.upgrade(app.engine)
    folder = app.settings.path(app.settings.var_dir) / "demo"

    shop = generate_shop(seed=seed, customers=customers, products=products)
    files = write_csv(shop, folder)
    console.print(f"synthetic shop (seed {seed}) written to {folder}")

    importer = Importer(app.engine, app.settings)
    table = Table(title="imported through `nudge import` (generic layout)")
    names = (
        "file",
        "rows read",
        "inserted",
        "updated",
        "unchanged",
        "rejected",
        "merged",
    )
    for name in names:
        table.add_column(name, justify="left" if name == "file" else "right")
    for kind in ("products", "customers", "orders", "events"):
        counts = importer.run(kind, Path(files[kind])).counts[kind]
        table.add_row(
            files[kind].name,
            *(f"{n:,}" for n in (counts.read, counts.inserted, counts.updated)),
            *(f"{n:,}" for n in (counts.unchanged, counts.rejected, counts.merged)),
        )
    console.print(table)

    config = InsightConfig.from_settings(app.settings)
    report = insight_service.refresh(app.engine, shop.end, config)
    stages = ", ".join(f"{n:,} {stage}" for stage, n in report.stages.items())
    console.print(
        f"customer profiles as of {report.as_of:%Y-%m-%d}: {report.customers:,} "
        f"customers ({stages}); model {report.model}"
    )

    # Every enabled campaign, planned as of the shop's last day and sent to
    # the local outbox; the demo approves what needs approval itself.
    service = CampaignService(app.engine, app.settings)
    enabled = [f.campaign.name for f in service.campaigns() if f.campaign.enabled]
    planned = pipeline.plan_and_record(
        app.engine, app.settings, enabled, as_of=shop.end, service=service
    )
    run_id = planned.run_id
    assert run_id is not None
    if planned.plan.status == "awaiting_approval":
        service.approve(run_id, "nudge demo")
    # Sends the plan moved out of quiet hours are due by the next day.
    delivered = pipeline.dispatch(
        app.engine,
        app.settings,
        now=max(naive_utc(shop.end) + timedelta(days=2), utc_now()),
        run_id=run_id,
        esp="outbox",
    )
    table = Table(title=f"plan run {run_id}: e-mails by campaign")
    for name in ("campaign", "planned", "holdout", "sent"):
        table.add_column(name, justify="left" if name == "campaign" else "right")
    for summary in planned.plan.plan.summaries():
        sent = ledger.counts(app.engine, run_id=run_id, campaign=summary.campaign)
        table.add_row(
            summary.campaign,
            f"{summary.chosen + summary.deferred:,}",
            f"{summary.holdout:,}",
            f"{sent.get('accepted', 0):,}",
        )
    console.print(table)
    outbox = pipeline.outbox_folder(app.settings) / str(run_id)
    console.print(
        f"{delivered.statuses.get('accepted', 0):,} e-mails written to the local "
        f"outbox: {outbox} (open {outbox / 'index.html'})"
    )

    console.print(
        f"demo finished in {time.perf_counter() - started:.1f} s; "
        f"store: {store.describe(app.engine)}"
    )
