"""The service and `nudge recommend` against a SQLite store of a synthetic shop."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import click
import pandas as pd
import pytest
from sqlalchemy import Engine

from nudge.cli.app import App
from nudge.cli.main import run
from nudge.cli.recommend import recommend
from nudge.demo.synth import SyntheticShop, write_csv
from nudge.ingest.importer import Importer
from nudge.recommend import RecommendConfig
from nudge.recommend.config import TuneConfig
from nudge.recommend.service import EXPORT_COLUMNS, RecommendService
from nudge.settings import Settings
from tests.unit.recommend.conftest import AS_OF

SMALL = RecommendConfig(als={"factors": 8, "iterations": 5})
DAY = AS_OF.strftime("%Y-%m-%d")


@pytest.fixture
def store(
    engine: Engine, settings: Settings, shop: SyntheticShop, tmp_path: Path
) -> Engine:
    """The synthetic shop imported into the test's store."""
    paths = write_csv(shop, tmp_path / "shop")
    importer = Importer(engine, settings)
    for kind in ("customers", "products", "orders", "events"):
        importer.run(kind, paths[kind], "generic")  # type: ignore[arg-type]
    return engine


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_export_lists_every_known_customer_by_the_shops_ids(
    store: Engine, settings: Settings, shop: SyntheticShop, tmp_path: Path
) -> None:
    service = RecommendService(store, settings, SMALL)
    out = tmp_path / "lists.csv"
    report = service.export(AS_OF, out, n=5)
    rows = read(out)
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    assert len(rows) == report.rows
    frame = pd.DataFrame(rows)
    assert frame["customer_id"].str.match(r"^C\d{5}$").all()
    assert frame["product_id"].str.match(r"^SKU-\d{4}$").all()
    assert frame.groupby("customer_id").size().max() <= 5
    assert frame["reason"].str.len().gt(0).all()

    # Everyone who bought before the date is listed, or skipped with a reason.
    when = pd.to_datetime(shop.orders["ordered_at"])
    orders = shop.orders[when < pd.Timestamp(AS_OF, tz="UTC")]
    buyers = set(orders.loc[orders["status"] == "placed", "customer_id"])
    listed = set(frame["customer_id"])
    if report.skipped_file is not None:
        listed |= {row["customer_id"] for row in read(report.skipped_file)}
    assert buyers <= listed
    assert report.customers == frame["customer_id"].nunique()


def test_export_uses_nothing_from_on_or_after_the_date(
    store: Engine, settings: Settings, shop: SyntheticShop, tmp_path: Path
) -> None:
    service = RecommendService(store, settings, SMALL)
    first = tmp_path / "first.csv"
    service.export(AS_OF, first, n=5)

    # New orders exactly at and after the date, by customers already known.
    later = shop.orders.head(300).copy()
    later["order_id"] = "LATE-" + later["order_id"]
    stamps = [AS_OF + timedelta(hours=h) for h in range(len(later))]
    later["ordered_at"] = [f"{s:%Y-%m-%dT%H:%M:%S}Z" for s in stamps]
    later["status"] = "placed"
    path = tmp_path / "later.csv"
    later.to_csv(path, index=False)
    Importer(store, settings).run("orders", path, "generic")

    second = tmp_path / "second.csv"
    report = service.export(AS_OF, second, n=5)
    assert first.read_text(encoding="utf-8") == second.read_text(encoding="utf-8")
    assert report.model_reused


def test_a_fitted_model_is_reloaded_until_data_or_config_change(
    store: Engine, settings: Settings, tmp_path: Path
) -> None:
    service = RecommendService(store, settings, SMALL)
    assert not service.export(AS_OF, tmp_path / "a.csv").model_reused
    assert service.export(AS_OF, tmp_path / "b.csv").model_reused
    saved = list((settings.var_dir / "models").glob("blend-*.json"))
    note = json.loads(saved[0].read_text(encoding="utf-8"))
    assert note["as_of"] == AS_OF.isoformat()
    assert note["config_digest"] == SMALL.model_digest()

    other = SMALL.model_copy(update={"seed": 7})
    again = RecommendService(store, settings, other)
    assert not again.export(AS_OF, tmp_path / "c.csv").model_reused
    later = AS_OF + timedelta(days=1)
    assert not service.export(later, tmp_path / "d.csv").model_reused


def test_exclude_purchased_lists_only_new_products(
    store: Engine, settings: Settings, shop: SyntheticShop, tmp_path: Path
) -> None:
    service = RecommendService(store, settings, SMALL)
    out = tmp_path / "new.csv"
    service.export(AS_OF, out, n=5, exclude_purchased=True, strategy="als")
    listed = pd.DataFrame(read(out))
    orders = shop.orders
    before = orders[
        (pd.to_datetime(orders["ordered_at"]) < pd.Timestamp(AS_OF, tz="UTC"))
        & (orders["status"] == "placed")
    ]
    bought = set(zip(before["customer_id"], before["product_id"], strict=True))
    pairs = set(zip(listed["customer_id"], listed["product_id"], strict=True))
    assert not pairs & bought


def test_tune_stores_a_configuration_that_auto_then_uses(
    store: Engine, settings: Settings
) -> None:
    small_grid = TuneConfig(
        factors=(8,),
        regularization=(0.05,),
        alpha=(1.0,),
        iterations=(5,),
        neighbours=(20,),
        als_trials=1,
        blend_rounds=1,
    )
    config = SMALL.model_copy(update={"tune": small_grid})
    report = RecommendService(store, settings, config).tune(AS_OF)
    assert set(report.trials["stage"]) >= {"als", "item_knn", "blend"}
    stored = RecommendService(store, settings)  # no config given: reads tuned.json
    assert stored.config.blend == report.config.blend
    assert stored.tuned() is not None


def nudge(settings: Settings, *args: str) -> int:
    @click.group()
    @click.pass_context
    def root(ctx: click.Context) -> None:
        ctx.obj = App(settings)

    root.add_command(recommend)
    return run(root, list(args))


@pytest.fixture
def cli_settings(settings: Settings, store: Engine) -> Iterator[Settings]:
    # The CLI reads the tuned configuration from var/models: store a small one.
    service = RecommendService(store, settings, SMALL)
    models = service.models_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / "tuned.json").write_text(
        json.dumps(
            {"config": SMALL.model_dump(mode="json"), "protocol": {"cutoff": DAY}}
        ),
        encoding="utf-8",
    )
    yield settings


def test_cli_export_and_show(
    cli_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.csv"
    args = ["recommend", "export", "--as-of", DAY, "--k", "3", "--out", str(out)]
    assert nudge(cli_settings, *args, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    rows = read(out)
    assert summary["rows"] == len(rows) > 0
    customer = rows[0]["customer_id"]

    assert nudge(cli_settings, "recommend", "show", customer, "--as-of", DAY) == 0
    shown = capsys.readouterr().out
    assert rows[0]["product_id"] in shown
    assert nudge(cli_settings, "recommend", "show", "nobody", "--as-of", DAY) == 0
    assert "no history" in capsys.readouterr().out


def test_cli_evaluate_prints_both_tasks_as_json(
    cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["recommend", "evaluate", "--cutoff", DAY, "--k", "5", "--json"]
    assert nudge(cli_settings, *args, "--strategy", "als", "--strategy", "auto") == 0
    report = json.loads(capsys.readouterr().out)
    tasks = {(r["task"], r["strategy"]) for r in report["results"]}
    assert tasks == {("all", "als"), ("all", "blend"), ("new", "als"), ("new", "blend")}
    assert report["protocol"]["cutoff"].startswith(DAY)


def test_cli_errors_are_one_line(
    cli_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.csv"
    code = nudge(
        cli_settings, "recommend", "export", "--as-of", "2000-01-01", "--out", str(out)
    )
    assert code != 0
    assert "no customer has any history before 2000-01-01" in capsys.readouterr().err
