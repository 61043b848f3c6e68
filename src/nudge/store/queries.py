"""Read the store into data frames "as of" a moment, with nothing from after it.

Higher layers (insight, recommend) work on frames; these functions are the only
place that knows how the tables join. `as_of` is exclusive: an order placed at
exactly that moment is not part of the past yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

import pandas as pd
from sqlalchemy import Engine, Executable, Float, Table, cast, inspect, select

from nudge.store.feedback_models import EngagementEvent
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


def email_signals(
    engine: Engine,
    as_of: datetime,
    *,
    click_weight: float,
    order_weight: float,
    window_days: float = 5.0,
) -> pd.DataFrame:
    """Return what e-mails taught about tastes before ``as_of``, as weighted signals.

    Columns customer_id, product_id, occurred_at and weight: one row per
    e-mail click on a product's page (``click_weight``), and one per product
    ordered within ``window_days`` after such a click (``order_weight``, on
    top of the purchase itself). A click is matched to a product by the path
    of its link; clicks on other pages teach nothing.
    """
    columns = ["customer_id", "product_id", "occurred_at", "weight"]
    if not inspect(engine).has_table("engagement_events"):
        return pd.DataFrame(columns=columns)
    events: Table = EngagementEvent.__table__  # type: ignore[assignment]
    clicks = _frame(
        engine,
        select(events.c.customer_id, events.c.url, events.c.occurred_at).where(
            events.c.kind == "click",
            events.c.customer_id.is_not(None),
            events.c.url.is_not(None),
            events.c.occurred_at < as_of,
        ),
    )
    if clicks.empty:
        return pd.DataFrame(columns=columns)
    by_path = {path: pid for pid, path in product_pages(engine).items()}
    clicks["product_id"] = [by_path.get(page_path(url)) for url in clicks["url"]]
    clicks = clicks.dropna(subset=["product_id"])
    found = clicks[["customer_id", "product_id", "occurred_at"]].assign(
        weight=click_weight
    )

    # Products bought soon after an e-mail click: the e-mail's own orders.
    lines = order_lines(engine, as_of, include_guests=False)
    lines = lines[lines["customer_id"].isin(set(clicks["customer_id"]))]
    if len(lines):
        # Each line's latest click of the same customer, if within the window.
        timed = lines.assign(ordered_at=pd.to_datetime(lines["ordered_at"]))
        touched = clicks.assign(clicked_at=pd.to_datetime(clicks["occurred_at"]))
        matched = pd.merge_asof(
            timed.sort_values("ordered_at"),
            touched[["customer_id", "clicked_at"]].sort_values("clicked_at"),
            left_on="ordered_at",
            right_on="clicked_at",
            by="customer_id",
            direction="backward",
            tolerance=pd.Timedelta(days=window_days),
        )
        driven = matched[matched["clicked_at"].notna()]
        found = pd.concat(
            [
                found,
                pd.DataFrame(
                    {
                        "customer_id": driven["customer_id"],
                        "product_id": driven["product_id"],
                        "occurred_at": driven["ordered_at"],
                        "weight": order_weight,
                    }
                ),
            ],
            ignore_index=True,
        )
    found["customer_id"] = found["customer_id"].astype("int64")
    found["product_id"] = found["product_id"].astype("int64")
    return found.reset_index(drop=True)


def page_path(url: str | None) -> str:
    """Return the path of a link, which names the page whatever its query."""
    return urlsplit(url or "").path.rstrip("/")


def product_pages(engine: Engine, ids: Iterable[int] | None = None) -> dict[int, str]:
    """Return each product's page path (its URL, else ``/products/<id>``)."""
    statement = select(Product.id, Product.external_id, Product.product_url)
    if ids is not None:
        statement = statement.where(Product.id.in_(list(ids)))
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return {
        int(pid): page_path(url if url else f"/products/{ext}")
        for pid, ext, url in rows
    }
