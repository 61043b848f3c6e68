"""Tests for replenishment timing per product, with the category fallback."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from nudge.insight.config import InsightConfig
from nudge.insight.replenishment import (
    REPLENISHMENT_COLUMNS,
    _bought_days_slowly,
    bought_days,
    buy_again_due,
    replenishment,
)
from tests.unit.insight.test_profiles import lines_frame, synthetic_frames

AS_OF = datetime(2024, 7, 1)
CONFIG = InsightConfig(replenishment_min_gaps=4)

LINES = [
    # pA: c1 every 10 then 20 days (two orders on 11 January count once),
    # c2 after 14 days, c3 after 30; a cancelled line and a later order don't count.
    ("1", "c1", "2024-01-01 09:00", "pA", 1, 5.0, "placed"),
    ("2", "c1", "2024-01-11 09:00", "pA", 1, 5.0, "placed"),
    ("3", "c1", "2024-01-11 19:00", "pA", 2, 5.0, "placed"),
    ("4", "c1", "2024-01-31 09:00", "pA", 1, 5.0, "placed"),
    ("5", "c2", "2024-02-01 09:00", "pA", 1, 5.0, "placed"),
    ("6", "c2", "2024-02-15 09:00", "pA", 1, 5.0, "placed"),
    ("7", "c3", "2024-03-01 09:00", "pA", 1, 5.0, "placed"),
    ("8", "c3", "2024-03-10 09:00", "pA", 1, 5.0, "cancelled"),
    ("9", "c3", "2024-03-31 09:00", "pA", 1, 5.0, "placed"),
    ("10", "c3", "2024-07-05 09:00", "pA", 1, 5.0, "placed"),
    # pB, same category: one gap of 60 days.
    ("11", "c1", "2024-01-01 09:00", "pB", 1, 9.0, "placed"),
    ("12", "c1", "2024-03-01 09:00", "pB", 1, 9.0, "placed"),
    # pC has no category and one gap; pD's category has no gaps at all.
    ("13", "c2", "2024-01-01 09:00", "pC", 1, 3.0, "placed"),
    ("14", "c2", "2024-01-08 09:00", "pC", 1, 3.0, "placed"),
    ("15", "c3", "2024-01-01 09:00", "pD", 1, 3.0, "placed"),
    # pE, same category as pA, bought once.
    ("16", "c4", "2024-05-01 09:00", "pE", 1, 3.0, "placed"),
    ("17", None, "2024-05-02 09:00", "pE", 1, 3.0, "placed"),
    ("18", None, "2024-05-09 09:00", "pE", 1, 3.0, "placed"),
]
PRODUCTS = pd.DataFrame(
    {
        "id": ["pA", "pB", "pC", "pD", "pE"],
        "category": ["Candles", "Candles", None, "Kitchen", "Candles"],
    }
)


@pytest.fixture
def table() -> pd.DataFrame:
    return replenishment(lines_frame(LINES), PRODUCTS, AS_OF, CONFIG).set_index(
        "product_id"
    )


def test_a_product_with_enough_repeats_gets_its_own_gap(table: pd.DataFrame) -> None:
    product = table.loc["pA"]

    # Gaps 10, 20, 14 and 30 days.
    assert product["level"] == "product"
    assert product["repeat_gaps"] == 4
    assert product["repeat_customers"] == 3
    assert product["median_gap_days"] == 17.0
    assert product["gap_p25_days"] == 13.0
    assert product["gap_p75_days"] == 22.5
    assert product["category"] == "Candles"


def test_a_product_with_few_repeats_borrows_its_category(table: pd.DataFrame) -> None:
    # Candles pool pA's gaps with pB's 60 days: 10, 14, 20, 30, 60.
    for product in ("pB", "pE"):
        row = table.loc[product]
        assert row["level"] == "category"
        assert row["median_gap_days"] == 20.0
        assert row["gap_p25_days"] == 14.0
        assert row["gap_p75_days"] == 30.0
        assert row["repeat_gaps"] == 5


def test_products_without_any_estimate_are_left_out(table: pd.DataFrame) -> None:
    assert sorted(table.index) == ["pA", "pB", "pE"]
    assert list(table.reset_index().columns) == list(REPLENISHMENT_COLUMNS)
    assert (table["as_of"] == pd.Timestamp(AS_OF)).all()


def test_no_catalog_means_product_level_only() -> None:
    table = replenishment(lines_frame(LINES), None, AS_OF, CONFIG)
    assert table["product_id"].tolist() == ["pA"]


def test_no_purchases_give_an_empty_table() -> None:
    empty = lines_frame(LINES).iloc[0:0]
    table = replenishment(empty, PRODUCTS, AS_OF, CONFIG)
    assert table.empty
    assert list(table.columns) == list(REPLENISHMENT_COLUMNS)


def test_buy_again_is_due_a_typical_gap_after_the_last_purchase(
    table: pd.DataFrame,
) -> None:
    due = buy_again_due(lines_frame(LINES), table.reset_index(), AS_OF)
    c1 = due[due["customer_id"] == "c1"].set_index("product_id")

    assert c1.loc["pA", "last_bought_at"] == pd.Timestamp("2024-01-31")
    assert c1.loc["pA", "due_at"] == pd.Timestamp("2024-02-17")
    assert c1.loc["pB", "due_at"] == pd.Timestamp("2024-03-21")
    assert c1.loc["pB", "level"] == "category"
    # c3's order after as_of does not move the last purchase.
    c3 = due[due["customer_id"] == "c3"].set_index("product_id")
    assert c3.loc["pA", "last_bought_at"] == pd.Timestamp("2024-03-31")


def test_refill_gaps_track_the_synthetic_consumables() -> None:
    lines, _, products = synthetic_frames()
    table = replenishment(lines, products, datetime(2026, 11, 30))
    own = table[table["level"] == "product"]

    # The synthetic shop re-buys consumables every 20 to 75 days; what it
    # re-buys by chance comes back more slowly or faster, but not by years.
    assert len(own) > 10
    assert own["median_gap_days"].between(1, 200).all()
    assert (own["gap_p25_days"] <= own["median_gap_days"]).all()
    assert (own["median_gap_days"] <= own["gap_p75_days"]).all()


def test_packed_and_column_wise_deduplication_agree() -> None:
    lines = lines_frame(LINES)
    packed = bought_days(lines, AS_OF)
    kept = lines[lines["customer_id"].notna() & (lines["status"] == "placed")]
    kept = kept[kept["ordered_at"] < AS_OF]
    slow = _bought_days_slowly(
        kept["customer_id"].to_numpy(),
        kept["product_id"].to_numpy(),
        (kept["ordered_at"].to_numpy().astype("datetime64[D]")).astype(np.int64),
    )
    columns = ["customer_id", "product_id", "day"]
    pd.testing.assert_frame_equal(
        packed.sort_values(columns, ignore_index=True),
        slow.sort_values(columns, ignore_index=True),
        check_dtype=False,
    )
