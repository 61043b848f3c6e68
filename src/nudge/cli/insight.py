"""`nudge insight`, `nudge segments`, `nudge customer`: customer profiles by hand."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import pandas as pd
from rich.table import Table

from nudge.cli.app import App, console, pass_app
from nudge.cli.app import json_ready as _plain
from nudge.insight import service
from nudge.insight.backtest import BacktestReport, report_rows
from nudge.insight.config import InsightConfig
from nudge.insight.profiles import SEGMENT_RULES, segment_summary

DATE = click.DateTime(
    formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]
)
AS_OF_HELP = "Moment of the profiles, UTC (default: the newest stored snapshot)."
BUY_AGAIN_SHOWN = 5


def _config(app: App) -> InsightConfig:
    return InsightConfig.from_settings(app.settings)


def _label(name: object) -> str:
    """Return a segment or stage name as people write it."""
    text = str(name)
    return "can't lose" if text == "cant_lose" else text.replace("_", " ")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_plain))


@click.group()
def insight() -> None:
    """Refresh customer profiles and backtest the customer models."""


@insight.command()
@click.option("--as-of", type=DATE, help="Moment of the snapshot, UTC (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def refresh(app: App, as_of: datetime | None, as_json: bool) -> None:
    """Compute and store every customer's profile as of a moment."""
    engine = app.store()
    with console.status("reading orders", spinner="dots") as status:
        report = service.refresh(
            engine, as_of, _config(app), step=lambda text: status.update(text)
        )
    if as_json:
        _echo_json(report.as_json())
        return

    table = Table(title=f"profiles as of {report.as_of:%Y-%m-%d %H:%M} (UTC)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("customers profiled", f"{report.customers:,}")
    table.add_row("products with a repeat gap", f"{report.products:,}")
    table.add_row("model", report.model)
    for name, params in report.params.items():
        shown = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        table.add_row(f"{name} parameters", shown)
    table.add_row("shop's typical gap (days)", f"{report.shop_gap_days:.1f}")
    table.add_row("win-back value", f"{report.win_back_value:,.2f}")
    for stage, count in report.stages.items():
        table.add_row(f"stage {stage}", f"{count:,}")
    console.print(table)
    console.print(report.reason)
    console.print(f"done in {report.seconds:.1f} s")


@insight.command()
@click.option(
    "--calibration-end",
    type=DATE,
    required=True,
    help="Fit on purchases before this moment (UTC).",
)
@click.option(
    "--holdout-days",
    type=click.IntRange(min=1),
    required=True,
    help="Days after the calibration end to predict.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def backtest(
    app: App, calibration_end: datetime, holdout_days: int, as_json: bool
) -> None:
    """Fit on orders before a date and compare predictions with the holdout."""
    engine = app.store()
    with console.status("fitting and predicting", spinner="dots"):
        report = service.run_backtest(
            engine, calibration_end, holdout_days, _config(app)
        )
    if as_json:
        _echo_json(report.as_json())
        return
    console.print(_backtest_table(report))
    console.print(report.reason)
    _warn_short_holdout(report)


def _backtest_table(report: BacktestReport) -> Table:
    """Build the backtest's table: the chosen model beside the heuristic."""
    table = Table(
        title=(
            f"backtest: calibration end {report.calibration_end:%Y-%m-%d}, "
            f"holdout {report.holdout_days} days, {report.customers:,} customers "
            f"({report.buyers_in_holdout:,} bought in the holdout)"
        )
    )
    table.add_column("figure")
    table.add_column(report.scores.model, justify="right")
    table.add_column("heuristic baseline", justify="right")
    for row in report_rows(report):
        table.add_row(*row)
    return table


def _warn_short_holdout(report: BacktestReport) -> None:
    """Say so when the orders stop well before the holdout ends."""
    last = report.last_order_at
    if last is not None and (report.holdout_end - last).days > 1:
        console.print(
            f"note: the last order is from {last:%Y-%m-%d}, before the holdout "
            f"ends on {report.holdout_end:%Y-%m-%d}; actual figures are short",
            style="yellow",
        )


@click.command()
@click.option("--as-of", type=DATE, help=AS_OF_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--chart",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a segment × value bar chart to this .svg file.",
)
@pass_app
def segments(
    app: App, as_of: datetime | None, as_json: bool, chart: Path | None
) -> None:
    """Show segment and lifecycle stage sizes with their share of value.

    Segments come from the RFM scores (1 to 5, FM = (F + M + 1) // 2), first
    match wins: champions R>=4 FM>=4; loyal R=3 FM>=4; new R>=4 with one
    purchase day; potential loyalists R>=3; can't lose R=1 FM>=4; at risk
    R<=2 FM>=3; hibernating R=2; lost R=1.
    """
    if chart is not None and chart.suffix.lower() != ".svg":
        raise click.BadParameter(
            "only .svg charts can be written (PNG would need matplotlib, which "
            "nudge does not install)",
            param_hint="--chart",
        )
    snapshot = service.snapshot(app.store(), as_of, _config(app))
    by_segment = segment_summary(snapshot.frame, "segment")
    by_stage = segment_summary(snapshot.frame, "stage")
    if chart is not None:
        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_text(segment_chart(by_segment, snapshot.as_of), encoding="utf-8")

    if as_json:
        _echo_json(
            {
                "as_of": snapshot.as_of.isoformat(),
                "stored": snapshot.stored,
                "customers": len(snapshot.frame),
                "segments": _records(by_segment),
                "stages": _records(by_stage),
            }
        )
        return
    when = f"{snapshot.as_of:%Y-%m-%d %H:%M}"
    console.print(_summary_table(by_segment, f"segments as of {when}"))
    console.print(_summary_table(by_stage, f"lifecycle stages as of {when}"))
    if not snapshot.stored:
        console.print("computed now, not stored: run `nudge insight refresh`")
    if chart is not None:
        console.print(f"chart written to {chart}")


def _records(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """Return a summary's rows as plain records with the name first."""
    frame = summary.reset_index().rename(columns={summary.index.name: "name"})
    return [
        {str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict("records")
    ]


def _summary_table(summary: pd.DataFrame, title: str) -> Table:
    """Build a rich table of sizes and value shares."""
    table = Table(title=title)
    table.add_column(str(summary.index.name))
    for heading in ("customers", "%", "revenue", "%", "CLV", "%"):
        table.add_column(heading, justify="right")
    for name, row in summary.iterrows():
        cells = [
            _label(name),
            f"{int(row['customers']):,}",
            f"{row['customers_share']:.1%}",
            f"{row['revenue']:,.0f}",
            f"{row['revenue_share']:.1%}",
            f"{row['clv']:,.0f}",
            f"{row['clv_share']:.1%}",
        ]
        table.add_row(*cells)
    return table


def segment_chart(summary: pd.DataFrame, as_of: datetime) -> str:
    """Draw each segment's share of customers, revenue and CLV as an SVG bar chart."""
    series = (
        ("customers_share", "customers", "#7f8c8d"),
        ("revenue_share", "revenue", "#2e86c1"),
        ("clv_share", "CLV", "#28b463"),
    )
    left, bar, gap, width = 170, 12, 14, 420
    row_height = bar * len(series) + gap
    height = 70 + row_height * len(summary)
    svg = ET.Element(
        "svg",
        xmlns="http://www.w3.org/2000/svg",
        width=str(left + width + 80),
        height=str(height),
        style="font-family: sans-serif; font-size: 12px",
    )
    title = ET.SubElement(svg, "text", x="10", y="20", style="font-size: 15px")
    title.text = f"Segments as of {as_of:%Y-%m-%d}: share of customers and value"

    # A legend, then one group of bars per segment.
    for i, (_, legend, colour) in enumerate(series):
        x = left + i * 110
        ET.SubElement(
            svg, "rect", x=str(x), y="32", width="12", height="12", fill=colour
        )
        ET.SubElement(svg, "text", x=str(x + 16), y="43").text = legend
    for row, (name, values) in enumerate(summary.iterrows()):
        top = 60 + row * row_height
        label = ET.SubElement(svg, "text", x="10", y=str(top + bar * 2))
        label.text = _label(name)
        for i, (column, _, colour) in enumerate(series):
            share = float(values[column])
            y = top + i * bar
            ET.SubElement(
                svg,
                "rect",
                x=str(left),
                y=str(y),
                width=f"{max(share, 0.0) * width:.1f}",
                height=str(bar - 2),
                fill=colour,
            )
            value = ET.SubElement(
                svg, "text", x=f"{left + share * width + 4:.1f}", y=str(y + bar - 3)
            )
            value.text = f"{share:.1%}"
    return ET.tostring(svg, encoding="unicode", xml_declaration=True) + "\n"


@click.group()
def customer() -> None:
    """Look at one customer's profile."""


@customer.command()
@click.argument("customer_id")
@click.option("--as-of", type=DATE, help=AS_OF_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def show(app: App, customer_id: str, as_of: datetime | None, as_json: bool) -> None:
    """Explain one customer (the shop's id): scores, stage and why, predictions."""
    found = service.customer_insight(app.store(), customer_id, as_of, _config(app))
    due = found.buy_again.head(BUY_AGAIN_SHOWN)
    if as_json:
        profile = {k: _plain(v) for k, v in found.profile.items()}
        profile["stored"] = found.stored
        profile["buy_again"] = [
            {str(k): _plain(v) for k, v in row.items()}
            for row in due.to_dict("records")
        ]
        _echo_json(profile)
        return
    console.print(_profile_table(found.profile))
    if not due.empty:
        console.print(_buy_again_table(due))
    for note in found.notes:
        console.print(note)


def _profile_table(p: dict[str, Any]) -> Table:
    """Build the key/value table that explains one profile."""
    table = Table(
        title=f"customer {p['external_id']} as of {p['as_of']:%Y-%m-%d %H:%M}",
        show_header=False,
    )
    table.add_column("what")
    table.add_column("value")
    segment = str(p["segment"])
    next_order = p["expected_next_order_at"]
    rows = [
        ("RFM scores", f"R {p['r_score']}  F {p['f_score']}  M {p['m_score']}"),
        ("segment", f"{_label(segment)} ({SEGMENT_RULES.get(segment, '')})"),
        ("stage", f"{p['stage']}: {p['stage_rule']}"),
        (
            "last purchase",
            f"{p['recency_days']} days ago ({p['last_order_at']:%Y-%m-%d})",
        ),
        ("purchases", f"{p['frequency']} purchase days, {p['orders']} orders"),
        ("spend", f"{p['monetary']:,.2f} (average order {p['avg_order_value']:,.2f})"),
        (
            "customer for",
            f"{p['tenure_days']} days (since {p['first_order_at']:%Y-%m-%d})",
        ),
        ("usual gap", f"{p['typical_gap_days']:.0f} days"),
        ("P(alive)", f"{p['p_alive']:.3f} ({p['model_used']})"),
        ("churn risk", f"{p['churn_risk']:.3f} ({p['churn_band']})"),
        ("CLV", f"{p['clv']:,.2f}"),
        (
            "next order",
            "not expected within the horizon"
            if pd.isna(next_order)
            else f"{pd.Timestamp(next_order):%Y-%m-%d}",
        ),
    ]
    for dimension, shares in (p.get("affinities") or {}).items():
        shown = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
        rows.append((f"top {dimension.replace('_', ' ')}", shown))
    for row in rows:
        table.add_row(*row)
    return table


def _buy_again_table(due: pd.DataFrame) -> Table:
    """Build the table of products the customer is due to buy again."""
    table = Table(title="buy again (nearest due first)")
    for heading in ("product", "title", "last bought", "usual gap", "due"):
        table.add_column(heading)
    for row in due.to_dict("records"):
        days = float(row["days_until_due"])
        when = (
            "due now"
            if abs(days) < 1
            else f"in {days:.0f} days"
            if days > 0
            else f"{-days:.0f} days overdue"
        )
        table.add_row(
            str(row["product"]),
            str(row["title"] or ""),
            f"{row['last_bought_at']:%Y-%m-%d}",
            f"{row['median_gap_days']:.0f} days ({row['level']})",
            f"{row['due_at']:%Y-%m-%d} ({when})",
        )
    return table
