"""Each preset imports a miniature export in its real layout to exact stored values.

The files under tests/fixtures/exports copy the header layouts the shops write;
the tests read the store back and compare every value that matters downstream:
statuses, quantities, Decimal prices, naive UTC times, keys and placeholders.
"""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from nudge.ingest.importer import Counts, Importer, ImportReport
from nudge.ingest.layouts import Kind
from nudge.settings import Settings
from nudge.store import queries
from nudge.store.models import BehaviourEvent, Customer, Order, OrderLine, Product

EXPORTS = Path(__file__).resolve().parents[2] / "fixtures" / "exports"
GENERIC = EXPORTS / "generic"
CDN = "https://cdn.shopify.com/s/files/1/0612/3456/products/"
ALICE = "alice.ng@example.com"  # written Alice.Ng@Example.com and ALICE.NG@...
ERIN = "erin@example.com"

Row = tuple[Any, ...]


def run(
    engine: Engine, settings: Settings, kind: Kind, path: Path, fmt: str
) -> ImportReport:
    """Import one fixture with its rejects written next to the store."""
    rejects = settings.home / f"{kind}-{fmt}-rejects.csv"
    report = Importer(engine, settings).run(kind, path, fmt, rejects_path=rejects)
    assert_balanced(report.counts[kind])
    return report


def assert_balanced(tally: Counts) -> None:
    """Check that every row read is accounted for exactly once."""
    accounted = (
        tally.inserted + tally.updated + tally.unchanged + tally.rejected + tally.merged
    )
    assert tally.read == accounted


def counts(report: ImportReport, entity: str) -> Row:
    """Return an entity's counts as (read, inserted, updated, unchanged, rejected)."""
    c = report.counts[entity]
    return (c.read, c.inserted, c.updated, c.unchanged, c.rejected)


def rejects(report: ImportReport) -> list[Row]:
    """Read the rejects file back as (row, column, value, reason) tuples."""
    if report.rejects_file is None:
        return []
    with report.rejects_file.open(newline="", encoding="utf-8") as handle:
        return [
            (int(r["row"]), r["column"], r["value"], r["reason"])
            for r in csv.DictReader(handle)
        ]


def orders(engine: Engine) -> dict[str, Row]:
    """Map each stored order to (customer key, ordered_at, currency, status)."""
    statement = select(
        Order.external_id,
        Customer.external_id,
        Order.ordered_at,
        Order.currency,
        Order.status,
    ).outerjoin(Customer, Customer.id == Order.customer_id)
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(statement)}


def lines(engine: Engine) -> dict[tuple[str, int], Row]:
    """Map (order key, line number) to (product key, quantity, price, status)."""
    statement = (
        select(
            Order.external_id,
            OrderLine.line_no,
            Product.external_id,
            OrderLine.quantity,
            OrderLine.unit_price,
            OrderLine.status,
        )
        .join(Order, Order.id == OrderLine.order_id)
        .join(Product, Product.id == OrderLine.product_id)
    )
    with engine.connect() as conn:
        return {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(statement)}


def customer(engine: Engine, external_id: str) -> dict[str, Any]:
    """Return one stored customer's columns by its shop key."""
    statement = select(Customer).where(Customer.external_id == external_id)
    with engine.connect() as conn:
        return dict(conn.execute(statement).one()._mapping)


def product(engine: Engine, external_id: str) -> dict[str, Any]:
    """Return one stored product's columns by its shop key."""
    statement = select(Product).where(Product.external_id == external_id)
    with engine.connect() as conn:
        return dict(conn.execute(statement).one()._mapping)


def keys(engine: Engine, model: type[Customer] | type[Product]) -> dict[str, str]:
    """Map every stored customer or product key to its source."""
    with engine.connect() as conn:
        rows = conn.execute(select(model.external_id, model.source))
        return {key: source for key, source in rows}


def events(engine: Engine) -> list[Row]:
    """List stored events as (customer key, type, time, product key, query)."""
    statement = (
        select(
            Customer.external_id,
            BehaviourEvent.event_type,
            BehaviourEvent.occurred_at,
            Product.external_id,
            BehaviourEvent.query,
        )
        .join(Customer, Customer.id == BehaviourEvent.customer_id)
        .outerjoin(Product, Product.id == BehaviourEvent.product_id)
        .order_by(BehaviourEvent.occurred_at)
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(statement)]


def assert_placeholder(row: dict[str, Any], **expected: Any) -> None:
    """Check a customer created only because an order named it."""
    assert row["source"] == "order"
    assert row["accepts_marketing"] is False
    assert row["consent_source"] is None
    assert row["consent_at"] is None
    for name, value in expected.items():
        assert row[name] == value, name


# -- Shopify ---------------------------------------------------------------


def test_shopify_customers_are_keyed_by_lower_cased_email(
    engine: Engine, settings: Settings
) -> None:
    path = EXPORTS / "shopify_customers.csv"
    report = run(engine, settings, "customers", path, "shopify")

    assert counts(report, "customers") == (4, 3, 0, 0, 1)
    assert keys(engine, Customer) == {
        "alice.ng@example.com": "catalog",
        "bob@example.com": "catalog",
        "carol@example.com": "catalog",
    }
    alice = customer(engine, "alice.ng@example.com")
    assert alice["email"] == "Alice.Ng@example.com"
    assert (alice["first_name"], alice["last_name"]) == ("Alice", "Ng")
    assert alice["country"] == "GB"
    assert alice["accepts_marketing"] is True
    assert alice["consent_source"] == "import:shopify"
    bob = customer(engine, "bob@example.com")
    assert bob["accepts_marketing"] is False
    assert bob["consent_source"] is None
    assert customer(engine, "carol@example.com")["country"] == "ES"

    # The phone-only customer has no e-mail, so no key.
    assert [(r[0], r[2], r[3]) for r in rejects(report)] == [(4, "", "missing")]


def test_shopify_customer_without_email_is_rejected_against_the_email_column(
    engine: Engine, settings: Settings
) -> None:
    path = EXPORTS / "shopify_customers.csv"
    report = run(engine, settings, "customers", path, "shopify")

    assert rejects(report) == [(4, "Email", "", "missing")]


def test_shopify_orders_take_order_fields_from_the_first_line(
    engine: Engine, settings: Settings
) -> None:
    run(engine, settings, "customers", EXPORTS / "shopify_customers.csv", "shopify")
    report = run(engine, settings, "orders", EXPORTS / "shopify_orders.csv", "shopify")

    assert counts(report, "orders") == (10, 9, 0, 0, 1)
    assert counts(report, "invoices") == (6, 6, 0, 0, 0)
    assert counts(report, "customers") == (4, 1, 0, 3, 0)
    assert counts(report, "products") == (6, 6, 0, 0, 0)
    # Shopify's times carry their offset; they are stored as naive UTC.
    assert orders(engine) == {
        "#1001": (ALICE, datetime(2023, 7, 15, 13, 3, 22), "GBP", "placed"),
        "#1002": ("bob@example.com", datetime(2023, 12, 1, 10, 0), "GBP", "cancelled"),
        "#1003": ("carol@example.com", datetime(2023, 8, 20, 8, 15), "EUR", "returned"),
        "#1004": (ALICE, datetime(2024, 1, 5, 16, 45), "GBP", "placed"),
        "#1005": (ERIN, datetime(2024, 3, 2, 11, 20, 30), "GBP", "placed"),
        "#1006": (None, datetime(2024, 4, 13, 14, 1, 58), "GBP", "placed"),
    }
    stored = lines(engine)
    del stored[("#1002", 2)]  # see the cancellation test below
    assert stored == {
        ("#1001", 1): ("TEE-M", 2, Decimal("20.00"), "placed"),
        ("#1001", 2): ("Gift wrap", 1, Decimal("2.50"), "placed"),
        ("#1002", 1): ("MUG-01", 1, Decimal("8.00"), "cancelled"),
        ("#1003", 1): ("SHIRT-L", 1, Decimal("45.00"), "returned"),
        ("#1003", 2): ("CAP-01", 1, Decimal("12.00"), "returned"),
        ("#1004", 1): ("TEE-S", 2, Decimal("20.00"), "placed"),
        ("#1005", 1): ("MUG-01", 1, Decimal("8.00"), "placed"),
        ("#1006", 1): ("TEE-M", 1, Decimal("20.00"), "placed"),
    }
    assert rejects(report) == [(9, "Lineitem quantity", "0", "must be at least 1")]


def test_shopify_orders_create_placeholders_without_consent(
    engine: Engine, settings: Settings
) -> None:
    run(engine, settings, "customers", EXPORTS / "shopify_customers.csv", "shopify")
    run(engine, settings, "orders", EXPORTS / "shopify_orders.csv", "shopify")

    erin = customer(engine, "erin@example.com")
    assert_placeholder(
        erin,
        email="erin@example.com",
        country="GB",
        created_at=datetime(2024, 3, 2, 11, 20, 30),
    )
    # An order neither grants nor withdraws consent a customer file gave.
    alice = customer(engine, "alice.ng@example.com")
    assert alice["source"] == "catalog"
    assert alice["accepts_marketing"] is True
    wrap = product(engine, "Gift wrap")
    assert wrap["source"] == "order"
    assert wrap["title"] == "Gift wrap"
    assert wrap["price"] == Decimal("2.50")
    assert wrap["currency"] == "GBP"
    assert wrap["created_at"] == datetime(2023, 7, 15, 13, 3, 22)


def test_shopify_cancellation_applies_to_every_line_of_the_order(
    engine: Engine, settings: Settings
) -> None:
    run(engine, settings, "orders", EXPORTS / "shopify_orders.csv", "shopify")

    stored = lines(engine)
    assert stored[("#1002", 1)][3] == "cancelled"
    assert stored[("#1002", 2)] == ("CAP-01", 1, Decimal("12.00"), "cancelled")


def test_shopify_products_merge_variant_and_image_rows(
    engine: Engine, settings: Settings
) -> None:
    path = EXPORTS / "shopify_products.csv"
    report = run(engine, settings, "products", path, "shopify")

    products = report.counts["products"]
    assert (products.read, products.inserted, products.merged) == (7, 4, 3)
    assert rejects(report) == []
    assert keys(engine, Product) == {
        "classic-tee": "catalog",
        "enamel-mug": "catalog",
        "winter-scarf": "catalog",
        "linen-shirt": "catalog",
    }
    tee = product(engine, "classic-tee")
    assert tee["title"] == "Classic Tee"
    assert tee["description"] == "Soft organic cotton, made in Portugal."
    assert tee["category"] == "T-Shirts"
    assert tee["brand"] == "Northwind"
    assert tee["price"] == Decimal("20.00")
    assert tee["currency"] == "GBP"
    assert tee["image_url"] == CDN + "tee-front.jpg"
    assert tee["product_url"] == "https://demo-shop.example/products/classic-tee"
    assert tee["in_stock"] is True

    assert product(engine, "enamel-mug")["in_stock"] is False
    scarf = product(engine, "winter-scarf")
    assert scarf["description"] == "Merino Hand wash"
    assert scarf["price"] == Decimal("35.50")
    assert scarf["image_url"] is None
    assert scarf["in_stock"] is False  # a draft is not for sale, whatever its stock


def test_shopify_product_is_in_stock_when_any_variant_is(
    engine: Engine, settings: Settings
) -> None:
    run(engine, settings, "products", EXPORTS / "shopify_products.csv", "shopify")

    assert product(engine, "linen-shirt")["in_stock"] is True


def test_shopify_order_lines_point_at_the_catalog_product(
    engine: Engine, settings: Settings
) -> None:
    run(engine, settings, "products", EXPORTS / "shopify_products.csv", "shopify")
    run(engine, settings, "orders", EXPORTS / "shopify_orders.csv", "shopify")

    assert lines(engine)[("#1001", 1)][0] == "classic-tee"
    assert "TEE-M" not in keys(engine, Product)


# -- WooCommerce and BigCommerce ---------------------------------------------


def test_woocommerce_statuses_and_shop_time(engine: Engine, settings: Settings) -> None:
    path = EXPORTS / "woocommerce_orders.csv"
    report = run(engine, settings, "orders", path, "woocommerce")

    assert counts(report, "orders") == (6, 6, 0, 0, 0)
    assert counts(report, "invoices") == (5, 5, 0, 0, 0)
    # Naive times are shop time (Europe/London): summer ones move back an hour.
    assert orders(engine) == {
        "2041": ("12", datetime(2023, 7, 14, 14, 30), "GBP", "placed"),
        "2042": ("15", datetime(2023, 11, 20, 9, 0), "EUR", "returned"),
        "2043": ("12", datetime(2023, 11, 21, 18, 0), "GBP", "cancelled"),
        "2044": ("21", datetime(2024, 2, 29, 23, 59, 59), "GBP", "placed"),
        "2045": ("15", datetime(2024, 5, 1, 7, 0), "EUR", "placed"),
    }
    assert lines(engine) == {
        ("2041", 1): ("WB-01", 1, Decimal("45.00"), "placed"),
        ("2041", 2): ("OS-02", 3, Decimal("4.50"), "placed"),
        ("2042", 1): ("OS-02", 2, Decimal("5.25"), "returned"),
        ("2043", 1): ("WB-01", 1, Decimal("45.00"), "cancelled"),
        ("2044", 1): ("WAX-50", 2, Decimal("6.99"), "placed"),
        ("2045", 1): ("WB-01", 1, Decimal("49.00"), "placed"),
    }
    assert_placeholder(
        customer(engine, "12"),
        email="ann@example.com",
        country="GB",
        created_at=datetime(2023, 7, 14, 14, 30),
    )
    assert product(engine, "WAX-50")["title"] == "Beeswax Polish"


def test_bigcommerce_dates_are_day_first(engine: Engine, settings: Settings) -> None:
    path = EXPORTS / "bigcommerce_orders.csv"
    report = run(engine, settings, "orders", path, "bigcommerce")

    assert counts(report, "orders") == (7, 6, 0, 0, 1)
    # 03/04/2024 is the 3rd of April, midnight in British Summer Time.
    assert orders(engine) == {
        "100": ("7", datetime(2023, 12, 25, 0, 0), "GBP", "placed"),
        "101": ("8", datetime(2024, 4, 2, 23, 0), "GBP", "cancelled"),
        "102": ("7", datetime(2024, 1, 13, 0, 0), "GBP", "returned"),
        "103": ("9", datetime(2024, 6, 4, 23, 0), "GBP", "placed"),
        "105": ("9", datetime(2024, 11, 12, 0, 0), "GBP", "placed"),
    }
    assert lines(engine) == {
        ("100", 1): ("BC-TEA", 2, Decimal("15.00"), "placed"),
        ("100", 2): ("BC-CUP", 1, Decimal("9.99"), "placed"),
        ("101", 1): ("BC-CUP", 1, Decimal("9.99"), "cancelled"),
        ("102", 1): ("BC-TEA", 1, Decimal("15.00"), "returned"),
        ("103", 1): ("BC-POT", 1, Decimal("24.50"), "placed"),
        ("105", 1): ("BC-TEA", 2, Decimal("15.00"), "placed"),
    }
    assert rejects(report) == [(6, "Order Date", "31/06/2024", "not a date or time")]
    assert customer(engine, "8")["email"] == "dan@example.com"


GUEST_EXPORTS = {
    "woocommerce": (
        "Order ID,Order Status,Order Date,Customer User ID,Billing Email,"
        "Item Name,SKU,Quantity,Item Cost\n"
        "3001,completed,2024-01-10 10:00:00,0,guest.one@example.com,"
        "Oak Spoon,OS-02,1,4.50\n"
        "3002,completed,2024-01-11 10:00:00,0,guest.two@example.com,"
        "Walnut Board,WB-01,1,45.00\n"
    ),
    "bigcommerce": (
        "Order ID,Customer ID,Customer Email,Order Date,Order Status,"
        "Product SKU,Product Name,Product Qty,Product Unit Price\n"
        "3001,0,guest.one@example.com,10/01/2024,Shipped,BC-TEA,Tea Tin,1,15.00\n"
        "3002,0,guest.two@example.com,11/01/2024,Shipped,BC-CUP,Tea Cup,1,9.99\n"
    ),
}


@pytest.mark.parametrize("fmt", sorted(GUEST_EXPORTS))
def test_guest_checkouts_have_no_customer(
    engine: Engine, settings: Settings, fmt: str
) -> None:
    path = settings.home / f"{fmt}-guests.csv"
    path.write_text(GUEST_EXPORTS[fmt], encoding="utf-8")
    run(engine, settings, "orders", path, fmt)

    assert [o[0] for o in orders(engine).values()] == [None, None]
    assert "0" not in keys(engine, Customer)


# -- Online Retail -----------------------------------------------------------


def test_online_retail_cancellations_guests_and_adjustments(
    engine: Engine, settings: Settings
) -> None:
    path = EXPORTS / "online_retail.csv"
    report = run(engine, settings, "orders", path, "online-retail")

    assert counts(report, "orders") == (11, 9, 0, 0, 2)
    assert counts(report, "invoices") == (5, 5, 0, 0, 0)
    assert counts(report, "customers") == (3, 3, 0, 0, 0)
    assert counts(report, "products") == (7, 7, 0, 0, 0)
    assert orders(engine) == {
        "489434": ("13085", datetime(2009, 12, 1, 7, 45), "GBP", "placed"),
        "489435": ("13085", datetime(2009, 12, 1, 7, 46), "GBP", "placed"),
        "C489449": ("16321", datetime(2009, 12, 1, 10, 33), "GBP", "cancelled"),
        "489488": (None, datetime(2009, 12, 1, 12, 21), "GBP", "placed"),
        "502134": ("13078", datetime(2010, 6, 1, 8, 6), "GBP", "placed"),
    }
    # A cancellation's quantities are stored positive, marked cancelled.
    assert lines(engine) == {
        ("489434", 1): ("85048", 12, Decimal("6.95"), "placed"),
        ("489434", 2): ("79323P", 12, Decimal("6.75"), "placed"),
        ("489434", 3): ("22041", 48, Decimal("2.1"), "placed"),
        ("489435", 1): ("22349", 12, Decimal("3.75"), "placed"),
        ("C489449", 1): ("22087", 12, Decimal("2.95"), "cancelled"),
        ("C489449", 2): ("85048", 2, Decimal("6.95"), "cancelled"),
        ("489488", 1): ("22111", 3, Decimal("4.95"), "placed"),
        ("489488", 2): ("22349", 2, Decimal("3.75"), "placed"),
        ("502134", 1): ("21755", 18, Decimal("5.45"), "placed"),
    }
    assert rejects(report) == [
        (7, "Quantity", "-96", "negative quantity outside a cancellation"),
        (10, "Price", "-53594.36", "negative (-53594.36)"),
    ]


def test_online_retail_customers_and_products_are_placeholders(
    engine: Engine, settings: Settings
) -> None:
    run(engine, settings, "orders", EXPORTS / "online_retail.csv", "online-retail")

    assert keys(engine, Customer) == {
        "13085": "order",
        "16321": "order",
        "13078": "order",
    }
    assert_placeholder(
        customer(engine, "16321"),
        country="Australia",
        email=None,
        created_at=datetime(2009, 12, 1, 10, 33),
    )
    assert product(engine, "22041")["title"] == 'RECORD FRAME 7" SINGLE SIZE'
    assert product(engine, "22349")["title"] == "DOG BOWL , CHASING BALL DESIGN"
    assert "21733" not in keys(engine, Product)  # only on the rejected row

    # Guest invoices stay in the store for popularity, outside customer history.
    everyone = queries.order_lines(engine)
    known = queries.order_lines(engine, include_guests=False)
    assert len(everyone) == 9
    assert sorted(
        set(everyone["order_external_id"]) - set(known["order_external_id"])
    ) == ["489488"]


# -- Generic -----------------------------------------------------------------


def import_generic(engine: Engine, settings: Settings) -> dict[str, ImportReport]:
    """Import the generic set in the order a shop would: catalog first."""
    kinds: tuple[Kind, ...] = ("customers", "products", "orders", "events")
    return {
        kind: run(engine, settings, kind, GENERIC / f"{kind}.csv", "generic")
        for kind in kinds
    }


def test_generic_customers(engine: Engine, settings: Settings) -> None:
    report = import_generic(engine, settings)["customers"]

    assert counts(report, "customers") == (6, 3, 0, 0, 3)
    alice = customer(engine, "C001")
    assert alice["email"] == "alice@example.com"
    assert alice["timezone"] == "Europe/London"
    assert alice["created_at"] == datetime(2023, 1, 15, 9, 30)
    assert alice["accepts_marketing"] is True
    assert alice["consent_source"] == "signup-form"
    assert alice["consent_at"] == datetime(2023, 1, 15, 9, 31)
    assert alice["favourite_categories"] == "kitchen;garden"
    assert alice["max_emails_per_week"] == 2
    assert alice["first_name"] == "Alice"  # the duplicate row 6 changed nothing

    bob = customer(engine, "C002")
    assert bob["email"] == "Bob@example.com"  # only the domain is lower-cased
    assert bob["created_at"] == datetime(2023, 7, 1, 8, 0)  # +02:00 offset
    assert bob["accepts_marketing"] is False
    carla = customer(engine, "C003")
    assert carla["created_at"] == datetime(2023, 7, 1, 9, 0)  # naive, summer
    assert carla["consent_source"] == "import:generic"
    assert carla["unsubscribed_at"] == datetime(2024, 2, 1, 12, 0)

    assert rejects(report) == [
        (4, "email", "not-an-email", "not an e-mail address"),
        (5, "timezone", "Mars/Olympus", "not an IANA time zone"),
        (6, "customer_id", "C001", "duplicate customer_id (first on row 1)"),
    ]


def test_generic_products(engine: Engine, settings: Settings) -> None:
    report = import_generic(engine, settings)["products"]

    assert counts(report, "products") == (6, 3, 0, 0, 3)
    board = product(engine, "P001")
    assert board["price"] == Decimal("45.00")
    assert board["product_url"] == "https://demo-shop.example/products/walnut-board"
    assert board["image_url"] == "https://cdn.example.com/p001.jpg"
    assert board["created_at"] == datetime(2023, 2, 1, 0, 0)
    apron = product(engine, "P002")
    assert apron["price"] == Decimal("19.99")  # "19,99": a lone decimal comma
    assert apron["currency"] == "GBP"  # the shop's currency fills a blank
    assert apron["in_stock"] is False
    assert apron["created_at"] == datetime(2023, 6, 15, 11, 0)
    tray = product(engine, "P003")
    assert tray["price"] == Decimal("3.333")
    assert tray["in_stock"] is True
    assert tray["created_at"] is None

    assert rejects(report) == [
        (4, "price", "twelve", "not a number"),
        (
            5,
            "image_url",
            "ftp://files.example.com/kneeler.jpg",
            "not an absolute http(s) URL",
        ),
        (6, "price", "-1.00", "negative (-1.00)"),
    ]


def test_generic_orders(engine: Engine, settings: Settings) -> None:
    report = import_generic(engine, settings)["orders"]

    assert counts(report, "orders") == (11, 5, 0, 0, 6)
    assert counts(report, "invoices") == (4, 4, 0, 0, 0)
    assert counts(report, "customers") == (3, 1, 0, 2, 0)
    assert counts(report, "products") == (4, 1, 0, 3, 0)
    assert orders(engine) == {
        "O1001": ("C001", datetime(2023, 3, 10, 14, 0), "GBP", "placed"),
        "O1002": ("C002", datetime(2023, 7, 2, 17, 30), "GBP", "placed"),
        "O1003": ("C009", datetime(2023, 8, 5, 8, 15), "EUR", "returned"),
        "O1004": (None, datetime(2023, 8, 6, 9, 0), "GBP", "cancelled"),
    }
    assert lines(engine) == {
        ("O1001", 1): ("P001", 1, Decimal("45.00"), "placed"),
        ("O1001", 2): ("P002", 2, Decimal("19.99"), "placed"),
        ("O1002", 1): ("P003", 4, Decimal("3.333"), "placed"),
        ("O1003", 1): ("P777", 1, Decimal("12.50"), "returned"),
        ("O1004", 1): ("P001", 1, Decimal("42.00"), "cancelled"),
    }
    assert_placeholder(
        customer(engine, "C009"),
        email="newbie@example.com",
        country="FR",
        created_at=datetime(2023, 8, 5, 8, 15),
    )
    kneeler = product(engine, "P777")
    assert (kneeler["source"], kneeler["title"]) == ("order", "Garden Kneeler")
    assert (kneeler["price"], kneeler["currency"]) == (Decimal("12.50"), "EUR")
    # A catalog product named by an order keeps its catalog values.
    assert product(engine, "P001")["price"] == Decimal("45.00")
    assert product(engine, "P001")["source"] == "catalog"

    assert rejects(report) == [
        (6, "ordered_at", "2023-13-45 10:00:00", "not a date or time"),
        (7, "quantity", "0", "must be at least 1"),
        (8, "quantity", "-1", "negative quantity outside a cancellation"),
        (9, "unit_price", "", "missing"),
        (10, "status", "shipped", "not one of placed, cancelled, returned"),
        (11, "product_id", "", "missing"),
    ]


def test_generic_events(engine: Engine, settings: Settings) -> None:
    report = import_generic(engine, settings)["events"]

    assert counts(report, "events") == (8, 4, 0, 0, 4)
    assert events(engine) == [
        ("C001", "view", datetime(2023, 3, 9, 20, 0), "P001", None),
        ("C001", "add_to_cart", datetime(2023, 3, 9, 20, 5), "P001", None),
        ("C002", "search", datetime(2023, 7, 2, 17, 0), None, "seed tray"),
        ("C010", "view", datetime(2023, 8, 1, 7, 0), "P888", None),
    ]
    assert_placeholder(customer(engine, "C010"), created_at=datetime(2023, 8, 1, 7))
    assert product(engine, "P888")["source"] == "order"
    assert rejects(report) == [
        (5, "event_type", "purchase", "not one of view, add_to_cart, search"),
        (6, "product_id", "", "missing (a view or add_to_cart names a product)"),
        (7, "occurred_at", "not-a-date", "not a date or time"),
        (8, "event_id", "ev-0004", "duplicate event_id (first on row 4)"),
    ]
