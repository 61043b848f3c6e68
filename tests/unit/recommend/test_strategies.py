"""What each strategy is for: forecasts, repeat timing, pairs, text, new arrivals."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from nudge.recommend import build_interactions, make_strategy
from nudge.recommend.config import CoPurchaseConfig, NewArrivalsConfig
from nudge.recommend.replenish import replenishment
from nudge.recommend.strategies import CoPurchase, NewArrivals
from nudge.recommend.strategies.popularity import daily_buyers, holt_winters
from tests.unit.recommend.tiny import AS_OF, tiny_data, tiny_frames

SMOOTHING = (0.3, 0.1, 0.1)


def test_holt_winters_keeps_a_flat_series_flat() -> None:
    series = np.full((1, 56), 3.0)
    assert holt_winters(series, 7, *SMOOTHING)[0] == pytest.approx(21.0)


def test_holt_winters_sees_a_rise_before_the_peak() -> None:
    rising = np.linspace(0.0, 6.0, 56)
    steady = np.full(56, rising.mean())
    forecast = holt_winters(np.stack([rising, steady]), 7, *SMOOTHING)
    assert forecast[0] > 7 * rising[-7:].mean()
    assert forecast[0] > forecast[1]


def test_holt_winters_follows_the_day_of_week() -> None:
    week = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 6.0, 6.0])
    series = np.tile(week, 8)[None, :]
    weekend = holt_winters(series[:, :-2], 2, *SMOOTHING)[0]
    weekdays = holt_winters(series[:, :-7], 2, *SMOOTHING)[0]
    assert weekend > 3 * weekdays
    assert holt_winters(np.zeros((0, 56)), 7, *SMOOTHING).shape == (0,)


def test_daily_buyers_count_distinct_customers_per_day() -> None:
    data = tiny_data()
    daily = daily_buyers(data, 56)
    # A1 (column 0): customers 1 (30 days ago), 3 (40), 4 (15) and 5 (12).
    assert daily[0].sum() == 4
    assert daily[0, 56 - 1 - 30] == 1


def test_trending_ranks_a_rising_product_over_a_fading_one() -> None:
    orders = []
    for day in range(56):
        # A2 sold every day, evenly; A6 only lately, more each day.
        orders.append((100 + day, 1000 + day, day + 0.5, (2,)))
        if day < 14:
            orders.append((200 + day, 2000 + day, day + 0.5, (6,) * 1))
    frames = tiny_frames(orders=orders)
    data = build_interactions(frames["lines"], frames["products"], AS_OF)
    trending = make_strategy("trending").fit(data)
    top = trending.recommend([None], 2).items["product_id"].tolist()
    assert top[0] == 6
    assert trending.demand_forecast.shape == (data.n_items,)


def test_repeat_timing_of_a_regular_buyer() -> None:
    data = tiny_data()
    timing = replenishment(data)
    entry = timing.entries(data, data.rows_of([1]), data.items_of([1]))[0]
    assert timing.orders[entry] == 3
    assert timing.gap[entry] == pytest.approx(30.0)
    assert timing.last_age[entry] == pytest.approx(30.0)
    assert timing.due_ratio(data, data.rows_of([1]), data.items_of([1]))[0] == 1.0
    # One purchase and no product rhythm: timing unknown.
    assert np.isnan(timing.due_ratio(data, data.rows_of([4]), data.items_of([1]))[0])


def test_buy_again_says_when_a_product_is_due() -> None:
    items = make_strategy("buy_again").fit(tiny_data()).recommend([1], 3).items
    first = items.iloc[0]
    assert first["product_id"] == 1
    assert first["reason"] == "due_again"


def test_co_purchase_keeps_pairs_with_their_lift_and_confidence() -> None:
    data = tiny_data()
    model = CoPurchase(CoPurchaseConfig(min_count=2)).fit(data)
    pairs = model.pairs
    columns = data.items_of([1, 2])
    pair = pairs[(pairs["item"] == columns[0]) & (pairs["partner"] == columns[1])]
    # A1 is in 6 of 10 orders, A2 in 5, together in 3.
    assert pair["orders"].iloc[0] == 3
    assert pair["confidence"].iloc[0] == pytest.approx(3 / 6)
    assert pair["lift"].iloc[0] == pytest.approx(3 * 10 / (6 * 5))
    assert (pairs["orders"] >= 2).all()
    items = model.recommend([4], 3).items
    assert items.iloc[0]["reason"] == "bought_together"
    assert items.iloc[0]["evidence_id"] == 1


def _with_unsold_mug() -> pd.DataFrame:
    frames = tiny_frames()
    extra = pd.DataFrame(
        {
            "id": [9],
            "external_id": ["A9"],
            "title": ["BLUE MUG LARGE"],
            "description": ["a large blue mug for the home"],
            "category": ["Kitchen"],
            "brand": ["Oak"],
            "price": [12.0],
            "image_url": ["https://shop.example/A9.jpg"],
            "product_url": ["https://shop.example/A9"],
            "in_stock": [True],
            "created_at": [AS_OF - timedelta(days=2)],
        }
    )
    return pd.concat([frames["products"], extra], ignore_index=True)


def test_content_reaches_products_without_any_sale() -> None:
    frames = tiny_frames()
    data = build_interactions(frames["lines"], _with_unsold_mug(), AS_OF)
    items = make_strategy("content").fit(data).recommend([4], 3).items
    first = items.iloc[0]
    assert first["product_id"] == 9
    assert first["reason_text"] == "Similar to Blue Mug"


def test_new_arrivals_follow_the_customers_affinity() -> None:
    frames = tiny_frames()
    data = build_interactions(frames["lines"], _with_unsold_mug(), AS_OF)
    model = NewArrivals(NewArrivalsConfig(window_days=30)).fit(data)
    items = model.recommend([4], 2, exclude_purchased=True).items
    assert items.iloc[0]["product_id"] == 9
    assert items.iloc[0]["reason"] in {"new_like", "new_in_category"}
    # Customer 2 buys candles and kitchenware; both new products are listed.
    assert set(model.recommend([2], 2).items["product_id"]) == {7, 9}
