"""Replenishment timing of every (customer, product) pair bought before as_of.

A *repeat gap* is the number of days between two consecutive days on which
the same customer bought the same product. A pair's typical gap is the
customer's own mean gap when they bought it on three days or more; otherwise
the product's median gap over all customers (when it has at least
``min_gaps`` of them), else its category's, else unknown. A pair is *due*
once the days since its last purchase reach ``due_from`` times that gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nudge.recommend.interactions import FloatArray, IntArray, Interactions


@dataclass(frozen=True)
class Replenishment:
    """Per-pair timing, aligned with the entries of ``Interactions.bought``."""

    orders: FloatArray
    last_age: FloatArray
    gap: FloatArray
    recency: FloatArray

    def entries(self, data: Interactions, rows: IntArray, items: IntArray) -> IntArray:
        """Return each pair's entry in ``bought``, or -1 where it was never bought."""
        keys = data.bought_keys
        if len(keys) == 0:
            return np.full(len(rows), -1, dtype=np.int64)
        wanted = rows * data.n_items + items
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        return np.where((keys[found] == wanted) & (rows >= 0), found, -1)

    def due_ratio(
        self, data: Interactions, rows: IntArray, items: IntArray
    ) -> FloatArray:
        """Return days since the last purchase over the typical gap (NaN: unknown)."""
        entry = self.entries(data, rows, items)
        ratio = np.full(len(rows), np.nan)
        known = entry >= 0
        ratio[known] = self.last_age[entry[known]] / self.gap[entry[known]]
        return ratio


def replenishment(
    data: Interactions, *, min_gaps: int = 5, half_life_days: float | None = None
) -> Replenishment:
    """Measure the repeat gaps of every bought pair and their typical gap.

    ``recency`` sums 0.5 ** (age / half_life_days) over the pair's orders
    (the plain order count without a half-life).
    """
    log = data.purchases
    entry = _entry_of_purchase(data)
    n_entries = len(data.bought.data)

    # Orders and their recency-weighted count, per pair.
    orders = np.bincount(entry, minlength=n_entries).astype(np.float64)
    weights = (
        np.ones(len(log))
        if half_life_days is None
        else np.exp2(-log["age"].to_numpy() / half_life_days)
    )
    recency = np.bincount(entry, weights=weights, minlength=n_entries).astype(float)

    # Distinct purchase days, oldest first within each pair (the log's order).
    days = pd.DataFrame({"entry": entry, "day": np.floor(log["age"].to_numpy())})
    days = days.drop_duplicates(ignore_index=True)
    entries = days["entry"].to_numpy()
    ages = days["day"].to_numpy()
    last_age = _last_exact_age(entry, log, n_entries)

    # Repeat gaps, and the typical gap of each pair.
    same = entries[1:] == entries[:-1]
    gap_entry = entries[1:][same]
    gaps = (ages[:-1] - ages[1:])[same]
    gap = _typical_gaps(data, gap_entry, gaps, n_entries, min_gaps)
    return Replenishment(orders=orders, last_age=last_age, gap=gap, recency=recency)


def _entry_of_purchase(data: Interactions) -> IntArray:
    """Return, for each row of the purchase log, its entry in ``bought``."""
    log = data.purchases
    keys = log["row"].to_numpy(np.int64) * data.n_items + log["item"].to_numpy(np.int64)
    return np.asarray(np.searchsorted(data.bought_keys, keys), dtype=np.int64)


def _last_exact_age(entry: IntArray, log: pd.DataFrame, size: int) -> FloatArray:
    """Return the exact age (days, with fractions) of each pair's newest order."""
    newest = np.full(size, np.inf)
    np.minimum.at(newest, entry, log["age"].to_numpy())
    return newest


def _typical_gaps(
    data: Interactions,
    gap_entry: IntArray,
    gaps: FloatArray,
    n_entries: int,
    min_gaps: int,
) -> FloatArray:
    """Return each pair's typical gap: its own, its product's or its category's."""
    counts = np.bincount(gap_entry, minlength=n_entries)
    sums = np.bincount(gap_entry, weights=gaps, minlength=n_entries)
    own = np.where(counts >= 2, sums / np.maximum(counts, 1), np.nan)

    # The product's and the category's median gaps, where there are enough.
    item_of_entry = data.bought.indices.astype(np.int64)
    frame = pd.DataFrame({"item": item_of_entry[gap_entry], "gap": gaps})
    frame["category"] = data.category_codes[frame["item"].to_numpy()]
    by_item = _medians(frame, "item", min_gaps)
    by_category = _medians(frame[frame["category"] >= 0], "category", min_gaps)
    product_gap = np.full(data.n_items, np.nan)
    product_gap[by_item.index.to_numpy()] = by_item.to_numpy()
    category_gap = np.full(max(len(data.category_names), 1), np.nan)
    category_gap[by_category.index.to_numpy()] = by_category.to_numpy()
    codes = data.category_codes
    from_category = np.where(codes >= 0, category_gap[np.maximum(codes, 0)], np.nan)
    product_gap = np.where(np.isnan(product_gap), from_category, product_gap)

    # A gap of zero days (two orders on one day) says nothing about timing.
    typical = np.where(np.isnan(own), product_gap[item_of_entry], own)
    return np.where(typical >= 1.0, typical, np.nan)


def _medians(frame: pd.DataFrame, key: str, min_gaps: int) -> pd.Series:
    """Return the median gap of each key with at least ``min_gaps`` gaps."""
    grouped = frame.groupby(key)["gap"]
    stats = grouped.agg(["median", "size"])
    return stats.loc[stats["size"] >= min_gaps, "median"]
