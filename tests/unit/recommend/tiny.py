"""A hand-made shop small enough to reason about every list by hand."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from nudge.recommend import Interactions, build_interactions

AS_OF = datetime(2024, 6, 1)
LONG_AGO = datetime(2023, 1, 1)

# id, external id, title, category, brand, price, image, in stock, days old
PRODUCTS: list[tuple[int, str, str, str, str, float, bool, bool | None, int]] = [
    (1, "A1", "BLUE MUG", "Kitchen", "Oak", 10.0, True, True, 500),
    (2, "A2", "Oak Bowl", "Kitchen", "Oak", 20.0, True, True, 500),
    (3, "A3", "Fig Candle", "Candles", "Wick", 15.0, True, False, 500),
    (4, "A4", "Tealight Set", "Candles", "Wick", 5.0, False, True, 500),
    (5, "A5", "Chopping Board", "Kitchen", "Maple", 50.0, True, True, 500),
    (6, "A6", "Tea Towel", "Kitchen", "Maple", 8.0, True, True, 500),
    (7, "A7", "Reed Diffuser", "Candles", "Hearth", 30.0, True, True, 5),
    (8, "A8", "Wooden Spoon", "Kitchen", "Oak", 3.0, True, True, 500),
]

# customer, order, days before AS_OF, product ids
ORDERS: list[tuple[int, int, float, tuple[int, ...]]] = [
    (1, 1, 90, (1, 2)),
    (1, 2, 60, (1, 3)),
    (1, 3, 30, (1, 5)),
    (2, 4, 50, (2, 3, 4)),
    (2, 5, 10, (2, 6)),
    (3, 6, 40, (1, 2, 3)),
    (3, 7, 20, (3, 4)),
    (4, 8, 15, (1,)),
    (5, 9, 12, (1, 2, 3, 4, 5, 6, 7, 8)),
    (6, 10, 3, (7,)),
]


def tiny_frames(
    *, images: bool = True, stock: bool = True, orders: list[Any] | None = None
) -> dict[str, pd.DataFrame]:
    """Return the tiny shop as store frames."""
    rows = []
    for customer, order, days, products in orders or ORDERS:
        for line, product in enumerate(products):
            rows.append(
                {
                    "order_id": order,
                    "customer_id": customer,
                    "customer_external_id": f"C{customer}",
                    "ordered_at": AS_OF - timedelta(days=days),
                    "product_id": product,
                    "product_external_id": f"A{product}",
                    "quantity": 1 + line,
                    "unit_price": 1.0,
                    "status": "placed",
                }
            )
    lines = pd.DataFrame(rows)
    products = pd.DataFrame(
        {
            "id": [p[0] for p in PRODUCTS],
            "external_id": [p[1] for p in PRODUCTS],
            "title": [p[2] for p in PRODUCTS],
            "description": [f"a {p[2].lower()} for the home" for p in PRODUCTS],
            "category": [p[3] for p in PRODUCTS],
            "brand": [p[4] for p in PRODUCTS],
            "price": [p[5] for p in PRODUCTS],
            "image_url": [
                f"https://shop.example/{p[1]}.jpg" if p[6] and images else None
                for p in PRODUCTS
            ],
            "product_url": [f"https://shop.example/{p[1]}" for p in PRODUCTS],
            "in_stock": [p[7] if stock else None for p in PRODUCTS],
            "created_at": [AS_OF - timedelta(days=p[8]) for p in PRODUCTS],
        }
    )
    return {"lines": lines, "products": products}


def tiny_data(**options: Any) -> Interactions:
    """Return the tiny shop's interactions as of AS_OF."""
    frames = tiny_frames(**options)
    return build_interactions(frames["lines"], frames["products"], AS_OF)
