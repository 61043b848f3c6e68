"""Behaviour of the importer on the generic layout: upserts, rejects, files, chunks."""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Connection, Engine, Table, func, select

from nudge.errors import ImportFileError, NudgeError
from nudge.ingest.importer import Counts, Importer, ImportReport
from nudge.ingest.layouts import Kind
from nudge.ingest.writer import Written, upsert
from nudge.settings import Settings
from nudge.store.db import make_engine, upgrade
from nudge.store.models import (
    BehaviourEvent,
    Customer,
    ImportRun,
    Order,
    OrderLine,
    Product,
)

GENERIC = Path(__file__).resolve().parents[2] / "fixtures" / "exports" / "generic"
KINDS: tuple[Kind, ...] = ("customers", "products", "orders", "events")
MODELS = (Customer, Product, Order, OrderLine, BehaviourEvent)
ORDERS_HEADER = (
    "order_id,customer_id,ordered_at,product_id,quantity,unit_price,currency,"
    "status,title,email,country"
)


def snapshot(engine: Engine, *, skip: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """Return every row of the shop tables, in id order, without `skip` columns."""
    out: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for model in MODELS:
            table: Table = model.__table__  # type: ignore[assignment]
            columns = [c for c in table.c if c.name not in skip]
            rows = conn.execute(select(*columns).order_by(table.c.id))
            out[table.name] = [tuple(r) for r in rows]
    return out


def count(engine: Engine, model: type[Any]) -> int:
    """Count the stored rows of one model."""
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def totals(report: ImportReport) -> dict[str, tuple[int, ...]]:
    """Return every entity's counts as plain tuples."""
    return {
        name: (c.read, c.inserted, c.updated, c.unchanged, c.rejected, c.merged)
        for name, c in report.counts.items()
    }


def accounted(counts: Counts) -> int:
    """Return how many rows the counts say went somewhere."""
    return (
        counts.inserted
        + counts.updated
        + counts.unchanged
        + counts.rejected
        + counts.merged
    )


def rejected_rows(report: ImportReport) -> list[tuple[str, ...]]:
    """Read the rejects file as tuples of its four text columns."""
    if report.rejects_file is None:
        return []
    with report.rejects_file.open(newline="", encoding="utf-8") as handle:
        return [tuple(r) for r in list(csv.reader(handle))[1:]]


def import_all(importer: Importer, folder: Path = GENERIC) -> dict[Kind, ImportReport]:
    """Import the four generic files of a folder, catalog first."""
    return {kind: importer.run(kind, folder / f"{kind}.csv") for kind in KINDS}


def later(importer: Importer, days: int = 1) -> Importer:
    """Move an importer's clock on, so that any rewrite shows in updated_at."""
    importer.now = importer.now + timedelta(days=days)
    return importer


@pytest.fixture
def other_engine(tmp_path: Path) -> Iterator[Engine]:
    """A second, empty migrated SQLite store to compare imports against."""
    engine = make_engine(f"sqlite:///{tmp_path / 'other' / 'nudge.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


# -- upserts -----------------------------------------------------------------


def test_same_files_twice_change_nothing(engine: Engine, settings: Settings) -> None:
    first = import_all(Importer(engine, settings))
    before = snapshot(engine)

    second = import_all(later(Importer(engine, settings)))

    assert snapshot(engine) == before  # not even updated_at moved
    for kind in KINDS:
        again = second[kind].counts[kind]
        assert (again.inserted, again.updated) == (0, 0)
        assert again.unchanged == first[kind].counts[kind].inserted
        assert again.rejected == first[kind].counts[kind].rejected
    assert totals(second["orders"])["invoices"] == (4, 0, 0, 4, 0, 0)
    assert totals(second["orders"])["customers"] == (3, 0, 0, 3, 0, 0)
    assert totals(second["events"])["products"] == (2, 0, 0, 2, 0, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_every_row_read_is_accounted_for(
    engine: Engine, settings: Settings, kind: Kind
) -> None:
    reports = import_all(Importer(engine, settings))
    counts = reports[kind].counts[kind]

    with (GENERIC / f"{kind}.csv").open(encoding="utf-8") as handle:
        rows = sum(1 for _ in handle) - 1
    assert counts.read == rows
    assert accounted(counts) == counts.read


def test_later_product_export_updates_one_and_inserts_one(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    first = Importer(engine, settings)
    first.run("products", GENERIC / "products.csv")
    text = (GENERIC / "products.csv").read_text(encoding="utf-8")
    changed = text.replace("Woodline,45.00,GBP", "Woodline,47.50,GBP")
    changed += "P007,Bulb Planter,,garden,,7.25,GBP,,,true,2024-03-01\n"
    path = tmp_path / "products-later.csv"
    path.write_text(changed, encoding="utf-8")

    second = later(Importer(engine, settings))
    report = second.run("products", path)

    assert totals(report)["products"] == (7, 1, 1, 2, 3, 0)
    with engine.connect() as conn:
        stored = {
            r.external_id: (r.price, r.updated_at)
            for r in conn.execute(
                select(Product.external_id, Product.price, Product.updated_at)
            )
        }
    assert stored == {
        "P001": (Decimal("47.50"), second.now),
        "P002": (Decimal("19.99"), first.now),
        "P003": (Decimal("3.333"), first.now),
        "P007": (Decimal("7.25"), second.now),
    }


def test_later_order_export_updates_one_line_and_inserts_one(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    import_all(Importer(engine, settings))
    text = (GENERIC / "orders.csv").read_text(encoding="utf-8")
    changed = text.replace("P002,2,19.99", "P002,2,17.99")
    changed += "O1011,C002,2023-10-01 12:00:00,P003,6,3.10,GBP,placed,,,\n"
    path = tmp_path / "orders-later.csv"
    path.write_text(changed, encoding="utf-8")

    report = later(Importer(engine, settings)).run("orders", path)

    assert totals(report)["orders"] == (12, 1, 1, 4, 6, 0)
    assert totals(report)["invoices"] == (5, 1, 0, 4, 0, 0)
    with engine.connect() as conn:
        prices = conn.execute(
            select(Order.external_id, OrderLine.line_no, OrderLine.unit_price)
            .join(Order, Order.id == OrderLine.order_id)
            .where(Order.external_id.in_(["O1001", "O1011"]))
            .order_by(Order.external_id, OrderLine.line_no)
        ).all()
    assert [tuple(p) for p in prices] == [
        ("O1001", 1, Decimal("45.00")),
        ("O1001", 2, Decimal("17.99")),
        ("O1011", 1, Decimal("3.10")),
    ]


def test_a_file_without_a_column_keeps_what_was_stored(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    import_all(Importer(engine, settings))
    products = tmp_path / "products-prices.csv"
    products.write_text(
        "product_id,title,price\nP001,Walnut Board,45.00\nP002,Linen Apron,21.00\n",
        encoding="utf-8",
    )
    customers = tmp_path / "customers-names.csv"
    customers.write_text("customer_id,first_name\nC001,Alicia\n", encoding="utf-8")

    importer = later(Importer(engine, settings))
    prices = importer.run("products", products)
    names = importer.run("customers", customers)

    assert totals(prices)["products"] == (2, 0, 1, 1, 0, 0)
    assert totals(names)["customers"] == (1, 0, 1, 0, 0, 0)

    with engine.connect() as conn:
        apron = conn.execute(select(Product).where(Product.external_id == "P002")).one()
        alice = conn.execute(
            select(Customer).where(Customer.external_id == "C001")
        ).one()
    assert apron.price == Decimal("21.00")
    assert apron.in_stock is False
    assert apron.description == "Stone-washed linen, one size"
    assert apron.product_url == "https://demo-shop.example/products/linen-apron"
    assert apron.created_at == datetime(2023, 6, 15, 11, 0)
    assert alice.first_name == "Alicia"
    assert alice.email == "alice@example.com"
    assert alice.accepts_marketing is True
    assert alice.consent_source == "signup-form"
    assert alice.consent_at == datetime(2023, 1, 15, 9, 31)
    assert alice.max_emails_per_week == 2


def three_line_order(path: Path, middle: bytes) -> None:
    """Write order O1 of three lines whose middle line's cells are given."""
    rows = [
        ORDERS_HEADER.encode(),
        b"O1,C1,2024-01-01 10:00:00,P1,1,1.00,GBP,,Cup,,",
        b"O1,C1,2024-01-01 10:00:00,P2," + middle,
        b"O1,C1,2024-01-01 10:00:00,P3,1,3.00,GBP,,Pot,,",
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")


def stored_order_lines(engine: Engine) -> list[tuple[Any, ...]]:
    """List (line number, product key, unit price) of every stored line."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(OrderLine.line_no, Product.external_id, OrderLine.unit_price)
            .join(Product, Product.id == OrderLine.product_id)
            .order_by(OrderLine.line_no)
        )
        return [tuple(r) for r in rows]


def test_a_fixed_line_comes_back_in_its_place(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    three_line_order(path, b"-1,2.00,GBP,,Mug,,")
    Importer(engine, settings).run("orders", path)
    assert stored_order_lines(engine) == [
        (1, "P1", Decimal("1.00")),
        (3, "P3", Decimal("3.00")),
    ]

    three_line_order(path, b"1,2.00,GBP,,Mug,,")
    report = later(Importer(engine, settings)).run("orders", path)

    assert totals(report)["orders"] == (3, 1, 0, 2, 0, 0)
    assert stored_order_lines(engine)[1] == (2, "P2", Decimal("2.00"))


def test_a_line_the_reader_rejects_keeps_its_place_too(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    three_line_order(path, b"1,2.00,GBP,,Mug \xff\xfe,,")
    Importer(engine, settings).run("orders", path)
    assert stored_order_lines(engine) == [
        (1, "P1", Decimal("1.00")),
        (3, "P3", Decimal("3.00")),
    ]

    three_line_order(path, b"1,2.00,GBP,,Mug,,")
    report = later(Importer(engine, settings)).run("orders", path)

    assert totals(report)["orders"] == (3, 1, 0, 2, 0, 0)


# -- rejects and errors ------------------------------------------------------


def test_rejects_file_lists_each_bad_cell_in_row_order(
    engine: Engine, settings: Settings
) -> None:
    importer = Importer(engine, settings)
    import_all(importer)
    report = importer.run("orders", GENERIC / "orders.csv")

    assert report.rejects_file is not None
    assert report.rejects_file.parent == settings.home / "var" / "rejects"
    assert re.fullmatch(r"orders-orders-\d{8}T\d{6}\.csv", report.rejects_file.name)
    assert report.rejects_file.read_text(encoding="utf-8").splitlines() == [
        "row,column,value,reason",
        "6,ordered_at,2023-13-45 10:00:00,not a date or time",
        "7,quantity,0,must be at least 1",
        "8,quantity,-1,negative quantity outside a cancellation",
        "9,unit_price,,missing",
        '10,status,shipped,"not one of placed, cancelled, returned"',
        "11,product_id,,missing",
    ]
    with engine.connect() as conn:
        run = conn.execute(select(ImportRun).order_by(ImportRun.id.desc())).first()
    assert run is not None
    assert (run.status, run.rejects_file) == ("done", str(report.rejects_file))
    assert run.counts["orders"]["rejected"] == 6


def test_a_row_with_several_bad_cells_is_one_rejected_row(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        f"{ORDERS_HEADER}\n"
        "O1,C1,2023-01-01 10:00:00,P1,1,2.00,GBP,placed,,,\n"
        "O2,C1,someday,P1,two,-3,GBP,placed,,,\n",
        encoding="utf-8",
    )

    report = Importer(engine, settings).run("orders", path)

    assert totals(report)["orders"] == (2, 1, 0, 0, 1, 0)
    assert rejected_rows(report) == [
        ("2", "ordered_at", "someday", "not a date or time"),
        ("2", "quantity", "two", "not a whole number"),
        ("2", "unit_price", "-3", "negative (-3)"),
    ]


def test_a_clean_file_writes_no_rejects_file(
    engine: Engine, settings: Settings
) -> None:
    path = settings.home / "customers.csv"
    path.write_text("customer_id,email\nC1,c1@example.com\n", encoding="utf-8")

    report = Importer(engine, settings).run("customers", path)

    assert report.rejects_file is None
    assert not (settings.home / "var" / "rejects").exists()


@pytest.mark.parametrize(
    ("kind", "fmt", "header", "named"),
    [
        ("orders", "generic", ORDERS_HEADER.replace(",unit_price", ""), "'unit_price'"),
        ("customers", "generic", "email,first_name", "'customer_id'"),
        (
            "orders",
            "shopify",
            "Name,Email,Created at,Lineitem quantity,Lineitem name,Lineitem sku",
            "'Lineitem price'",
        ),
        (
            "orders",
            "online-retail",
            "Invoice,StockCode,Quantity,Price,Customer ID",
            "'invoice_date' or 'InvoiceDate'",
        ),
    ],
)
def test_a_missing_required_column_names_it(
    engine: Engine,
    settings: Settings,
    tmp_path: Path,
    kind: Kind,
    fmt: str,
    header: str,
    named: str,
) -> None:
    path = tmp_path / "export.csv"
    cells = ",".join(["x"] * (header.count(",") + 1))
    path.write_text(f"{header}\n{cells}\n", encoding="utf-8")

    with pytest.raises(ImportFileError) as caught:
        Importer(engine, settings).run(kind, path, fmt)

    assert f"missing column {named}" in str(caught.value)
    assert caught.value.path == path
    assert count(engine, ImportRun) == 0


@pytest.mark.parametrize(
    ("kind", "fmt", "message"),
    [
        ("orders", "magento", "--format magento: unknown format; known formats: "),
        (
            "customers",
            "online-retail",
            "--format online-retail: no layout for customers",
        ),
        ("events", "shopify", "--format shopify: no layout for events"),
    ],
)
def test_an_unknown_format_or_kind_is_a_nudge_error(
    engine: Engine, settings: Settings, kind: Kind, fmt: str, message: str
) -> None:
    with pytest.raises(NudgeError, match=re.escape(message)):
        Importer(engine, settings).run(kind, GENERIC / "orders.csv", fmt)

    assert count(engine, ImportRun) == 0


# -- file types --------------------------------------------------------------


def gzipped(folder: Path, kind: Kind) -> Path:
    """Write a gzipped copy of a generic file into `folder`."""
    path = folder / f"{kind}.csv.gz"
    path.write_bytes(gzip.compress((GENERIC / f"{kind}.csv").read_bytes()))
    return path


def parquet(folder: Path, kind: Kind) -> Path:
    """Write a generic file as Parquet with text columns into `folder`."""
    path = folder / f"{kind}.parquet"
    frame = pd.read_csv(GENERIC / f"{kind}.csv", dtype=str, keep_default_na=False)
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("convert", [gzipped, parquet])
def test_gzip_and_parquet_import_like_plain_csv(
    engine: Engine,
    other_engine: Engine,
    settings: Settings,
    tmp_path: Path,
    convert: Any,
) -> None:
    plain = import_all(Importer(engine, settings))
    folder = tmp_path / "converted"
    folder.mkdir()
    converted = {
        kind: Importer(other_engine, settings).run(kind, convert(folder, kind))
        for kind in KINDS
    }

    for kind in KINDS:
        assert totals(converted[kind]) == totals(plain[kind])
        assert rejected_rows(converted[kind]) == rejected_rows(plain[kind])
    skip = ("updated_at",)
    assert snapshot(other_engine, skip=skip) == snapshot(engine, skip=skip)


def test_parquet_with_typed_columns_reads_like_its_csv(
    engine: Engine, other_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    csv_path = tmp_path / "products.csv"
    csv_path.write_text(
        "product_id,price,in_stock,created_at,title\n"
        "P1,45,true,2023-02-01T00:00:00,Board\n"
        "P2,19.99,false,2023-06-15T12:00:00,\n",
        encoding="utf-8",
    )
    parquet_path = tmp_path / "products.parquet"
    pd.DataFrame(
        {
            "product_id": ["P1", "P2"],
            "price": [45.0, 19.99],
            "in_stock": [True, False],
            "created_at": [datetime(2023, 2, 1), datetime(2023, 6, 15, 12)],
            "title": ["Board", None],
        }
    ).to_parquet(parquet_path, index=False)

    Importer(engine, settings).run("products", csv_path)
    Importer(other_engine, settings).run("products", parquet_path)

    skip = ("updated_at",)
    assert snapshot(other_engine, skip=skip) == snapshot(engine, skip=skip)
    with other_engine.connect() as conn:
        apron = conn.execute(select(Product).where(Product.external_id == "P2")).one()
    assert (apron.price, apron.in_stock) == (Decimal("19.99"), False)
    assert apron.created_at == datetime(2023, 6, 15, 11, 0)


# -- chunks ------------------------------------------------------------------


def big_orders(path: Path) -> None:
    """Write 1,502 order lines: one 2-line order, then 500 orders of 3 lines.

    Each order has a customer of its own, so each chunk creates placeholders.

    Chunks group orders by their first row // 1000, so B333 on rows 999-1001
    belongs wholly to the first chunk (B000-B333: 334 orders, 1,001 lines) and
    the second chunk holds B334-B500 (167 orders, 501 lines).
    """
    rows = [ORDERS_HEADER]
    for line in (1, 2):
        rows.append(f"B000,C0,2024-01-01 10:00:00,P{line},1,1.00,GBP,,,,")
    for number in range(1, 501):
        for line in range(3):
            rows.append(
                f"B{number:03d},C{number},2024-01-02 10:00:00,"
                f"P{(number + line) % 60},{line + 1},{number}.25,GBP,,,,"
            )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def stored_lines(engine: Engine) -> dict[str, int]:
    """Count the stored lines of each order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Order.external_id, func.count(OrderLine.id))
            .join(OrderLine, OrderLine.order_id == Order.id)
            .group_by(Order.external_id)
        )
        return {key: int(n) for key, n in rows}


def test_a_failing_chunk_leaves_the_earlier_chunks_whole(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = settings.home / "big-orders.csv"
    big_orders(path)
    line_writes: list[Table] = []

    # Fail the second chunk's order lines, after its orders and placeholders
    # were written in the same transaction.
    def failing_upsert(
        conn: Connection, table: Table, *args: Any, **kw: Any
    ) -> Written:
        if table.name == "order_lines":
            line_writes.append(table)
            if len(line_writes) == 2:
                raise RuntimeError("disk full")
        return upsert(conn, table, *args, **kw)

    monkeypatch.setattr("nudge.ingest.importer.upsert", failing_upsert)
    with pytest.raises(RuntimeError, match="disk full"):
        Importer(engine, settings).run("orders", path)

    first_chunk = {"B000": 2} | {f"B{n:03d}": 3 for n in range(1, 334)}
    assert stored_lines(engine) == first_chunk
    assert count(engine, Order) == 334
    assert count(engine, Customer) == 334  # the second chunk's were rolled back
    with engine.connect() as conn:
        assert conn.scalar(select(ImportRun.status)) == "failed"

    monkeypatch.undo()
    progress: list[tuple[int, int]] = []
    report = Importer(engine, settings).run(
        "orders", path, progress=lambda done, total: progress.append((done, total))
    )

    assert totals(report)["orders"] == (1502, 501, 0, 1001, 0, 0)
    assert totals(report)["invoices"] == (501, 167, 0, 334, 0, 0)
    assert totals(report)["customers"] == (501, 167, 0, 334, 0, 0)
    assert progress == [(1001, 1502), (1502, 1502)]
    assert stored_lines(engine) == first_chunk | {
        f"B{n:03d}": 3 for n in range(334, 501)
    }
