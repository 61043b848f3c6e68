"""Property tests: good and malformed rows shuffled into one file, none lost.

Each example draws good rows and malformed rows (bad dates, negative or
non-numeric numbers, missing required values, invalid UTF-8 bytes, extra fields,
duplicate ids), shuffles them into one CSV file at known positions, imports it
into a fresh store and checks that every malformed row is in the rejects file
under its row number with its reason, every good row is stored with its values,
and `read` counts every row of the file.

An unterminated quote makes any CSV reader take the rest of the file, up to the
next quote character, as one cell, so no reader can tell where the rows after
it would have begun. The generator therefore only ever puts such a row last,
where what a reader must do is plain: return it as one row that is too short,
which the importer rejects like any row of the wrong width.

Naive times are drawn between 1972 and 2037 and away from the hours a clock
change skips or repeats in Europe/London, so that the UTC time each one stands
for is unambiguous.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from nudge.ingest.importer import Importer, ImportReport
from nudge.ingest.layouts import FIELDS, Kind
from nudge.settings import Settings
from nudge.store.db import make_engine, upgrade
from nudge.store.models import Customer, Order, OrderLine, Product

SHOP = ZoneInfo("Europe/London")
INVALID = b"\xff\xfe"
MARK = "@@INVALID@@"
EXAMPLES = hypothesis_settings(max_examples=30, deadline=None)

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Good:
    """A row that must be stored: its line, its key and the values to find."""

    line: bytes
    key: str
    values: Row


@dataclass(frozen=True)
class Bad:
    """A row that must be rejected: its line and the (column, reason) it gets."""

    line: bytes
    column: str | None  # None where the column is not part of the promise
    reason: str


@contextmanager
def fresh_store() -> Iterator[tuple[Engine, Settings]]:
    """Yield a migrated SQLite store of its own, as the `engine` fixture makes."""
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        settings = Settings(
            home=home,
            database_url=f"sqlite:///{home / 'nudge.db'}",
            var_dir=home / "var",
            outbox_dir=home / "var" / "outbox",
            import_chunk_rows=1_000,
        )
        engine = make_engine(settings.resolved_database_url)
        upgrade(engine)
        try:
            yield engine, settings
        finally:
            engine.dispose()


def line(cells: list[str]) -> bytes:
    """Encode one row as a CSV line, turning MARK into invalid UTF-8 bytes."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode("utf-8").replace(MARK.encode(), INVALID)


@contextmanager
def imported(
    kind: Kind, header: list[str], rows: list[Good | Bad]
) -> Iterator[tuple[Engine, ImportReport]]:
    """Write the rows after a header, import them into a fresh store, yield both."""
    with fresh_store() as (engine, settings):
        path = settings.home / f"{kind}.csv"
        path.write_bytes(line(header) + b"".join(r.line for r in rows))
        rejects = settings.home / "rejects.csv"
        report = Importer(engine, settings).run(kind, path, rejects_path=rejects)
        yield engine, report


def rejects_by_row(report: ImportReport) -> dict[int, set[tuple[str, str]]]:
    """Group the rejects file's (column, reason) pairs by row number."""
    out: dict[int, set[tuple[str, str]]] = {}
    if report.rejects_file is None:
        return out
    with report.rejects_file.open(newline="", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            out.setdefault(int(r["row"]), set()).add((r["column"], r["reason"]))
    return out


def check_rejects(report: ImportReport, rows: list[Good | Bad]) -> None:
    """Check that exactly the bad rows are rejected, each with its reason."""
    found = rejects_by_row(report)
    bad = {n: r for n, r in enumerate(rows, start=1) if isinstance(r, Bad)}
    assert set(found) == set(bad)
    for number, row in bad.items():
        reasons = {reason for _, reason in found[number]}
        assert row.reason in reasons, (number, found[number])
        if row.column is not None:
            assert (row.column, row.reason) in found[number], (number, found[number])


# -- values ------------------------------------------------------------------


def unambiguous(moment: datetime) -> bool:
    """Tell whether a shop-local wall time exists exactly once."""
    early = moment.replace(tzinfo=SHOP, fold=0).utcoffset()
    late = moment.replace(tzinfo=SHOP, fold=1).utcoffset()
    return early == late


def utc(moment: datetime) -> datetime:
    """Convert an aware time to naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


@st.composite
def times(draw: st.DrawFn) -> tuple[str, datetime]:
    """Draw a time cell as exports write them, with the naive UTC it stands for."""
    moment = draw(
        st.datetimes(min_value=datetime(1972, 1, 2), max_value=datetime(2037, 12, 30))
    ).replace(microsecond=0)
    style = draw(st.sampled_from(["space", "iso", "date", "offset", "zulu"]))
    if style == "date":
        moment = moment.replace(hour=0, minute=0, second=0)
        return moment.strftime("%Y-%m-%d"), utc(moment.replace(tzinfo=SHOP))
    if style == "offset":
        minutes = draw(st.sampled_from([0, 60, 120, -300, 330, -210]))
        hours, rest = divmod(abs(minutes), 60)
        sign = "+" if minutes >= 0 else "-"
        text = f"{moment:%Y-%m-%dT%H:%M:%S}{sign}{hours:02d}:{rest:02d}"
        return text, moment - timedelta(minutes=minutes)
    if style == "zulu":
        return f"{moment:%Y-%m-%dT%H:%M:%S}Z", moment
    # Clock changes skip or repeat one hour; three hours on is clear of it.
    local = moment if unambiguous(moment) else moment + timedelta(hours=3)
    pattern = "%Y-%m-%d %H:%M:%S" if style == "space" else "%Y-%m-%dT%H:%M:%S"
    return local.strftime(pattern), utc(local.replace(tzinfo=SHOP))


titles = st.text(
    alphabet=st.sampled_from("abcxyzABC019 ,\"'éß-&"), min_size=1, max_size=20
).map(lambda t: t.strip() or "Thing")
prices = st.integers(min_value=0, max_value=99_999_999).map(
    lambda cents: Decimal(cents).scaleb(-2)
)


# -- orders ------------------------------------------------------------------

ORDER_HEADER = list(FIELDS["orders"])
ORDER_REQUIRED = ["order_id", "ordered_at", "product_id", "quantity", "unit_price"]


@st.composite
def good_order(draw: st.DrawFn, number: int) -> Good:
    """Draw one valid order line, the only line of its order."""
    key = f"O{number}"
    customer = draw(st.sampled_from(["C1", "C2", "0042", "42", ""]))
    product = draw(st.sampled_from(["P1", "0042", "42", "SKU-9"]))
    quantity = draw(st.integers(min_value=1, max_value=10_000))
    price = draw(prices)
    cell, moment = draw(times())
    currency = draw(st.sampled_from(["GBP", "EUR", "usd", ""]))
    status = draw(st.sampled_from(["placed", "cancelled", "returned", "Returned", ""]))
    cells = [
        key,
        customer,
        cell,
        product,
        str(quantity),
        f"{price:f}",
        currency,
        status,
        draw(titles),
        "",
        "",
    ]
    values = (
        customer or None,
        moment,
        currency.upper() or "GBP",
        status.lower() or "placed",
        product,
        quantity,
        price,
    )
    return Good(line(cells), key, values)


BAD_ORDER_CELLS: dict[str, list[tuple[str, str]]] = {
    "ordered_at": [
        ("2023-02-30 10:00:00", "not a date or time"),
        ("2023-13-01", "not a date or time"),
        ("not a date", "not a date or time"),
        ("32/01/2023", "not a date or time"),
        ("1969-06-01 12:00:00", "outside 1970-2199"),
    ],
    "quantity": [
        ("two", "not a whole number"),
        ("1.5", "not a whole number"),
        ("3x", "not a whole number"),
        ("0", "must be at least 1"),
        ("-4", "negative quantity outside a cancellation"),
        ("-1000", "negative quantity outside a cancellation"),
    ],
    "unit_price": [
        ("abc", "not a number"),
        ("-1.00", "negative (-1.00)"),
        ("1e12", "too large"),
    ],
}


@st.composite
def bad_order(draw: st.DrawFn, number: int) -> Bad:
    """Draw one order line with exactly one problem."""
    base = draw(good_order(number))
    cells = next(csv.reader(io.StringIO(base.line.decode("utf-8"))))
    problem = draw(st.sampled_from(["cell", "missing", "invalid-utf8", "extra-field"]))
    if problem == "cell":
        column = draw(st.sampled_from(sorted(BAD_ORDER_CELLS)))
        text, reason = draw(st.sampled_from(BAD_ORDER_CELLS[column]))
        cells[ORDER_HEADER.index(column)] = text
        return Bad(line(cells), column, reason)
    if problem == "missing":
        column = draw(st.sampled_from(ORDER_REQUIRED))
        cells[ORDER_HEADER.index(column)] = ""
        return Bad(line(cells), column, "missing")
    if problem == "invalid-utf8":
        cells[ORDER_HEADER.index("title")] = f"Mug {MARK} blue"
        return Bad(line(cells), "title", "not valid utf-8 text")
    cells.append("surplus")
    return Bad(line(cells), "", "has 12 fields, the header has 11")


def unterminated_order(number: int) -> Bad:
    """Return a last row whose title opens a quote that never closes."""
    start = line([f"O{number}", "C1", "2024-01-01 10:00:00", "P1", "1", "2.50"])
    cells = start.rstrip(b"\n") + b',GBP,placed,"Broken title,x@example.com,GB\n'
    return Bad(cells, "", "has 9 fields, the header has 11")


def stored_orders(engine: Engine) -> dict[str, Row]:
    """Map each stored order to the values `good_order` promises."""
    statement = (
        select(
            Order.external_id,
            Customer.external_id,
            Order.ordered_at,
            Order.currency,
            Order.status,
            Product.external_id,
            OrderLine.quantity,
            OrderLine.unit_price,
            OrderLine.line_no,
            OrderLine.status,
        )
        .join(OrderLine, OrderLine.order_id == Order.id)
        .join(Product, Product.id == OrderLine.product_id)
        .outerjoin(Customer, Customer.id == Order.customer_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    for r in rows:
        assert (r[8], r[9]) == (1, r[4])  # one line, with its order's status
    return {r[0]: tuple(r[1:8]) for r in rows}


@st.composite
def order_files(draw: st.DrawFn) -> list[Good | Bad]:
    """Draw good and bad order lines in a shuffled order, maybe a broken tail."""
    good = [draw(good_order(n)) for n in range(draw(st.integers(0, 12)))]
    bad = [draw(bad_order(100 + n)) for n in range(draw(st.integers(0, 8)))]
    rows: list[Good | Bad] = draw(st.permutations([*good, *bad]))
    if draw(st.booleans()):
        rows.append(unterminated_order(999))
    return rows


@EXAMPLES
@given(rows=order_files())
def test_orders_file_rejects_bad_rows_and_stores_good_ones(
    rows: list[Good | Bad],
) -> None:
    with imported("orders", ORDER_HEADER, rows) as (engine, report):
        counts = report.counts["orders"]
        good = [r for r in rows if isinstance(r, Good)]

        assert counts.read == len(rows)
        assert (counts.inserted, counts.rejected) == (len(good), len(rows) - len(good))
        check_rejects(report, rows)
        assert stored_orders(engine) == {r.key: r.values for r in good}


# -- customers and products --------------------------------------------------


def first_wins(rows: list[Good | Bad], label: str) -> list[Good | Bad]:
    """Turn every later row of a repeated key into the duplicate it is."""
    first: dict[str, int] = {}
    out: list[Good | Bad] = []
    for number, row in enumerate(rows, start=1):
        if isinstance(row, Good) and row.key in first:
            reason = f"duplicate {label} (first on row {first[row.key]})"
            out.append(Bad(row.line, label, reason))
            continue
        if isinstance(row, Good):
            first[row.key] = number
        out.append(row)
    return out


@dataclass(frozen=True)
class Catalog:
    """How to draw and read back one catalog file (customers or products)."""

    kind: Kind
    header: list[str]
    good: Callable[[int, str], Any]
    bad: dict[str, list[tuple[str, str]]]
    read_back: Callable[[Engine], dict[str, Row]]


@st.composite
def good_customer(draw: st.DrawFn, number: int, key: str) -> Good:
    """Draw one valid customer row with a given key."""
    email = f"user{number}@" + draw(st.sampled_from(["example.com", "EXAMPLE.org"]))
    name = draw(titles)
    cell, moment = draw(st.one_of(st.just(("", None)), times()))
    consent = draw(st.sampled_from(["yes", "no", "TRUE", "false", "subscribed", ""]))
    weekly = draw(st.sampled_from(["", "0", "3"]))
    cells = [key, email, name, cell, consent, weekly]
    local, _, domain = email.partition("@")
    values = (
        f"{local}@{domain.lower()}",
        name,
        moment,
        consent.lower() in {"yes", "true", "subscribed"},
        int(weekly) if weekly else None,
    )
    return Good(line(cells), key, values)


def stored_customers(engine: Engine) -> dict[str, Row]:
    """Map each stored customer to the values `good_customer` promises."""
    statement = select(
        Customer.external_id,
        Customer.email,
        Customer.first_name,
        Customer.created_at,
        Customer.accepts_marketing,
        Customer.max_emails_per_week,
    )
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(statement)}


@st.composite
def good_product(draw: st.DrawFn, number: int, key: str) -> Good:
    """Draw one valid product row with a given key."""
    title = draw(titles)
    price = draw(prices)
    currency = draw(st.sampled_from(["GBP", "eur", ""]))
    stock = draw(st.sampled_from(["true", "no", "1", ""]))
    path = f"/products/item-{number}"
    cells = [key, title, f"{price:f}", currency, stock, path]
    values = (
        title,
        price,
        currency.upper() or "GBP",
        None if not stock else stock in {"true", "1"},
        "https://demo-shop.example" + path,
    )
    return Good(line(cells), key, values)


def stored_products(engine: Engine) -> dict[str, Row]:
    """Map each stored product to the values `good_product` promises."""
    statement = select(
        Product.external_id,
        Product.title,
        Product.price,
        Product.currency,
        Product.in_stock,
        Product.product_url,
    )
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(statement)}


CATALOGS = {
    "customers": Catalog(
        "customers",
        [
            "customer_id",
            "email",
            "first_name",
            "created_at",
            "accepts_marketing",
            "max_emails_per_week",
        ],
        good_customer,
        {
            "email": [
                ("no-at-sign", "not an e-mail address"),
                ("two@@example.com", "not an e-mail address"),
                ("a@b", "not an e-mail address"),
            ],
            "created_at": [("2023-02-30", "not a date or time")],
            "accepts_marketing": [("maybe", "not true or false")],
            "max_emails_per_week": [
                ("-1", "must be at least 0"),
                ("x", "not a whole number"),
            ],
        },
        stored_customers,
    ),
    "products": Catalog(
        "products",
        ["product_id", "title", "price", "currency", "in_stock", "product_url"],
        good_product,
        {
            "price": [("-0.01", "negative (-0.01)"), ("12 GBP", "not a number")],
            "currency": [
                ("EURO", "longer than 3 characters"),
                ("E1", "not a three-letter currency code"),
            ],
            "in_stock": [("perhaps", "not true or false")],
            "product_url": [("ftp://x.example/a", "not an absolute http(s) URL")],
        },
        stored_products,
    ),
}


@st.composite
def bad_catalog_row(draw: st.DrawFn, catalog: Catalog, number: int) -> Bad:
    """Draw one catalog row with exactly one problem (other than a duplicate)."""
    base = draw(catalog.good(number, f"K{number}"))
    cells = next(csv.reader(io.StringIO(base.line.decode("utf-8"))))
    problem = draw(st.sampled_from(["cell", "missing", "invalid-utf8", "extra-field"]))
    if problem == "cell":
        column = draw(st.sampled_from(sorted(catalog.bad)))
        text, reason = draw(st.sampled_from(catalog.bad[column]))
        cells[catalog.header.index(column)] = text
        return Bad(line(cells), column, reason)
    if problem == "missing":
        cells[0] = ""
        return Bad(line(cells), catalog.header[0], "missing")
    if problem == "invalid-utf8":
        cells[2] = f"x{MARK}y"
        return Bad(line(cells), catalog.header[2], "not valid utf-8 text")
    cells.append("surplus")
    width = len(catalog.header)
    return Bad(line(cells), "", f"has {width + 1} fields, the header has {width}")


@st.composite
def catalog_files(draw: st.DrawFn, catalog: Catalog) -> list[Good | Bad]:
    """Draw good rows, repeats of their keys and bad rows, shuffled."""
    count = draw(st.integers(0, 10))
    good = [draw(catalog.good(n, f"K{n}")) for n in range(count)]
    repeats = [
        draw(catalog.good(50 + n, f"K{draw(st.integers(0, count - 1))}"))
        for n in range(draw(st.integers(0, 4)) if count else 0)
    ]
    bad = [
        draw(bad_catalog_row(catalog, 100 + n)) for n in range(draw(st.integers(0, 6)))
    ]
    rows: list[Good | Bad] = draw(st.permutations([*good, *repeats, *bad]))
    return first_wins(rows, catalog.header[0])


def check_catalog(catalog: Catalog, rows: list[Good | Bad]) -> None:
    """Import a drawn catalog file and check every row is accounted for."""
    with imported(catalog.kind, catalog.header, rows) as (engine, report):
        counts = report.counts[catalog.kind]
        good = [r for r in rows if isinstance(r, Good)]

        assert counts.read == len(rows)
        assert (counts.inserted, counts.rejected) == (len(good), len(rows) - len(good))
        check_rejects(report, rows)
        assert catalog.read_back(engine) == {r.key: r.values for r in good}


@EXAMPLES
@given(data=st.data())
def test_customers_file_keeps_first_of_each_id_and_rejects_bad_rows(
    data: st.DataObject,
) -> None:
    catalog = CATALOGS["customers"]
    check_catalog(catalog, data.draw(catalog_files(catalog)))


@EXAMPLES
@given(data=st.data())
def test_products_file_keeps_first_of_each_id_and_rejects_bad_rows(
    data: st.DataObject,
) -> None:
    catalog = CATALOGS["products"]
    check_catalog(catalog, data.draw(catalog_files(catalog)))
