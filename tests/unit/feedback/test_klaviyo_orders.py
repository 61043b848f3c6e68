"""Klaviyo's "Placed Order" events through the real SDK into the shop's orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from nudge.delivery.doubles import KlaviyoDouble
from nudge.feedback import klaviyo as feed
from nudge.feedback import service, store
from nudge.feedback.events import PullReport
from nudge.settings import Settings
from nudge.store.models import Order, OrderLine, Product, ProductAlias

from .conftest import FAST, NOW, SENT, Ledger, klaviyo_settings

PLACED, OPENED = "Placed Order", "Opened Email"


def at(minutes: float) -> datetime:
    """Return an aware time `minutes` after the sends went out."""
    return (SENT + timedelta(minutes=minutes)).replace(tzinfo=UTC)


def pull(engine: Engine, settings: Settings, **options: Any) -> PullReport:
    """Pull Klaviyo in pages of 10 as of NOW."""
    options.setdefault("now", NOW)
    return service.pull(
        engine, settings, "klaviyo", page_size=10, adapter_options=FAST, **options
    )


def item(ref: str, quantity: Any, price: Any, key: str = "ProductID") -> dict[str, Any]:
    """Return one entry of a Placed Order's ``Items``."""
    return {
        key: ref,
        "ProductName": f"name of {ref}",
        "Quantity": quantity,
        "ItemPrice": price,
    }


def product(engine: Engine, external_id: str, *aliases: str) -> int:
    """Store a catalog product with its aliases; return its id."""
    with engine.begin() as conn:
        product_id = conn.execute(
            insert(Product)
            .values(external_id=external_id, updated_at=NOW)
            .returning(Product.id)
        ).scalar_one()
        for alias in aliases:
            conn.execute(
                insert(ProductAlias).values(alias=alias, product_id=product_id)
            )
    return int(product_id)


def stored_orders(engine: Engine) -> list[tuple[Any, list[Any]]]:
    """Return each stored order, oldest first, with its lines in order."""
    with engine.connect() as conn:
        heads = conn.execute(
            select(Order.__table__).order_by(Order.ordered_at, Order.id)
        ).all()
        lines = conn.execute(
            select(OrderLine.__table__).order_by(OrderLine.order_id, OrderLine.line_no)
        ).all()
    return [
        (head, [line for line in lines if line.order_id == head.id]) for head in heads
    ]


@pytest.fixture
def configured(settings: Settings, klaviyo: KlaviyoDouble) -> Settings:
    """Settings pointing at the double, whose account tracks placed orders."""
    klaviyo.add_metric(OPENED)
    klaviyo.add_metric(PLACED)
    return klaviyo_settings(settings, klaviyo)


def test_placed_orders_on_two_pages_become_orders_with_their_lines(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ann = ledger.customer("ann@example.com")
    bob = ledger.customer("Bob@Example.com")
    ann_ref = ledger.customer_row(ann).external_id
    mug = product(engine, "P-MUG")
    tea = product(engine, "P-TEA", "SKU-TEA-250")
    # Ann is known to Klaviyo by the shop's id under another address; Bob by
    # his address in another case.
    for n in range(12):
        items = [item("P-MUG", n + 1, 9.5)]
        if n % 3 == 0:
            items.append(item("SKU-TEA-250", 2, "4.25", key="SKU"))
        properties: dict[str, Any] = {"Items": items, "$value": 9.5 * (n + 1)}
        if n < 11:
            properties["OrderId"] = f"#10{n:02d}"
        if n == 1:
            properties["Currency"] = "eur"
        who = (
            {"external_id": ann_ref, "email": "ann.old@example.com"}
            if n % 2 == 0
            else {"email": "bob@example.com"}
        )
        klaviyo.add_event(
            PLACED, at(10 + n), event_id=f"EV{n}", properties=properties, **who
        )

    report = pull(engine, configured)

    assert report.ok and report.skipped == {}
    assert report.streams["klaviyo metric:Placed Order"] == 12
    assert "klaviyo: 12 new orders from 'Placed Order'" in report.notes
    pages = [
        {k: v[0] for k, v in r.query.items()}
        for r in klaviyo.recorded("GET", r"^/api/events")
        if klaviyo.metrics[PLACED] in r.query["filter"][0]
    ]
    assert [p.get("page[cursor]") for p in pages] == [None, "c10"]
    found = stored_orders(engine)
    assert [o.external_id for o, _ in found] == [
        *(f"#10{n:02d}" for n in range(11)),
        "klaviyo-EV11",
    ]
    assert [o.customer_id for o, _ in found] == [ann, bob] * 6
    assert [o.ordered_at for o, _ in found] == [
        at(10 + n).replace(tzinfo=None) for n in range(12)
    ]
    assert {o.status for o, _ in found} == {"placed"}
    assert [o.currency for o, _ in found][:3] == ["GBP", "EUR", "GBP"]
    lines = found[0][1]
    assert [(x.line_no, x.product_id, x.quantity, x.unit_price) for x in lines] == [
        (1, mug, 1, Decimal("9.5")),
        (2, tea, 2, Decimal("4.25")),
    ]
    assert [(x.product_id, x.quantity) for x in found[7][1]] == [(mug, 8)]
    assert sum(len(lines) for _, lines in found) == 16
    mark = store.watermark(engine, "klaviyo", "metric:Placed Order")
    assert mark == at(21).replace(tzinfo=None)


def test_the_same_pull_again_stores_and_changes_nothing(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ann = ledger.customer("ann@example.com")
    product(engine, "P-MUG")
    # Imported from the shop before Klaviyo reported it: the import stands.
    with engine.begin() as conn:
        conn.execute(
            insert(Order).values(
                external_id="2000",
                customer_id=None,
                ordered_at=SENT,
                currency="USD",
                status="returned",
                updated_at=SENT,
            )
        )
    for n in range(3):
        klaviyo.add_event(
            PLACED,
            at(5 + n),
            email="ann@example.com",
            properties={"OrderId": 2000 + n, "Items": [item("P-MUG", 1, 3)]},
        )

    first = pull(engine, configured)
    before = stored_orders(engine)
    again = pull(engine, configured, now=NOW + timedelta(hours=1))

    assert "klaviyo: 2 new orders from 'Placed Order'" in first.notes
    assert first.duplicates == 1
    assert "klaviyo: 0 new orders from 'Placed Order'" in again.notes
    assert again.duplicates == 3 and again.ok
    assert stored_orders(engine) == before
    kept = {o.external_id: o for o, _ in before}
    assert (kept["2000"].status, kept["2000"].currency) == ("returned", "USD")
    assert kept["2000"].customer_id is None
    assert [kept[key].customer_id for key in ("2001", "2002")] == [ann, ann]


def test_unknown_customers_products_and_malformed_events_are_counted(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ann = ledger.customer("ann@example.com")
    mug = product(engine, "P-MUG")
    known = item("P-MUG", 2, 7)

    def placed(minutes: int, email: str | None, properties: Any) -> None:
        klaviyo.add_event(PLACED, at(minutes), email=email, properties=properties)

    placed(1, "nobody@example.com", {"OrderId": "A1", "Items": [known]})
    placed(2, "ann@example.com", {"OrderId": "A2", "Items": [known, item("X", 1, 5)]})
    placed(3, "ann@example.com", {"OrderId": "A3", "Items": [item("Y", 1, 5)]})
    placed(4, "ann@example.com", {"OrderId": "A4", "Items": "P-MUG"})
    bad_lines = [known, item("P-MUG", 0, 5), item("P-MUG", 1, "free"), "P-MUG", {}]
    placed(5, "ann@example.com", {"OrderId": "A5", "Items": bad_lines})
    malformed: Any = "not an object"
    klaviyo.add_event(PLACED, None, email="ann@example.com", attributes=malformed)
    klaviyo.add_event(
        PLACED, None, email="ann@example.com", attributes={"datetime": None}
    )

    report = pull(engine, configured)

    assert report.ok
    assert report.streams["klaviyo metric:Placed Order"] == 7
    assert report.skipped == {
        "order_unknown_customer": 1,
        "order_unknown_product": 2,
        "order_without_known_products": 1,
        "order_malformed": 3,
        "order_malformed_item": 4,
    }
    assert "klaviyo: 2 new orders from 'Placed Order'" in report.notes
    found = {
        o.external_id: (o.customer_id, lines) for o, lines in stored_orders(engine)
    }
    assert sorted(found) == ["A2", "A5"]
    for customer, lines in found.values():
        assert customer == ann
        assert [(x.product_id, x.quantity, x.unit_price) for x in lines] == [
            (mug, 2, Decimal("7"))
        ]


def test_an_account_without_placed_orders_is_pulled_with_a_note(
    engine: Engine, ledger: Ledger, settings: Settings, klaviyo: KlaviyoDouble
) -> None:
    ledger.customer("ann@example.com")
    klaviyo.add_event(OPENED, at(3), email="ann@example.com")

    report = pull(engine, klaviyo_settings(settings, klaviyo))

    assert report.ok and report.stored == {"open": 1}
    assert "klaviyo: no 'Placed Order' metric; no orders read" in report.notes
    assert "klaviyo: Placed Order" not in report.missing_metrics
    assert stored_orders(engine) == []
    assert store.watermark(engine, "klaviyo", "metric:Placed Order") is None


def test_an_event_names_its_order_by_either_key_or_by_its_own_id() -> None:
    report = PullReport()

    def order_of(properties: dict[str, Any]) -> str | None:
        resource = {
            "type": "event",
            "id": "EV9",
            "attributes": {
                "datetime": "2026-11-29T12:00:00+01:00",
                "event_properties": {"Items": [item("P", 1.0, 2)], **properties},
            },
        }
        found = feed.placed_order(resource, {}, report, "GBP")
        return found.external_id if found else None

    assert order_of({"OrderId": 5123}) == "5123"
    assert order_of({"order_id": " S-77 "}) == "S-77"
    assert order_of({"OrderId": True}) == "klaviyo-EV9"
    assert order_of({}) == "klaviyo-EV9"
    assert report.skipped == {}
