"""Read the store into data frames "as of" a moment, with nothing from after it.

Higher layers (insight, recommend) work on frames; these functions are the only
place that knows how the tables join. `as_of` is exclusive: an order placed at
exactly that moment is not part of the past yet.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, Executable, Float, cast, select

from nudge.store.models import BehaviourEvent, Customer, Order, OrderLine, Product


def _frame(engine: Engine, statement: Executable) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(statement)
        names = list(result.keys())
        # Columns built from plain tuples: pandas probes each Row object for
        # attributes otherwise, which costs more than the query.
        columns = list(zip(*(tuple(row) for row in result), strict=True))
        if not columns:
            return pd.DataFrame({name: [] for name in names})
        return pd.DataFrame(dict(zip(names, columns, strict=True)))


def order_lines(
    engine: Engine, as_of: datetime | None = None, *, include_guests: bool = True
) -> pd.DataFrame:
    """Return one row per order line placed before `as_of`.

    Columns: order_id, order_external_id, customer_id (None for guests),
    customer_external_id, ordered_at, product_id, product_external_id,
    quantity, unit_price (a float: analytics need no exact cents), status
    (placed, cancelled or returned).
    """
    statement = (
        select(
            Order.id.label("order_id"),
            Order.external_id.label("order_external_id"),
            Order.customer_id,
            Customer.external_id.label("customer_external_id"),
            Order.ordered_at,
            OrderLine.product_id,
            Product.external_id.label("product_external_id"),
            OrderLine.quantity,
            cast(OrderLine.unit_price, Float).label("unit_price"),
            OrderLine.status,
        )
        .join(OrderLine, OrderLine.order_id == Order.id)
        .join(Product, Product.id == OrderLine.product_id)
        .outerjoin(Customer, Customer.id == Order.customer_id)
        .order_by(Order.ordered_at, Order.id, OrderLine.line_no)
    )
    if as_of is not None:
        statement = statement.where(Order.ordered_at < as_of)
    if not include_guests:
        statement = statement.where(Order.customer_id.is_not(None))
    return _frame(engine, statement)


def customers(engine: Engine, as_of: datetime | None = None) -> pd.DataFrame:
    """Return the customers known before `as_of`, with consent as it stood then.

    A customer without a creation time counts as known. Consent given after
    `as_of` reads as not given, and an unsubscribe after it as not happened.
    """
    statement = select(
        Customer.id,
        Customer.external_id,
        Customer.country,
        Customer.timezone,
        Customer.created_at,
        Customer.accepts_marketing,
        Customer.consent_at,
        Customer.unsubscribed_at,
        Customer.favourite_categories,
        Customer.max_emails_per_week,
        Customer.source,
    )
    if as_of is not None:
        statement = statement.where(
            Customer.created_at.is_(None) | (Customer.created_at < as_of)
        )
    frame = _frame(engine, statement)
    if as_of is not None and not frame.empty:
        later_consent = frame["consent_at"].notna() & (frame["consent_at"] >= as_of)
        frame.loc[later_consent, "accepts_marketing"] = False
        later_unsub = frame["unsubscribed_at"].notna() & (
            frame["unsubscribed_at"] >= as_of
        )
        frame.loc[later_unsub, "unsubscribed_at"] = None
    return frame


def products(engine: Engine, as_of: datetime | None = None) -> pd.DataFrame:
    """Return the catalog as known before `as_of` (products created after it omitted).

    Price and stock are the current values: the store keeps no price history.
    """
    statement = select(
        Product.id,
        Product.external_id,
        Product.title,
        Product.description,
        Product.category,
        Product.brand,
        Product.price,
        Product.currency,
        Product.image_url,
        Product.product_url,
        Product.in_stock,
        Product.created_at,
        Product.source,
    )
    if as_of is not None:
        statement = statement.where(
            Product.created_at.is_(None) | (Product.created_at < as_of)
        )
    return _frame(engine, statement)


def behaviour_events(engine: Engine, as_of: datetime | None = None) -> pd.DataFrame:
    """Return views, add-to-carts and searches that happened before `as_of`."""
    statement = select(
        BehaviourEvent.customer_id,
        BehaviourEvent.product_id,
        BehaviourEvent.event_type,
        BehaviourEvent.occurred_at,
        BehaviourEvent.query,
    ).order_by(BehaviourEvent.occurred_at, BehaviourEvent.id)
    if as_of is not None:
        statement = statement.where(BehaviourEvent.occurred_at < as_of)
    return _frame(engine, statement)
