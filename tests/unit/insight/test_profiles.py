"""Tests for customer profiles: purchase rules, RFM, segments, stages, affinities.

The tiny shop below is shared with the other insight tests, which import its
frames from here.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nudge.demo.synth import SyntheticShop, generate_shop
from nudge.insight import (
    BetaGeoModel,
    FitError,
    GammaGammaModel,
    summarize_transactions,
)
from nudge.insight.config import InsightConfig
from nudge.insight.profiles import (
    CHURN_BANDS,
    PROFILE_COLUMNS,
    SEGMENT_RULES,
    SEGMENTS,
    STAGES,
    build_profiles,
    customer_history,
    price_bands,
    product_attributes,
    purchases,
    repeat_spend,
    rfm_score,
    segment_of,
    segment_summary,
)
from nudge.settings import load_settings

AS_OF = datetime(2024, 7, 1)

# (order, customer, time, product, quantity, unit price, status); customer None
# is a guest. The expected figures are worked out beside the tests below.
TINY_LINES = [
    ("O1", "ann", "2024-01-10 10:00", "p1", 2, 10.0, "placed"),
    ("O2", "ann", "2024-03-01 12:00", "p2", 1, 30.0, "placed"),
    ("O2", "ann", "2024-03-01 12:00", "p3", 2, 50.0, "cancelled"),
    ("O3", "ann", "2024-06-20 09:00", "p1", 1, 15.0, "placed"),
    ("O4", "ann", "2024-06-20 18:00", "p3", 1, 5.0, "placed"),
    ("O5", "ann", "2024-07-01 00:00", "p1", 9, 10.0, "placed"),
    ("B1", "bob", "2024-06-25 08:00", "p2", 1, 40.0, "placed"),
    ("C1", "cat", "2023-07-01 08:00", "p3", 4, 50.0, "placed"),
    ("C2", "cat", "2023-08-01 08:00", "p3", 6, 50.0, "placed"),
    ("D1", "dan", "2023-01-01 08:00", "p2", 1, 50.0, "placed"),
    ("D2", "dan", "2024-06-01 08:00", "p2", 2, 30.0, "placed"),
    ("E1", "eve", "2024-02-01 08:00", "p1", 3, 0.0, "placed"),
    ("E2", "eve", "2024-03-01 08:00", "p2", 1, 30.0, "cancelled"),
    ("E3", "eve", "2024-04-01 08:00", "p2", -1, 20.0, "placed"),
    ("F1", "fay", "2024-05-01 08:00", "p1", 1, 10.0, "placed"),
    ("G1", "gus", "2023-12-01 08:00", "p3", 20, 50.0, "placed"),
    ("H1", "hal", "2023-12-01 08:00", "p1", 1, 5.0, "placed"),
    ("X1", None, "2024-06-01 08:00", "p1", 50, 10.0, "placed"),
]
TINY_EVENTS = [
    ("ann", "view", "2024-05-01 10:00", "p2"),
    ("ann", "add_to_cart", "2024-05-01 10:01", "p2"),
    ("ann", "view", "2024-07-02 10:00", "p3"),
    ("ann", "search", "2024-05-01 10:02", None),
]
TINY_PRODUCTS = [
    ("p1", "Candles", "Wick", 10.0),
    ("p2", "Kitchen", "Oak", 30.0),
    ("p3", "Candles", "Oak", 50.0),
]


def lines_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    """Build an order-line frame like `queries.order_lines` returns."""
    columns = [
        "order_id",
        "customer_id",
        "ordered_at",
        "product_id",
        "quantity",
        "unit_price",
        "status",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"]).astype("datetime64[us]")
    frame["unit_price"] = frame["unit_price"].astype(float)
    return frame


def tiny_lines() -> pd.DataFrame:
    """Return the tiny shop's order lines."""
    return lines_frame(TINY_LINES)


def tiny_events() -> pd.DataFrame:
    """Return the tiny shop's behaviour events."""
    frame = pd.DataFrame(
        TINY_EVENTS, columns=["customer_id", "event_type", "occurred_at", "product_id"]
    )
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"]).astype("datetime64[us]")
    return frame


def tiny_products() -> pd.DataFrame:
    """Return the tiny shop's catalog."""
    return pd.DataFrame(TINY_PRODUCTS, columns=["id", "category", "brand", "price"])


@cache
def synthetic_shop() -> SyntheticShop:
    """Return a seeded synthetic shop with a few hundred repeat buyers."""
    return generate_shop(seed=5, customers=800, products=60, days=365)


def synthetic_frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return the synthetic shop's lines, events and products as store-like frames."""
    shop = synthetic_shop()
    lines = shop.orders.copy()
    lines["ordered_at"] = (
        pd.to_datetime(lines["ordered_at"])
        .dt.tz_localize(None)
        .astype("datetime64[us]")
    )
    lines["unit_price"] = lines["unit_price"].astype(float)
    events = shop.events.copy()
    events["occurred_at"] = (
        pd.to_datetime(events["occurred_at"])
        .dt.tz_localize(None)
        .astype("datetime64[us]")
    )
    events["product_id"] = events["product_id"].replace("", None)
    products = shop.products.rename(columns={"product_id": "id"})
    products["price"] = products["price"].astype(float)
    return lines, events, products


def _build(
    lines: pd.DataFrame | None = None,
    config: InsightConfig | None = None,
    as_of: datetime = AS_OF,
) -> pd.DataFrame:
    """Return the tiny shop's profiles indexed by customer."""
    profiles = build_profiles(
        tiny_lines() if lines is None else lines,
        tiny_events(),
        tiny_products(),
        as_of,
        config,
    )
    return profiles.frame.set_index("customer_id")


# Repeat buyers: ann (t_x 162 over 2 repeats), cat (31 over 1), dan (517 over
# 1); the shop's gap is the median of 81, 31 and 517. Each customer's gap is
# (t_x + 2 * 81) / (x + 2), and P(alive) = exp(-recency / (2 * gap)).
SHOP_GAP = 81.0
GAPS = {
    "ann": (162 + 2 * SHOP_GAP) / 4,
    "bob": SHOP_GAP,
    "cat": (31 + 2 * SHOP_GAP) / 3,
    "dan": (517 + 2 * SHOP_GAP) / 3,
    "fay": SHOP_GAP,
    "gus": SHOP_GAP,
    "hal": SHOP_GAP,
}
RECENCY = {
    "ann": 11,
    "bob": 6,
    "cat": 335,
    "dan": 30,
    "fay": 61,
    "gus": 213,
    "hal": 213,
}


def _p_alive(name: str) -> float:
    return math.exp(-RECENCY[name] / (2 * GAPS[name]))


def test_purchase_rules_decide_who_is_profiled_and_with_what() -> None:
    profiles = _build()

    # eve's orders are worth zero, cancelled or negative; the guest is nobody.
    assert sorted(profiles.index) == ["ann", "bob", "cat", "dan", "fay", "gus", "hal"]
    ann = profiles.loc["ann"]
    # Two orders on 20 June are one purchase day; O2's cancelled line and O5,
    # placed exactly at as_of, are left out.
    assert ann["frequency"] == 3
    assert ann["orders"] == 4
    assert ann["monetary"] == pytest.approx(20 + 30 + 15 + 5)
    assert ann["avg_order_value"] == pytest.approx(70 / 4)
    assert ann["recency_days"] == 11
    assert ann["tenure_days"] == 173
    assert ann["first_order_at"] == pd.Timestamp("2024-01-10 10:00")
    assert ann["last_order_at"] == pd.Timestamp("2024-06-20 18:00")
    assert profiles["as_of"].eq(pd.Timestamp(AS_OF)).all()


def test_purchase_frame_counts_each_kept_order_once() -> None:
    bought = purchases(tiny_lines(), AS_OF)

    assert sorted(bought["order_id"]) == [
        "B1", "C1", "C2", "D1", "D2", "F1", "G1", "H1", "O1", "O2", "O3", "O4",
    ]  # fmt: skip
    assert bought.set_index("order_id").loc["O2", "value"] == pytest.approx(30.0)


def test_rfm_scores_rank_by_share_of_customers_strictly_worse() -> None:
    profiles = _build()

    expected = {
        #       R  F  M
        "ann": (4, 5, 3),
        "bob": (5, 1, 2),
        "cat": (1, 3, 4),
        "dan": (3, 3, 3),
        "fay": (3, 1, 1),
        "gus": (1, 1, 5),
        "hal": (1, 1, 1),
    }
    for name, scores in expected.items():
        row = profiles.loc[name]
        assert (row["r_score"], row["f_score"], row["m_score"]) == scores, name
    assert profiles["recency_days"].to_dict() == RECENCY


def test_rfm_score_ties_share_a_score_and_a_lone_customer_scores_one() -> None:
    assert rfm_score(np.array([1.0, 1.0, 1.0, 2.0, 3.0])).tolist() == [1, 1, 1, 4, 5]
    assert rfm_score(np.array([7.0])).tolist() == [1]
    assert rfm_score(np.array([])).tolist() == []


def test_segments_follow_the_documented_mapping() -> None:
    profiles = _build()

    assert profiles["segment"].to_dict() == {
        "ann": "champions",
        "bob": "new",
        "cat": "cant_lose",
        "dan": "potential_loyalists",
        "fay": "potential_loyalists",
        "gus": "at_risk",
        "hal": "lost",
    }


@pytest.mark.parametrize(
    ("r", "f", "m", "days", "segment"),
    [
        (5, 5, 4, 9, "champions"),
        (4, 3, 5, 4, "champions"),
        (3, 5, 5, 9, "loyal"),
        (5, 1, 1, 1, "new"),
        (4, 2, 2, 2, "potential_loyalists"),
        (3, 1, 1, 1, "potential_loyalists"),
        (1, 4, 4, 5, "cant_lose"),
        (2, 5, 5, 9, "at_risk"),
        (1, 2, 3, 2, "at_risk"),
        (2, 1, 2, 1, "hibernating"),
        (1, 1, 2, 1, "lost"),
    ],
)
def test_segment_rules(r: int, f: int, m: int, days: int, segment: str) -> None:
    found = segment_of(np.array([r]), np.array([f]), np.array([m]), np.array([days]))
    assert found.tolist() == [segment]
    assert set(SEGMENT_RULES) == set(SEGMENTS)


def test_small_shop_uses_the_gap_heuristic_for_everyone() -> None:
    profiles = build_profiles(
        tiny_lines(), tiny_events(), tiny_products(), AS_OF, InsightConfig()
    )
    frame = profiles.frame.set_index("customer_id")

    assert profiles.models.name == "heuristic"
    assert "3 repeat buyers" in profiles.models.reason
    assert profiles.shop_gap_days == SHOP_GAP
    assert (frame["model_used"] == "heuristic").all()
    for name in GAPS:
        assert frame.loc[name, "typical_gap_days"] == pytest.approx(GAPS[name])
        assert frame.loc[name, "p_alive"] == pytest.approx(_p_alive(name))
        assert frame.loc[name, "churn_risk"] == pytest.approx(1 - _p_alive(name))


def test_heuristic_clv_and_next_order_follow_the_documented_formulas() -> None:
    ann = _build().loc["ann"]

    discount = sum(1.01**-month for month in range(1, 13))
    per_day = 70 / 3
    p = _p_alive("ann")
    assert ann["clv"] == pytest.approx(p * 30 / GAPS["ann"] * per_day * discount)
    wait = timedelta(days=GAPS["ann"] / p)
    assert abs(ann["expected_next_order_at"] - (AS_OF + wait)) < timedelta(seconds=1)


def test_lifecycle_stages_and_their_rules() -> None:
    profiles = _build()

    assert profiles["stage"].to_dict() == {
        "ann": "active",
        "bob": "new",
        "cat": "churned",
        "dan": "reactivated",
        "fay": "active",
        "gus": "at_risk",
        "hal": "active",
    }
    rules = profiles["stage_rule"]
    assert rules["bob"] == "first purchase 6 days ago (< 30)"
    assert rules["cat"] == "churn risk 0.93 >= 0.90; last purchase 335 days ago"
    assert rules["dan"] == (
        "bought again 30 days ago (< 90) after 517 days without a purchase (>= 180)"
    )
    # The win-back value is the median spend: 70 (ann's).
    assert rules["gus"] == (
        "churn risk 0.73 >= 0.70 and spend 1000.00 >= 70.00 (win-back value)"
    )
    assert rules["hal"] == (
        "churn risk 0.73 is high but spend 5.00 < 70.00, below the win-back value"
    )
    assert rules["ann"] == "churn risk 0.07 < 0.70"


def test_churn_bands_follow_the_configured_thresholds() -> None:
    profiles = _build()
    assert profiles["churn_band"].to_dict() == {
        "ann": "low",
        "bob": "low",
        "cat": "high",
        "dan": "low",
        "fay": "medium",
        "gus": "high",
        "hal": "high",
    }

    strict = InsightConfig(
        churn_medium_from=0.05, churn_high_from=0.3, churned_from=0.95
    )
    relaxed = _build(config=strict)
    assert relaxed.loc["ann", "churn_band"] == "medium"
    assert relaxed.loc["fay", "churn_band"] == "high"
    # At 0.95 cat is no longer churned but at risk: high risk, spend 500 >= 70.
    assert relaxed.loc["cat", "stage"] == "at_risk"


def test_an_order_after_as_of_never_changes_a_profile() -> None:
    before = _build()
    later = pd.concat(
        [
            tiny_lines(),
            lines_frame(
                [
                    ("L1", "ann", "2024-07-01 00:00", "p1", 3, 99.0, "placed"),
                    ("L2", "hal", "2024-08-01 00:00", "p2", 1, 10.0, "placed"),
                    ("L3", "zed", "2024-07-05 00:00", "p3", 1, 10.0, "placed"),
                ]
            ),
        ],
        ignore_index=True,
    )
    after = _build(later)

    pd.testing.assert_frame_equal(before, after)


def test_as_of_truncation_matches_on_a_synthetic_shop() -> None:
    lines, events, products = synthetic_frames()
    as_of = datetime(2026, 10, 1)
    full = build_profiles(lines, events, products, as_of).frame
    cut = build_profiles(
        lines[lines["ordered_at"] < as_of],
        events[events["occurred_at"] < as_of],
        products,
        as_of,
    ).frame

    pd.testing.assert_frame_equal(full, cut)


def test_empty_history_gives_no_profiles() -> None:
    empty = tiny_lines().iloc[0:0]
    profiles = build_profiles(empty, None, None, AS_OF)

    assert profiles.frame.empty
    assert list(profiles.frame.columns) == list(PROFILE_COLUMNS)
    assert profiles.models.name == "heuristic"


def test_only_unusable_orders_give_no_profiles() -> None:
    eve = tiny_lines().query("customer_id == 'eve'")
    assert build_profiles(eve, None, None, AS_OF).frame.empty


def test_everything_before_as_of_is_required_to_be_known() -> None:
    with pytest.raises(ValueError, match="unit_price"):
        build_profiles(tiny_lines().drop(columns="unit_price"), None, None, AS_OF)


def test_affinities_weigh_purchases_carts_and_views() -> None:
    ann = _build().loc["ann", "affinities"]

    # Bought lines weigh 3 (p1 twice, p2, p3), ann's cart 2 and view 1 (p2);
    # the cancelled line, the search and the view after as_of do not count.
    assert ann == {
        "category": {"Candles": 0.6, "Kitchen": 0.4},
        "brand": {"Oak": 0.6, "Wick": 0.4},
        "price_band": {"budget": 0.4, "mid": 0.4, "premium": 0.2},
    }


def test_affinities_keep_only_the_top_entries() -> None:
    config = InsightConfig(affinity_top=1)
    ann = _build(config=config).loc["ann", "affinities"]
    assert ann == {
        "category": {"Candles": 0.6},
        "brand": {"Oak": 0.6},
        "price_band": {"budget": 0.4},
    }


def test_price_bands_are_catalog_tertiles() -> None:
    bands = price_bands(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan]))
    assert bands.tolist() == [
        "budget", "budget", "mid", "mid", "premium", "premium", None,
    ]  # fmt: skip
    assert price_bands(np.array([5.0, 5.0])).tolist() == ["mid", "mid"]


def test_a_product_without_a_catalog_price_takes_the_price_paid() -> None:
    products = tiny_products().assign(price=[10.0, 30.0, None])
    attributes = product_attributes(products, tiny_lines(), AS_OF)
    # p3 sold at 50, 50, 50, 5 and 50 before as_of: median 50, so premium.
    assert attributes.loc["p3", "price_band"] == "premium"


def test_bgnbd_is_used_for_repeat_buyers_of_a_shop_with_enough_of_them() -> None:
    lines, events, products = synthetic_frames()
    profiles = build_profiles(lines, events, products, datetime(2026, 11, 30))
    frame = profiles.frame
    history = customer_history(lines, datetime(2026, 11, 30)).frame

    assert profiles.models.name == "bgnbd"
    assert profiles.models.repeat_buyers >= InsightConfig().min_repeat_buyers
    repeat = frame["frequency"] > 1
    assert (frame.loc[repeat, "model_used"] == "bgnbd").all()
    assert (frame.loc[~repeat, "model_used"] == "heuristic").all()

    # P(alive) of repeat buyers is the fitted model's, and nothing is NaN.
    model = profiles.models.bgnbd
    assert model is not None
    rows = history.loc[frame.loc[repeat, "customer_id"]]
    expected = model.p_alive(rows["x"], rows["t_x"], rows["T"])
    np.testing.assert_allclose(frame.loc[repeat, "p_alive"], expected)
    numeric = frame[["p_alive", "churn_risk", "clv", "monetary", "typical_gap_days"]]
    assert np.isfinite(numeric.to_numpy()).all()
    assert set(frame["stage"]) <= set(STAGES)
    assert set(frame["churn_band"]) <= set(CHURN_BANDS)


def test_bgnbd_inputs_match_summarize_transactions() -> None:
    lines, _, _ = synthetic_frames()
    as_of = datetime(2026, 9, 1)
    history = customer_history(lines, as_of).frame
    bought = purchases(lines, as_of)

    summary = summarize_transactions(
        bought, "customer_id", "ordered_at", "value", observation_end=as_of
    )
    assert (history["x"] == summary["frequency"]).all()
    assert (history["t_x"] == summary["recency"]).all()
    assert (history["T"] == summary["T"]).all()
    np.testing.assert_allclose(repeat_spend(history), summary["monetary_value"])


def test_a_fit_that_fails_is_an_error_with_its_reason() -> None:
    lines, events, products = synthetic_frames()
    # Five months into the synthetic shop, 148 repeat buyers cannot pin down
    # how customers drop out: b runs off to infinity.
    with pytest.raises(FitError, match="b ran to the edge") as caught:
        build_profiles(lines, events, products, datetime(2026, 6, 1))
    assert "fit_failure = heuristic" in str(caught.value)


def test_a_failed_fit_can_fall_back_to_the_heuristic_by_config() -> None:
    lines, events, products = synthetic_frames()
    config = InsightConfig(fit_failure="heuristic")
    profiles = build_profiles(lines, events, products, datetime(2026, 6, 1), config)

    assert profiles.models.name == "heuristic"
    assert profiles.models.reason.endswith("gap heuristic instead")
    assert (profiles.frame["model_used"] == "heuristic").all()
    assert np.isfinite(profiles.frame["clv"]).all()


def test_non_finite_predictions_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    lines, events, products = synthetic_frames()

    def broken(self: BetaGeoModel, *args: object) -> np.ndarray[Any, Any]:
        return np.full(len(np.atleast_1d(np.asarray(args[0]))), np.nan)

    monkeypatch.setattr(BetaGeoModel, "p_alive", broken)
    with pytest.raises(FitError, match="P\\(alive\\) is not a finite number"):
        build_profiles(lines, events, products, datetime(2026, 11, 30))


def test_gamma_gamma_with_infinite_mean_spend_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines, events, products = synthetic_frames()
    original = GammaGammaModel.fit

    def heavy_tailed(self: GammaGammaModel, *args: Any) -> GammaGammaModel:
        original(self, *args)
        return GammaGammaModel.from_params({"p": 2.0, "q": 0.8, "v": 10.0})

    monkeypatch.setattr(GammaGammaModel, "fit", heavy_tailed)
    with pytest.raises(FitError, match=r"q = 0\.8 <= 1"):
        build_profiles(lines, events, products, datetime(2026, 11, 30))


def test_segment_summary_shares_add_up() -> None:
    summary = segment_summary(_build().reset_index())

    assert list(summary.index) == list(SEGMENTS)
    assert summary.loc["potential_loyalists", "customers"] == 2
    assert summary.loc["loyal", "customers"] == 0
    assert summary["customers_share"].sum() == pytest.approx(1.0)
    assert summary["revenue_share"].sum() == pytest.approx(1.0)
    assert summary.loc["at_risk", "revenue"] == pytest.approx(1000.0)
    stages = segment_summary(_build().reset_index(), "stage")
    assert stages.loc["active", "customers"] == 3


def test_config_refuses_unordered_bands_and_reads_settings() -> None:
    with pytest.raises(ValueError, match="churn bands"):
        InsightConfig(churn_medium_from=0.8, churn_high_from=0.7)

    env = {"NUDGE_INSIGHT_CHURN_HIGH_FROM": "0.6", "NUDGE_INSIGHT_NEW_DAYS": "14"}
    config = InsightConfig.from_settings(load_settings(env=env, cwd=Path("/")))
    assert config.churn_high_from == 0.6
    assert config.new_days == 14
    assert config.churn_medium_from == InsightConfig().churn_medium_from
