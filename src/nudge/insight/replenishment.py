"""Replenishment timing: how long customers wait before buying the same item again.

A *repeat gap* is the number of days between two consecutive days on which the
same customer bought the same product (placed lines with a positive quantity,
before ``as_of``; several purchases on one day count once). A product with at
least ``replenishment_min_gaps`` repeat gaps gets its own estimate; one with
fewer borrows the pooled gaps of its category, when the category has enough;
otherwise it gets none. Only products bought before ``as_of`` are listed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from nudge.insight.config import InsightConfig
from nudge.insight.profiles import epoch_days, naive_utc

REPLENISHMENT_COLUMNS: tuple[str, ...] = (
    "product_id",
    "as_of",
    "level",
    "category",
    "median_gap_days",
    "gap_p25_days",
    "gap_p75_days",
    "repeat_gaps",
    "repeat_customers",
)


def bought_days(lines: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Return the distinct (customer_id, product_id, day) purchases before as_of.

    Rows come grouped by customer and product, each group's days ascending.
    """
    keep = (
        lines["customer_id"].notna()
        & (lines["ordered_at"] < naive_utc(as_of))
        & (lines["quantity"] > 0)
    )
    if "status" in lines.columns:
        keep &= lines["status"].eq("placed")
    customer, customers = pd.factorize(lines.loc[keep, "customer_id"])
    product, products = pd.factorize(lines.loc[keep, "product_id"])
    day = np.asarray(epoch_days(lines.loc[keep, "ordered_at"]), dtype=np.int64)
    if len(day) == 0:
        return pd.DataFrame({"customer_id": [], "product_id": [], "day": []})

    # One integer per (customer, product, day): a single sort then dedupes and
    # orders them, far faster than sorting three columns.
    first = int(day.min())
    span = int(day.max()) - first + 1
    if len(customers) * len(products) * span >= 2**62:
        return _bought_days_slowly(customers[customer], products[product], day)
    key = (customer.astype(np.int64) * len(products) + product) * span + (day - first)
    key.sort()
    key = key[np.r_[True, key[1:] != key[:-1]]]
    pair, offset = np.divmod(key, span)
    owner, item = np.divmod(pair, len(products))
    return pd.DataFrame(
        {
            "customer_id": customers[owner],
            "product_id": products[item],
            "day": offset + first,
        }
    )


def _bought_days_slowly(
    customer: Any, product: Any, day: npt.NDArray[np.int64]
) -> pd.DataFrame:
    """Dedupe and sort purchases column by column, for ids too many to pack."""
    frame = pd.DataFrame({"customer_id": customer, "product_id": product, "day": day})
    return frame.drop_duplicates().sort_values(
        ["customer_id", "product_id", "day"], ignore_index=True
    )


def repeat_gaps(days: pd.DataFrame) -> pd.DataFrame:
    """Return one row per repeat gap: customer_id, product_id, gap_days."""
    customer = days["customer_id"].to_numpy()
    product = days["product_id"].to_numpy()
    day = days["day"].to_numpy(np.int64)
    same = (customer[1:] == customer[:-1]) & (product[1:] == product[:-1])
    return pd.DataFrame(
        {
            "customer_id": customer[1:][same],
            "product_id": product[1:][same],
            "gap_days": (day[1:] - day[:-1])[same].astype(np.float64),
        }
    )


def replenishment(
    lines: pd.DataFrame,
    products: pd.DataFrame | None,
    as_of: datetime,
    config: InsightConfig | None = None,
) -> pd.DataFrame:
    """Return the typical repeat gap of every product bought before ``as_of``.

    Columns: ``REPLENISHMENT_COLUMNS``; ``level`` says whether the figures are
    the product's own ("product") or its category's ("category").
    """
    config = config or InsightConfig()
    days = bought_days(lines, as_of)
    gaps = repeat_gaps(days)
    bought = pd.Index(days["product_id"].unique(), name="product_id")
    category = _categories(products, bought)

    # The product's own figures where it has enough gaps.
    own = _gap_stats(gaps, "product_id").reindex(bought)
    enough = own["repeat_gaps"].fillna(0) >= config.replenishment_min_gaps
    table = own[enough].assign(level="product")

    # Its category's pooled figures where it has not.
    gaps["category"] = category.reindex(gaps["product_id"]).to_numpy()
    pooled = _gap_stats(gaps[gaps["category"].notna()], "category")
    pooled = pooled[pooled["repeat_gaps"] >= config.replenishment_min_gaps]
    borrowing = bought[~enough.to_numpy()]
    borrowed = pooled.reindex(category.reindex(borrowing)).set_axis(borrowing)
    borrowed = borrowed[borrowed["repeat_gaps"].notna()].assign(level="category")

    table = pd.concat([table, borrowed]).sort_index()
    table["category"] = category.reindex(table.index).to_numpy()
    table["as_of"] = naive_utc(as_of)
    table["repeat_gaps"] = table["repeat_gaps"].astype(np.int64)
    table["repeat_customers"] = table["repeat_customers"].astype(np.int64)
    return table.rename_axis("product_id").reset_index()[list(REPLENISHMENT_COLUMNS)]


def buy_again_due(
    lines: pd.DataFrame, table: pd.DataFrame, as_of: datetime
) -> pd.DataFrame:
    """Return when each customer is due to re-buy each product they bought.

    Columns: customer_id, product_id, last_bought_at (the day, UTC),
    median_gap_days, level and due_at (last day + the median gap), for the
    products ``table`` (from ``replenishment``) has an estimate for.
    """
    days = bought_days(lines, as_of)
    grouped = days.groupby(["customer_id", "product_id"], sort=False)
    last = grouped["day"].max().reset_index()
    figures = table.set_index("product_id")[["median_gap_days", "level"]]
    due = last.join(figures, on="product_id", how="inner")

    start = due["day"].to_numpy(np.int64).astype("datetime64[D]")
    due["last_bought_at"] = start.astype("datetime64[us]")
    offset = np.round(due["median_gap_days"].to_numpy() * 86_400).astype(np.int64)
    due["due_at"] = due["last_bought_at"] + pd.to_timedelta(offset, unit="s")
    columns = ["customer_id", "product_id", "last_bought_at", "median_gap_days"]
    return pd.DataFrame(due[[*columns, "level", "due_at"]].reset_index(drop=True))


def _gap_stats(gaps: pd.DataFrame, by: str) -> pd.DataFrame:
    """Return median, quartiles and counts of repeat gaps per product or category."""
    grouped = gaps.groupby(by)
    stats = pd.DataFrame(
        {
            "median_gap_days": grouped["gap_days"].median(),
            "gap_p25_days": grouped["gap_days"].quantile(0.25),
            "gap_p75_days": grouped["gap_days"].quantile(0.75),
            "repeat_gaps": grouped.size(),
            "repeat_customers": grouped["customer_id"].nunique(),
        }
    )
    return stats.astype(np.float64)


def _categories(products: pd.DataFrame | None, bought: pd.Index) -> pd.Series:
    """Return the category of each bought product (None where unknown)."""
    if products is None or products.empty or "category" not in products.columns:
        return pd.Series(None, index=bought, dtype=object)
    category = products.set_index("id")["category"]
    category = category.where(category.notna() & (category != ""), None)
    return category.reindex(bought).astype(object)
