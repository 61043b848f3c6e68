"""What the planner learns: Thompson shares, shrinkage, hours, and their use."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from nudge.campaigns.learning import (
    damp,
    move_to_hour,
    preferred_hours,
    shrink,
    thompson_shares,
)
from nudge.campaigns.planner import PlanInput, plan
from tests.unit.campaigns.helpers import AS_OF, campaign, customers, recommend_all


def test_thompson_gives_the_better_variant_most_sends_but_keeps_exploring() -> None:
    shares = thompson_shares([1_000, 1_000], [80, 20], min_share=0.1)
    assert shares.sum() == 1.0
    assert shares[0] > 0.85 and shares[1] >= 0.1

    # Without evidence either way the arms split evenly.
    even = thompson_shares([0, 0, 0], [0, 0, 0], min_share=0.1)
    assert np.allclose(even, 1 / 3, atol=0.03)
    # One arm takes everything; none gives nothing.
    assert thompson_shares([10], [1]).tolist() == [1.0]
    assert thompson_shares([], []).size == 0


def test_a_few_results_move_a_rate_little_and_many_move_it_far() -> None:
    prior = 0.05
    assert shrink(2, 10, prior, 200) == (2 + 10) / 210
    assert abs(shrink(2, 10, prior, 200) - prior) < 0.01
    assert abs(shrink(2_000, 10_000, prior, 200) - 0.2) < 0.01


def test_preferred_hours_are_local_and_need_enough_events() -> None:
    events = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 3, 3, 3],
            "occurred_at": [
                datetime(2026, 7, 1, 18, 5),  # 19:05 in London (summer)
                datetime(2026, 7, 2, 18, 40),
                datetime(2026, 7, 3, 7, 0),
                datetime(2026, 7, 1, 9, 0),
                datetime(2026, 7, 2, 9, 0),
                datetime(2026, 1, 5, 14, 0),  # 09:00 in New York (winter)
                datetime(2026, 1, 6, 14, 30),
                datetime(2026, 1, 7, 14, 59),
            ],
        }
    )
    zones = {1: "Europe/London", 2: "Europe/London", 3: "America/New_York"}
    found = preferred_hours(events, zones, "Europe/London", min_events=3)
    assert found[1] == 19
    assert found[3] == 9
    assert 2 not in found  # two events are too few
    assert found["shop"] in (9, 10, 19)


def test_a_send_moves_to_the_next_preferred_hour() -> None:
    base = np.array(
        ["2026-11-30T10:00", "2026-11-30T10:00", "2026-11-30T10:00"],
        dtype="datetime64[ns]",
    )
    moved = move_to_hour(base, ["Europe/London"] * 3, [18, 8, None])
    assert str(moved[0])[:16] == "2026-11-30T18:00"
    assert str(moved[1])[:16] == "2026-12-01T08:00"  # 08:00 passed: the next day
    assert moved[2] == base[2]


def test_learnt_shares_rates_and_hours_change_the_plan() -> None:
    spec = campaign(
        "picks",
        variants=[{"name": "a", "subject": "A"}, {"name": "b", "subject": "B"}],
        send_window={"hours": "09:00-20:00"},
    )
    people = customers(400)
    base = PlanInput(
        as_of=AS_OF, campaigns=[spec], customers=people, forced=frozenset({"picks"})
    )
    before = plan(base, recommend_all()).decisions
    shares = before["variant"].value_counts(normalize=True)
    assert 0.4 < shares["a"] < 0.6

    learnt = PlanInput(
        as_of=AS_OF,
        campaigns=[spec],
        customers=people,
        forced=frozenset({"picks"}),
        variant_weights={"picks": [0.9, 0.1]},
        preferred_hours={1: 17, "shop": 12},
    )
    after = plan(learnt, recommend_all()).decisions.set_index("customer_id")
    assert 0.85 < (after["variant"] == "a").mean() < 0.95
    # Customer 1 gets their own hour, everyone else the shop's (London, winter).
    assert pd.Timestamp(after.loc[1, "send_at"]).hour == 17
    assert pd.Timestamp(after.loc[2, "send_at"]).hour == 12

    # A segment that never responds falls below the value threshold.
    cold = PlanInput(
        as_of=AS_OF,
        campaigns=[spec],
        customers=people,
        forced=frozenset({"picks"}),
        segment_rates={("picks", "none"): 0.0},
    )
    decided = plan(cold, recommend_all()).decisions
    assert set(decided["reason"]) == {"below_threshold"}


def test_variants_with_their_own_strategies_get_their_products_from_them() -> None:
    spec = campaign(
        "picks",
        variants=[
            {"name": "a", "subject": "A"},
            {"name": "b", "subject": "B", "strategy": "trending"},
        ],
    )
    data = PlanInput(
        as_of=AS_OF,
        campaigns=[spec],
        customers=customers(200),
        forced=frozenset({"picks"}),
        variant_weights={"picks": [0.5, 0.5]},
    )
    made = plan(data, recommend_all())
    chosen = made.decisions.set_index("customer_id")["variant"]
    strategy = made.items.groupby("customer_id")["strategy"].first()
    expected = chosen.map({"a": "best_sellers", "b": "trending"})
    assert (strategy == expected.reindex(strategy.index)).all()
    assert set(strategy) == {"best_sellers", "trending"}


def test_a_product_shown_again_and_again_without_a_click_moves_down() -> None:
    lists = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 1, 2, 2],
            "rank": [1, 2, 3, 4, 1, 2],
            "product_id": [10, 11, 12, 13, 10, 11],
        }
    )
    damped = damp(lists, {(1, 10)}, 0.3)
    first = damped[damped["customer_id"] == 1].sort_values("rank")
    # Rank 1 over 0.3 is 3.3: behind the products at ranks 2 and 3.
    assert first["product_id"].tolist() == [11, 12, 10, 13]
    assert first["rank"].tolist() == [1, 2, 3, 4]
    second = damped[damped["customer_id"] == 2].sort_values("rank")
    assert second["product_id"].tolist() == [10, 11]  # someone else's: unchanged
    assert damp(lists, set(), 0.3) is lists
