"""Shared fixtures: a small synthetic shop as the store's query frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from nudge.demo.synth import SyntheticShop, generate_shop

END = datetime(2026, 11, 30)
# Fitted on the first 170 of 200 days; the last 30 are the "future".
AS_OF = END - timedelta(days=30)


def _times(text: pd.Series) -> pd.Series:
    """Turn ISO UTC strings into naive UTC times, as the store returns them."""
    stamps = pd.to_datetime(text.replace("", None), utc=True)
    return stamps.dt.tz_localize(None)


def store_frames(shop: SyntheticShop) -> dict[str, pd.DataFrame]:
    """Return the shop as `nudge.store.queries` would (integer store ids)."""
    customer_ids = {c: i + 1 for i, c in enumerate(shop.customers["customer_id"])}
    product_ids = {p: i + 1 for i, p in enumerate(shop.products["product_id"])}
    order_ids = {
        o: i + 1 for i, o in enumerate(shop.orders["order_id"].drop_duplicates())
    }
    orders = shop.orders
    lines = pd.DataFrame(
        {
            "order_id": orders["order_id"].map(order_ids).to_numpy(np.int64),
            "order_external_id": orders["order_id"],
            "customer_id": orders["customer_id"].map(customer_ids).to_numpy(np.int64),
            "customer_external_id": orders["customer_id"],
            "ordered_at": _times(orders["ordered_at"]),
            "product_id": orders["product_id"].map(product_ids).to_numpy(np.int64),
            "product_external_id": orders["product_id"],
            "quantity": orders["quantity"].astype(int),
            "unit_price": orders["unit_price"].astype(float),
            "status": orders["status"],
        }
    )
    catalog = shop.products
    products = pd.DataFrame(
        {
            "id": catalog["product_id"].map(product_ids).to_numpy(np.int64),
            "external_id": catalog["product_id"],
            "title": catalog["title"],
            "description": catalog["description"],
            "category": catalog["category"],
            "brand": catalog["brand"],
            "price": catalog["price"].astype(float),
            "currency": catalog["currency"],
            "image_url": catalog["image_url"].replace("", None),
            "product_url": catalog["product_url"].replace("", None),
            "in_stock": catalog["in_stock"].map({"true": True, "false": False}),
            "created_at": _times(catalog["created_at"]),
            "source": "catalog",
        }
    )
    events = shop.events[shop.events["product_id"] != ""]
    behaviour = pd.DataFrame(
        {
            "customer_id": events["customer_id"].map(customer_ids).to_numpy(np.int64),
            "product_id": events["product_id"].map(product_ids).to_numpy(np.int64),
            "event_type": events["event_type"],
            "occurred_at": _times(events["occurred_at"]),
            "query": None,
        }
    )
    customers = pd.DataFrame(
        {"id": list(customer_ids.values()), "external_id": list(customer_ids)}
    )
    return {
        "lines": lines,
        "products": products,
        "events": behaviour,
        "customers": customers,
    }


@pytest.fixture(scope="session")
def shop() -> SyntheticShop:
    """A small seeded shop: 300 customers, 60 products, 200 days."""
    return generate_shop(
        seed=11, customers=300, products=60, days=200, end=END.replace(tzinfo=UTC)
    )


@pytest.fixture(scope="session")
def frames(shop: SyntheticShop) -> dict[str, pd.DataFrame]:
    """The small shop as store frames."""
    return store_frames(shop)
