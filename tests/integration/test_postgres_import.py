"""The generic export set imports into PostgreSQL exactly as into SQLite.

PostgreSQL stores money as NUMERIC and takes new rows through COPY, SQLite as
REAL through executemany; the stored values, counts and rejects must not differ.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, inspect, select

from nudge.ingest.importer import Importer, ImportReport
from nudge.ingest.layouts import Kind
from nudge.settings import Settings
from nudge.store.db import current_revision, downgrade, head_revision, upgrade
from nudge.store.models import (
    BehaviourEvent,
    Customer,
    Order,
    OrderLine,
    Product,
)

pytestmark = pytest.mark.integration

GENERIC = Path(__file__).resolve().parents[1] / "fixtures" / "exports" / "generic"
KINDS: tuple[Kind, ...] = ("customers", "products", "orders", "events")
MODELS = (Customer, Product, Order, OrderLine, BehaviourEvent)


def import_all(importer: Importer) -> dict[Kind, ImportReport]:
    """Import the four generic files, catalog first."""
    return {kind: importer.run(kind, GENERIC / f"{kind}.csv") for kind in KINDS}


def totals(report: ImportReport) -> dict[str, tuple[int, ...]]:
    """Return every entity's counts as plain tuples."""
    return {
        name: (c.read, c.inserted, c.updated, c.unchanged, c.rejected, c.merged)
        for name, c in report.counts.items()
    }


def rejects(report: ImportReport) -> str:
    """Return the rejects file's text, or nothing when there is none."""
    if report.rejects_file is None:
        return ""
    return report.rejects_file.read_text(encoding="utf-8")


def snapshot(engine: Engine, *, skip: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """Return every row of the shop tables keyed by their natural keys."""
    out: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for model in MODELS:
            table: Table = model.__table__  # type: ignore[assignment]
            columns = [c for c in table.c if c.name not in skip]
            rows = conn.execute(select(*columns).order_by(table.c.id))
            out[table.name] = [tuple(r) for r in rows]
    return out


def importer(engine: Engine, settings: Settings, days: int = 0) -> Importer:
    """Return an importer whose clock is `days` on, to expose any rewrite."""
    made = Importer(engine, settings)
    made.now = made.now + timedelta(days=days)
    return made


def test_generic_set_imports_as_on_sqlite(
    pg_engine: Engine, engine: Engine, settings: Settings
) -> None:
    on_postgres = import_all(importer(pg_engine, settings))
    on_sqlite = import_all(importer(engine, settings))

    for kind in KINDS:
        assert totals(on_postgres[kind]) == totals(on_sqlite[kind])
        assert rejects(on_postgres[kind]) == rejects(on_sqlite[kind])
    skip = ("updated_at",)
    assert snapshot(pg_engine, skip=skip) == snapshot(engine, skip=skip)

    with pg_engine.connect() as conn:
        price = conn.scalar(select(Product.price).where(Product.external_id == "P003"))
        lines = conn.execute(
            select(OrderLine.quantity, OrderLine.unit_price).order_by(OrderLine.id)
        ).all()
        placed = conn.scalar(
            select(Order.ordered_at).where(Order.external_id == "O1002")
        )
    assert isinstance(price, Decimal)
    assert price == Decimal("3.333")
    assert sum(q * p for q, p in lines) == Decimal("152.812")
    assert placed == datetime(2023, 7, 2, 17, 30)


def test_reimport_on_postgres_changes_nothing(
    pg_engine: Engine, settings: Settings
) -> None:
    first = import_all(importer(pg_engine, settings))
    before = snapshot(pg_engine)

    second = import_all(importer(pg_engine, settings, days=1))

    assert snapshot(pg_engine) == before
    for kind in KINDS:
        again = second[kind].counts[kind]
        assert (again.inserted, again.updated) == (0, 0)
        assert again.unchanged == first[kind].counts[kind].inserted


def test_downgrade_to_base_and_upgrade_again(
    pg_engine: Engine, settings: Settings
) -> None:
    first = import_all(importer(pg_engine, settings))
    tables = set(inspect(pg_engine).get_table_names())
    assert {m.__tablename__ for m in MODELS} < tables

    downgrade(pg_engine, "base")

    assert current_revision(pg_engine) is None
    assert set(inspect(pg_engine).get_table_names()) <= {"alembic_version"}

    upgrade(pg_engine)

    assert current_revision(pg_engine) == head_revision()
    assert set(inspect(pg_engine).get_table_names()) == tables
    again = import_all(importer(pg_engine, settings))
    for kind in KINDS:
        assert totals(again[kind]) == totals(first[kind])
