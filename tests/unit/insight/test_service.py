"""Tests for the insight service and CLI against a SQLite store."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import click
import pandas as pd
import pytest
from sqlalchemy import Engine, func, inspect, select

from nudge.cli.app import App
from nudge.cli.insight import customer, insight, segments
from nudge.cli.main import run
from nudge.ingest.importer import Importer
from nudge.insight import service
from nudge.insight.backtest import backtest
from nudge.insight.config import InsightConfig
from nudge.logging import configure
from nudge.settings import Settings
from nudge.store import db, queries
from nudge.store.insight_models import CustomerProfile, ProductReplenishment
from tests.unit.insight.test_profiles import AS_OF, TINY_LINES

STAGES = {
    "ann": "active",
    "bob": "new",
    "cat": "churned",
    "dan": "reactivated",
    "fay": "active",
    "gus": "at_risk",
    "hal": "active",
}


def _write_shop(folder: Path, lines: list[tuple[object, ...]]) -> dict[str, Path]:
    """Write the tiny shop as generic CSV files (times in UTC)."""
    products = pd.DataFrame(
        {
            "product_id": ["p1", "p2", "p3"],
            "title": ["Fig candle", "Oak board", "Amber candle"],
            "category": ["Candles", "Kitchen", "Candles"],
            "brand": ["Wick", "Oak", "Oak"],
            "price": ["10.00", "30.00", "50.00"],
        }
    )
    orders = pd.DataFrame(
        [row for row in lines if int(str(row[4])) > 0],
        columns=[
            "order_id",
            "customer_id",
            "ordered_at",
            "product_id",
            "quantity",
            "unit_price",
            "status",
        ],
    )
    orders["ordered_at"] = orders["ordered_at"].str.replace(" ", "T") + ":00Z"
    events = pd.DataFrame(
        {
            "customer_id": ["ann", "ann"],
            "event_type": ["view", "add_to_cart"],
            "occurred_at": ["2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z"],
            "product_id": ["p2", "p2"],
        }
    )
    paths = {}
    for name, frame in (("products", products), ("orders", orders), ("events", events)):
        paths[name] = folder / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return paths


def _import(engine: Engine, settings: Settings, paths: dict[str, Path]) -> None:
    importer = Importer(engine, settings)
    for kind in ("products", "orders", "events"):
        if kind in paths:
            importer.run(kind, paths[kind])  # type: ignore[arg-type]


@pytest.fixture
def shop(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    """A store holding the tiny shop."""
    _import(engine, settings, _write_shop(tmp_path, TINY_LINES))
    return engine


def _count(engine: Engine, model: type[object], as_of: datetime | None = None) -> int:
    table = model.__table__  # type: ignore[attr-defined]
    statement = select(func.count()).select_from(table)
    if as_of is not None:
        statement = statement.where(table.c.as_of == as_of)
    with engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())


def test_refresh_stores_one_profile_per_buyer(shop: Engine) -> None:
    report = service.refresh(shop, AS_OF)

    assert report.customers == 7
    assert report.model == "heuristic"
    assert report.stages["active"] == 3
    assert _count(shop, CustomerProfile) == 7
    stored = service.stored_profiles(shop, AS_OF).set_index("external_id")
    assert stored["stage"].to_dict() == STAGES
    assert stored.loc["gus", "segment"] == "at_risk"
    assert stored.loc["ann", "affinities"] == {
        "category": {"Candles": 0.6, "Kitchen": 0.4},
        "brand": {"Oak": 0.6, "Wick": 0.4},
        "price_band": {"budget": 0.4, "mid": 0.4, "premium": 0.2},
    }
    assert stored.loc["cat", "expected_next_order_at"] is None or pd.isna(
        stored.loc["cat", "expected_next_order_at"]
    )


def test_stored_figures_equal_the_computed_ones(shop: Engine) -> None:
    service.refresh(shop, AS_OF)
    profiles, _ = service.compute(shop, AS_OF, InsightConfig())
    computed = profiles.frame.set_index("customer_id").sort_index()
    stored = service.stored_profiles(shop, AS_OF).set_index("customer_id").sort_index()

    for column in ("recency_days", "frequency", "orders", "r_score", "segment"):
        assert stored[column].tolist() == computed[column].tolist(), column
    for column in ("monetary", "p_alive", "churn_risk", "clv"):
        pd.testing.assert_series_equal(
            stored[column].astype(float), computed[column], check_names=False
        )


def test_refreshing_the_same_moment_replaces_its_snapshot(shop: Engine) -> None:
    service.refresh(shop, AS_OF)
    service.refresh(shop, AS_OF)
    later = datetime(2024, 8, 1)
    service.refresh(shop, later)

    assert _count(shop, CustomerProfile, AS_OF) == 7
    assert _count(shop, CustomerProfile, later) == 7
    assert _count(shop, ProductReplenishment, AS_OF) == _count(
        shop, ProductReplenishment, later
    )
    assert service.latest_as_of(shop) == later


def test_later_orders_never_change_a_stored_snapshot(
    shop: Engine, settings: Settings, tmp_path: Path
) -> None:
    service.refresh(shop, AS_OF)
    before = service.stored_profiles(shop, AS_OF)

    extra = [
        ("L1", "ann", "2024-07-01 00:00", "p1", 3, 99.0, "placed"),
        ("L2", "zed", "2024-07-05 00:00", "p2", 1, 10.0, "placed"),
    ]
    later = tmp_path / "later"
    later.mkdir()
    _import(shop, settings, {"orders": _write_shop(later, extra)["orders"]})
    service.refresh(shop, AS_OF)

    after = service.stored_profiles(shop, AS_OF)
    pd.testing.assert_frame_equal(before, after)


def test_an_empty_store_refreshes_to_nothing(engine: Engine) -> None:
    report = service.refresh(engine, AS_OF)
    assert report.customers == 0
    assert report.products == 0
    assert _count(engine, CustomerProfile) == 0


def test_snapshot_reads_the_store_or_computes(shop: Engine) -> None:
    computed = service.snapshot(shop, AS_OF)
    assert not computed.stored
    assert set(computed.frame["external_id"]) == set(STAGES)

    service.refresh(shop, AS_OF)
    stored = service.snapshot(shop)
    assert stored.stored
    assert stored.as_of == AS_OF
    assert len(stored.frame) == 7


def test_customer_insight_explains_one_customer(shop: Engine) -> None:
    service.refresh(shop, AS_OF)
    found = service.customer_insight(shop, "ann")

    assert found.stored
    assert found.profile["stage"] == "active"
    assert found.profile["segment"] == "champions"
    assert set(found.buy_again["product"]) <= {"p1", "p2", "p3"}
    with pytest.raises(service.InsightLookupError, match="no customer with id"):
        service.customer_insight(shop, "nobody")
    with pytest.raises(service.InsightLookupError, match="has no purchase before"):
        service.customer_insight(shop, "eve")


def test_customer_insight_without_a_snapshot_computes(shop: Engine) -> None:
    found = service.customer_insight(shop, "dan", AS_OF)
    assert not found.stored
    assert found.profile["stage"] == "reactivated"
    assert found.notes


def test_backtest_reads_the_store(shop: Engine) -> None:
    report = service.run_backtest(shop, datetime(2024, 4, 1), 91)
    lines = queries.order_lines(shop, datetime(2024, 7, 1), include_guests=False)
    expected = backtest(lines, datetime(2024, 4, 1), 91)
    assert report.as_json() == expected.as_json()
    assert report.customers == 5


def test_migration_0002_goes_down_and_up(engine: Engine) -> None:
    assert {"customer_profiles", "product_replenishment"} <= set(
        inspect(engine).get_table_names()
    )
    db.downgrade(engine, "0001")
    assert "customer_profiles" not in inspect(engine).get_table_names()
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    assert "product_replenishment" in inspect(engine).get_table_names()


def _cli(settings: Settings) -> click.Group:
    @click.group()
    @click.pass_context
    def root(ctx: click.Context) -> None:
        configure(settings.log_level, settings.log_format)
        ctx.obj = App(settings)

    for command in (insight, segments, customer):
        root.add_command(command)
    return root


def test_cli_refresh_segments_and_customer(
    shop: Engine,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli = _cli(settings)
    assert run(cli, ["insight", "refresh", "--as-of", "2024-07-01", "--json"]) == 0
    refreshed = json.loads(capsys.readouterr().out)
    assert refreshed["customers"] == 7

    chart = tmp_path / "segments.svg"
    assert run(cli, ["segments", "--json", "--chart", str(chart)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stored"] is True
    by_stage = {row["name"]: row["customers"] for row in summary["stages"]}
    assert by_stage["churned"] == 1
    assert sum(row["customers"] for row in summary["segments"]) == 7
    assert ET.parse(chart).getroot().tag == "{http://www.w3.org/2000/svg}svg"

    assert run(cli, ["customer", "show", "gus", "--json"]) == 0
    gus = json.loads(capsys.readouterr().out)
    assert gus["stage"] == "at_risk"
    assert gus["stage_rule"].startswith("churn risk 0.73 >= 0.70")
    assert gus["model_used"] == "heuristic"


def test_cli_tables_and_errors(
    shop: Engine, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = _cli(settings)
    assert run(cli, ["insight", "refresh", "--as-of", "2024-07-01"]) == 0
    assert "customers profiled" in capsys.readouterr().out
    assert run(cli, ["segments"]) == 0
    assert "champions" in capsys.readouterr().out
    assert run(cli, ["customer", "show", "ann"]) == 0
    assert "churn risk" in capsys.readouterr().out

    assert run(cli, ["customer", "show", "nobody"]) == 2
    assert "no customer with id 'nobody'" in capsys.readouterr().err
    assert run(cli, ["segments", "--chart", "out.png"]) == 2


def test_cli_backtest(
    shop: Engine, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = _cli(settings)
    args = ["insight", "backtest", "--calibration-end", "2024-04-01"]
    assert run(cli, [*args, "--holdout-days", "91", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["customers"] == 5
    assert data["purchases"]["actual"] == 2

    assert run(cli, [*args, "--holdout-days", "200"]) == 0
    out = capsys.readouterr().out
    assert "MAE per customer" in out
    assert "actual figures are short" in out
