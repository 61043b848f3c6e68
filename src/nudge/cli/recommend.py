"""`nudge recommend`: evaluate, tune, export and inspect the recommenders.

Dates are UTC days (``2011-09-01``) or moments (``2011-09-01T12:00:00``);
nothing on or after an as-of date or cutoff is used to fit a model.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
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
from nudge.recommend import NAMES
from nudge.recommend.evaluate import EvaluationReport
from nudge.recommend.service import RecommendService, parse_names
from nudge.recommend.tune import TuneReport

DATE = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])
METRIC_COLUMNS = ("ndcg", "recall", "hit_rate", "map", "coverage", "novelty")


@click.group()
def recommend() -> None:
    """Evaluate, tune, export and inspect product recommendations."""


@recommend.command()
@click.option("--cutoff", type=DATE, required=True, help="Train before, score after.")
@click.option("--k", type=click.IntRange(1, 100), default=None, help="List length.")
@click.option(
    "--window-days", type=click.IntRange(1, 365), default=None, help="Scored window."
)
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    type=click.Choice(NAMES),
    help="Only these strategies (repeatable; default: all and the blend).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def evaluate(
    app: App,
    cutoff: datetime,
    k: int | None,
    window_days: int | None,
    strategies: tuple[str, ...],
    as_json: bool,
) -> None:
    """Score every strategy and the blend on the purchases after CUTOFF.

    Each model is fitted on data before the cutoff and ranks the whole
    catalog; two tasks are scored: all products (repeats count) and only
    products new to the customer.
    """
    service = RecommendService(app.store(), app.settings)
    names = ["blend" if n == "auto" else n for n in parse_names(strategies)] or None
    with _Spinner(as_json) as step:
        report = service.evaluate(
            cutoff, k=k, window_days=window_days, strategies=names, progress=step
        )
    if as_json:
        click.echo(json.dumps(report.as_json(), default=str))
        return
    console.print(render_evaluation(report))
    tuned_at = report.protocol.get("tuned_at_cutoff")
    if tuned_at and tuned_at > report.protocol["cutoff"]:
        console.print(
            f"note: the tuned configuration was chosen at {tuned_at}, after this "
            "cutoff, so these scores may be optimistic"
        )


@recommend.command()
@click.option("--cutoff", type=DATE, required=True, help="Validate before this date.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def tune(app: App, cutoff: datetime, as_json: bool) -> None:
    """Search ALS, kNN and blend settings on the window before CUTOFF, and store them.

    The chosen configuration is used by every later command (`auto` is the
    tuned blend).
    """
    service = RecommendService(app.store(), app.settings)
    with _Spinner(as_json) as step:
        report = service.tune(cutoff, progress=step)
    if as_json:
        click.echo(json.dumps(report.as_json(), default=str))
        return
    console.print(render_tuning(report))
    console.print(f"stored in {service.models_dir / 'tuned.json'}")


@recommend.command()
@click.option("--as-of", "as_of", type=DATE, required=True, help="Use data before.")
@click.option("--k", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="CSV file to write.",
)
@click.option("--strategy", type=click.Choice(NAMES), default="auto", show_default=True)
@click.option(
    "--exclude-purchased",
    is_flag=True,
    help="Only products the customer never bought before.",
)
@click.option(
    "--details", is_flag=True, help="Add reason_code and evidence_product_id."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def export(
    app: App,
    as_of: datetime,
    k: int,
    out: Path,
    strategy: str,
    exclude_purchased: bool,
    details: bool,
    as_json: bool,
) -> None:
    """Write every customer's recommendations as of a date to a CSV file.

    Columns: customer_id, rank, product_id, score, strategy, reason (the
    shop's own ids). Customers whose list stays below the minimum length are
    listed with their reason in FILE.skipped.csv.
    """
    service = RecommendService(app.store(), app.settings)
    columns = (
        TextColumn("recommending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("export", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = service.export(
            as_of,
            out,
            n=k,
            strategy=strategy,
            exclude_purchased=exclude_purchased,
            details=details,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps(report.as_json()))
        return
    reused = "reloaded" if report.model_reused else "fitted"
    console.print(
        f"{report.rows:,} rows for {report.customers:,} customers written to "
        f"{report.out} ({strategy}, model {reused})"
    )
    for reason, count in report.skipped.items():
        console.print(f"skipped {count:,}: {reason}")
    if report.skipped_file:
        console.print(f"skipped customers listed in {report.skipped_file}")


@recommend.command()
@click.argument("customer")
@click.option("--as-of", "as_of", type=DATE, default=None, help="Default: now.")
@click.option("--k", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--strategy", type=click.Choice(NAMES), default="auto", show_default=True)
@click.option("--exclude-purchased", is_flag=True, help="Only products new to them.")
@pass_app
def show(
    app: App,
    customer: str,
    as_of: datetime | None,
    k: int,
    strategy: str,
    exclude_purchased: bool,
) -> None:
    """Print CUSTOMER's recommendations (the shop's customer id) with reasons."""
    service = RecommendService(app.store(), app.settings)
    moment = as_of or datetime.now(UTC).replace(tzinfo=None)
    store_id = service.customer_id(customer)
    lists, data = service.recommend(
        moment,
        [store_id if store_id is not None else -1],
        n=k,
        strategy=strategy,
        exclude_purchased=exclude_purchased,
    )
    if store_id is None or data.rows_of([store_id])[0] < 0:
        console.print(
            f"customer {customer} has no history before {moment:%Y-%m-%d}: "
            "showing what a new customer would get"
        )
    if lists.items.empty:
        reason = lists.skipped["reason"].iloc[0] if len(lists.skipped) else "none"
        console.print(f"no recommendations for {customer}: {reason}")
        return
    products = data.products.tolist()
    titles = dict(zip(products, data.catalog["title"].tolist(), strict=True))
    external = dict(zip(products, data.catalog["external_id"].tolist(), strict=True))
    table = Table(title=f"{strategy} for customer {customer}, as of {moment:%Y-%m-%d}")
    for name in ("rank", "product", "title", "score", "strategy", "reason"):
        table.add_column(name, justify="right" if name in ("rank", "score") else "left")
    for row in lists.items.itertuples(index=False):
        table.add_row(
            str(row.rank),
            str(external[row.product_id]),
            str(titles[row.product_id] or ""),
            f"{row.score:.3f}",
            str(row.strategy),
            str(row.reason_text),
        )
    console.print(table)


def render_evaluation(report: EvaluationReport) -> Table:
    """Build the metrics table of an evaluation."""
    protocol = report.protocol
    table = Table(
        title=(
            f"recommendations at cutoff {protocol['cutoff'][:10]}, "
            f"{protocol['window_days']} days scored, k={protocol['k']}"
        )
    )
    table.add_column("task")
    table.add_column("strategy")
    table.add_column("customers", justify="right")
    for name in METRIC_COLUMNS:
        table.add_column(name, justify="right")
    for row in report.table.to_dict(orient="records"):
        table.add_row(
            "all items" if row["task"] == "all" else "new items",
            str(row["strategy"]),
            f"{row['customers']:,}",
            *(f"{row[name]:.4f}" for name in METRIC_COLUMNS),
        )
    return table


def render_tuning(report: TuneReport) -> Table:
    """Build the table of the chosen settings and their validation scores."""
    config = report.config
    table = Table(
        title=(
            f"tuned on {report.protocol['validation_start'][:10]} to "
            f"{report.protocol['cutoff'][:10]} (NDCG@{report.protocol['k']})"
        )
    )
    table.add_column("part")
    table.add_column("chosen")
    table.add_column("validation ndcg", justify="right")
    best = report.trials.groupby(["stage", "task"])["ndcg"].max()
    rows = {
        "als": config.als.model_dump(),
        "item_knn": {
            "kind": config.item_knn.kind,
            "neighbours": config.item_knn.neighbours,
        },
        "co_purchase": {"beta": config.co_purchase.beta},
        "buy_again": {
            "half_life_days": config.buy_again.half_life_days,
            "due_boost": config.buy_again.due_boost,
        },
        "blend": {
            "fusion": config.blend.fusion,
            "weights": config.blend.weights,
            "new_weights": config.blend.new_weights,
        },
    }
    for stage, chosen in rows.items():
        scores = [
            f"{task} {best[(stage, task)]:.4f}"
            for task in ("all", "new")
            if (stage, task) in best.index
        ]
        table.add_row(stage, json.dumps(chosen), ", ".join(scores))
    return table


class _Spinner:
    """Show the step being worked on, unless the output is JSON."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.status = console.status("starting", spinner="dots")

    def __enter__(self) -> _Step:
        if not self.quiet:
            self.status.start()
        return _Step(self)

    def __exit__(self, *_: object) -> None:
        if not self.quiet:
            self.status.stop()


class _Step:
    """A progress callback that updates the spinner's text."""

    def __init__(self, spinner: _Spinner) -> None:
        self.spinner = spinner

    def __call__(self, text: str) -> None:
        if not self.spinner.quiet:
            self.spinner.status.update(f"working on {text}")
