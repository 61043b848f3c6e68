"""Builders shared by the campaign tests: campaigns, audiences, recommenders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from nudge.campaigns.audience import audience_frame
from nudge.campaigns.schema import Campaign, Recipe

AS_OF = datetime(2026, 11, 30)  # a Monday, midnight UTC
REASON = ("best_seller", "One of our best sellers")
ITEM_COLUMNS = [
    "customer_id",
    "rank",
    "product_id",
    "score",
    "strategy",
    "reason_code",
    "reason",
]


def campaign(name: str = "winback", **changes: Any) -> Campaign:
    """Return a valid campaign, with fields replaced by the changes."""
    fields: dict[str, Any] = {
        "name": name,
        "description": "A test campaign.",
        "trigger": {"schedule": "0 10 * * mon"},
        "audience": "orders >= 0",
        "recommend": {"strategy": "best_sellers", "count": 4},
        "template": "winback",
        "variants": [{"name": "a", "subject": "Hello"}],
        "value": {"response_rate": 0.05, "order_value": 40},
        "quiet_hours": "",
        "holdout": 0.0,
    }
    fields.update(changes)
    return Campaign.model_validate(fields)


def customers(count: int, **columns: Any) -> pd.DataFrame:
    """Return an audience frame of mailable customers 1..count, all prospects."""
    ids = np.arange(1, count + 1)
    base = pd.DataFrame(
        {
            "id": ids,
            "external_id": [f"C{i:05d}" for i in ids],
            "country": "GB",
            "timezone": "Europe/London",
            "accepts_marketing": True,
            "unsubscribed_at": None,
            "favourite_categories": "",
            "max_emails_per_week": np.nan,
            "has_email": True,
        }
    )
    for name, value in columns.items():
        base[name] = value
    profiles = pd.DataFrame({"customer_id": pd.Series([], dtype=np.int64)})
    frame = audience_frame(profiles, base, AS_OF)
    frame["avg_order_value"] = 40.0
    return frame


def recommend_all(
    count: int = 4, short: frozenset[int] = frozenset(), strategy: str | None = None
) -> Any:
    """Return a recommend callable: `count` products each, 1 for the `short` ids.

    With ``strategy``, only that strategy's lists are short.
    """
    calls: list[tuple[list[int], str]] = []

    def recommend(ids: Any, recipe: Recipe) -> pd.DataFrame:
        calls.append(([int(i) for i in ids], recipe.strategy))
        rows = []
        for customer_id in ids:
            cut = strategy in (None, recipe.strategy) and int(customer_id) in short
            n = 1 if cut else count
            for rank in range(1, n + 1):
                rows.append(
                    (customer_id, rank, 100 + rank, 1 / rank, recipe.strategy, *REASON)
                )
        return pd.DataFrame(rows, columns=ITEM_COLUMNS)

    recommend.calls = calls  # type: ignore[attr-defined]
    return recommend
