"""Store the orders an ESP reports (Klaviyo's "Placed Order") in the shop's tables.

An ESP module turns each payload into a `PlacedOrder`; `save` stores the ones
not stored yet (an order's external id is unique, whoever stored it first: a
re-read or an order already imported is left as it is), with one line per item
whose product the catalog knows by its id or an alias. Orders of customers the
store does not know, and orders left without a known product, are skipped and
counted. No raw payload is kept: attribution and training read these tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from nudge.feedback.events import PullReport
from nudge.feedback.store import insert_ignore
from nudge.store.models import Customer, Order, OrderLine, Product, ProductAlias

CHUNK = 500
ID_LENGTH = 128  # the width of an external id or an alias


@dataclass(frozen=True, slots=True)
class Item:
    """One item of an order; `refs` are the ids to try for its product, in order."""

    refs: tuple[str, ...]
    quantity: int
    unit_price: Decimal


@dataclass(slots=True)
class PlacedOrder:
    """One order as an ESP reported it, before its customer and products are found.

    ``customer_ref`` is the shop's customer id (a nudge customer's
    ``external_id``), tried before ``email``.
    """

    external_id: str
    ordered_at: datetime
    currency: str
    items: list[Item] = field(default_factory=list)
    customer_ref: str | None = None
    email: str | None = None


def save(
    engine: Engine, orders: Iterable[PlacedOrder], report: PullReport, *, now: datetime
) -> int:
    """Store the orders not stored yet with their known lines; return how many."""
    unique: dict[str, PlacedOrder] = {}
    for order in orders:
        if order.external_id in unique:
            report.duplicates += 1
        else:
            unique[order.external_id] = order
    if not unique:
        return 0

    with engine.begin() as conn:
        known = _order_ids(conn, list(unique))
        report.duplicates += len(known)
        fresh = [o for key, o in unique.items() if key not in known]
        customers = _customers(conn, fresh)
        refs = {ref for order in fresh for item in order.items for ref in item.refs}
        products = _products(conn, refs)

        # Each order keeps the items whose product is known, numbered from one.
        kept: list[tuple[PlacedOrder, int, list[tuple[int, Item]]]] = []
        for order, customer in zip(fresh, customers, strict=True):
            if customer is None:
                report.skip("order_unknown_customer")
                continue
            lines = []
            for item in order.items:
                product = next((products[r] for r in item.refs if r in products), None)
                if product is None:
                    report.skip("order_unknown_product")
                else:
                    lines.append((product, item))
            if not lines:
                report.skip("order_without_known_products")
                continue
            kept.append((order, customer, lines))
        if not kept:
            return 0

        heads = [
            {
                "external_id": order.external_id,
                "customer_id": customer,
                "ordered_at": order.ordered_at,
                "currency": order.currency,
                "status": "placed",
                "updated_at": now,
            }
            for order, customer, _ in kept
        ]
        insert_ignore(conn, Order, heads, ["external_id"])
        ids = _order_ids(conn, [order.external_id for order, _, _ in kept])
        rows = [
            {
                "order_id": ids[order.external_id],
                "line_no": n,
                "product_id": product,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
                "status": "placed",
            }
            for order, _, lines in kept
            for n, (product, item) in enumerate(lines, start=1)
        ]
        insert_ignore(conn, OrderLine, rows, ["order_id", "line_no"])
    return len(kept)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _order_ids(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for part in _chunks(sorted(set(keys))):
        query = select(Order.external_id, Order.id).where(Order.external_id.in_(part))
        found.update({key: row_id for key, row_id in conn.execute(query)})
    return found


def _customers(conn: Connection, orders: Sequence[PlacedOrder]) -> list[int | None]:
    """Return each order's customer: by the shop's id, else by e-mail address."""
    refs = sorted({o.customer_ref for o in orders if o.customer_ref})
    by_ref: dict[str, int] = {}
    for part in _chunks(refs):
        by_id = select(Customer.external_id, Customer.id).where(
            Customer.external_id.in_(part)
        )
        by_ref.update({ref: customer for ref, customer in conn.execute(by_id)})

    # Only the orders no shop id matched are looked up by address.
    emails = {
        o.email.strip()
        for o in orders
        if o.email and o.email.strip() and (o.customer_ref or "") not in by_ref
    }
    by_email: dict[str, int] = {}
    for part in _chunks(sorted(emails | {e.lower() for e in emails})):
        query = select(Customer.email, Customer.id).where(Customer.email.in_(part))
        _note_emails(by_email, conn.execute(query))
    # Addresses stored in another case cost a scan; only the few missed pay it.
    for part in _chunks(sorted({e.lower() for e in emails} - by_email.keys())):
        query = select(Customer.email, Customer.id).where(
            func.lower(Customer.email).in_(part)
        )
        _note_emails(by_email, conn.execute(query))

    found: list[int | None] = []
    for order in orders:
        customer = by_ref.get(order.customer_ref or "")
        if customer is None and order.email:
            customer = by_email.get(order.email.strip().lower())
        found.append(customer)
    return found


def _note_emails(by_email: dict[str, int], rows: Iterable[Any]) -> None:
    for email, customer in rows:
        lowered = str(email).lower()
        by_email[lowered] = min(customer, by_email.get(lowered, customer))


def _products(conn: Connection, refs: set[str]) -> dict[str, int]:
    """Return the product each id names, as a catalog id or else as an alias."""
    found: dict[str, int] = {}
    for part in _chunks(sorted(refs)):
        query = select(Product.external_id, Product.id).where(
            Product.external_id.in_(part)
        )
        found.update({ref: product for ref, product in conn.execute(query)})
    for part in _chunks(sorted(refs - found.keys())):
        query = select(ProductAlias.alias, ProductAlias.product_id).where(
            ProductAlias.alias.in_(part)
        )
        found.update({ref: product for ref, product in conn.execute(query)})
    return found
