"""`nudge demo`: a synthetic shop run through every stage, from import to report."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import click
from rich.table import Table

from nudge.campaigns.service import CampaignService
from nudge.cli.app import App, console, pass_app
from nudge.cli.report import print_report
from nudge.demo.engagement import Round, demo_truth, weekly_rounds
from nudge.demo.synth import generate_shop, write_csv
from nudge.feedback.report import build_report
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
@click.option(
    "--weeks",
    type=click.IntRange(1, 12),
    default=4,
    show_default=True,
    help="Weeks of sending and simulated engagement.",
)
@pass_app
def demo(app: App, seed: int, customers: int, products: int, weeks: int) -> None:
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

    # Every enabled campaign, planned week by week from the shop's last day,
    # delivered to the local outbox; simulated customers open, click and buy,
    # and each week's plan learns from the weeks before.
    service = CampaignService(app.engine, app.settings)
    enabled = [f.campaign.name for f in service.campaigns() if f.campaign.enabled]
    # The demo's e-mails show tracked links (to the shop's own address when no
    # tracking URL is set): nothing serves them, the customers are simulated.
    settings = app.settings.model_copy(
        update={"tracking_url": app.settings.tracking_url or app.settings.shop_url}
    )
    with console.status("planning", spinner="dots") as status:
        rounds = weekly_rounds(
            app.engine,
            settings,
            shop,
            enabled,
            demo_truth(),
            weeks=weeks,
            seed=seed,
            step=status.update,
        )
    console.print(_rounds_table(rounds))
    sent = sum(r.delivered.statuses.get("accepted", 0) for r in rounds)
    outbox = pipeline.outbox_folder(app.settings)
    console.print(
        f"{sent:,} e-mails written to the local outbox {outbox} "
        f"(one folder per plan run, each with an index.html)",
        highlight=False,
    )

    # The simulated weeks run ahead of the clock: report as of their end.
    found = build_report(
        app.engine, app.settings, now=rounds[-1].as_of + timedelta(days=7)
    )
    html = app.settings.path(app.settings.var_dir) / "report.html"
    found.write_html(html)
    print_report(found, brief=True)
    console.print(f"full report: `nudge report`; with charts: {html}", highlight=False)

    console.print(
        f"demo finished in {time.perf_counter() - started:.1f} s; "
        f"store: {store.describe(app.engine)}"
    )


def _rounds_table(rounds: list[Round]) -> Table:
    table = Table(title="weekly rounds: sent, and what simulated customers did")
    for name in ("week", "plan run", "sent", "opens", "machine", "clicks", "orders"):
        table.add_column(name, justify="right")
    table.add_column("picked_for_you a / b")
    for r in rounds:
        shares = r.variants.get("picked_for_you", {})
        sim = r.simulated
        table.add_row(
            f"{r.as_of:%Y-%m-%d}",
            str(r.run_id),
            f"{r.delivered.statuses.get('accepted', 0):,}",
            f"{sim.opens:,}",
            f"{sim.machine_opens:,}",
            f"{sim.clicks:,}",
            f"{sim.orders:,} (+{sim.holdout_orders} holdout)",
            f"{shares.get('a', 0):,} / {shares.get('b', 0):,}",
        )
    return table
