"""The planner's rules: who is never mailed, who wins, when, and why not."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from nudge.campaigns.config import PlannerConfig
from nudge.campaigns.planner import (
    OUTCOMES,
    REASONS,
    Plan,
    PlanInput,
    plan,
)
from tests.unit.campaigns.helpers import AS_OF, campaign, customers, recommend_all

SENDING = ("chosen", "deferred")


def run(frame: pd.DataFrame, campaigns: list, **fields: object) -> Plan:
    """Plan with a recommender that always finds four products."""
    recommend = fields.pop("recommend", recommend_all())
    given = PlanInput(AS_OF, campaigns, frame, **fields)  # type: ignore[arg-type]
    return plan(given, recommend)


def outcome_of(made: Plan, customer_id: int, name: str) -> tuple[str, str]:
    """Return the outcome and reason of one customer in one campaign."""
    rows = made.decisions
    row = rows[(rows["customer_id"] == customer_id) & (rows["campaign"] == name)]
    assert len(row) == 1
    return str(row["outcome"].iloc[0]), str(row["reason"].iloc[0])


@pytest.fixture
def crowd() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two thousand customers with random consent, unsubscribes, zones and sends."""
    rng = np.random.default_rng(5)
    n = 2000
    frame = customers(
        n,
        accepts_marketing=rng.random(n) < 0.8,
        unsubscribed_at=np.where(rng.random(n) < 0.05, datetime(2026, 5, 1), None),
        has_email=rng.random(n) < 0.97,
        timezone=rng.choice(
            ["Europe/London", "America/New_York", "Australia/Sydney", None], n
        ),
        max_emails_per_week=np.where(rng.random(n) < 0.05, 1.0, np.nan),
    )
    frame["clv"] = rng.random(n) * 100
    sent = rng.choice(frame["customer_id"].to_numpy(), 1500)
    history = pd.DataFrame(
        {
            "customer_id": sent,
            "campaign": rng.choice(["winback", "digest", "other"], len(sent)),
            "send_at": [
                AS_OF - timedelta(days=float(d)) for d in rng.random(1500) * 20
            ],
        }
    )
    return frame, history


def crowd_campaigns() -> list:
    return [
        campaign(
            "winback",
            audience="clv >= 30",
            priority=5,
            holdout=0.2,
            caps=[{"max": 1, "days": 14}],
            quiet_hours="21:00-08:00",
        ),
        campaign(
            "digest",
            trigger={"schedule": "0 9 * * *"},
            audience="orders >= 0",
            holdout=0.1,
            value={"response_rate": 0.02, "order_value": "customer"},
            send_window={"days": ["mon", "tue"], "hours": "09:00-18:00"},
        ),
    ]


def test_nobody_without_consent_unsubscribed_capped_or_held_out_is_sent(
    crowd: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    frame, history = crowd
    made = run(frame, crowd_campaigns(), history=history)
    decisions = made.decisions.merge(
        frame[["customer_id", "consent", "unsubscribed", "has_email"]],
        on="customer_id",
    )
    sending = decisions[decisions["outcome"].isin(SENDING)]

    assert len(sending) > 100
    assert sending["consent"].all()
    assert not sending["unsubscribed"].any()
    assert sending["has_email"].all()

    # No one over the global cap of 2 a week, their own limit, or a campaign cap.
    week = history[history["send_at"] >= AS_OF - timedelta(days=7)]
    per_week = week.groupby("customer_id").size()
    counts = per_week.reindex(sending["customer_id"]).fillna(0).to_numpy()
    assert (counts < 2).all()
    limited = frame.set_index("customer_id")["max_emails_per_week"]
    own = limited.reindex(sending["customer_id"]).to_numpy()
    assert not (np.isfinite(own) & (counts >= own)).any()
    recent_winback = history[
        (history["campaign"] == "winback")
        & (history["send_at"] >= AS_OF - timedelta(days=14))
    ]["customer_id"]
    winners = sending[sending["campaign"] == "winback"]["customer_id"]
    assert not winners.isin(recent_winback).any()

    # Holdout members are recorded with their campaign, never sent.
    held = decisions[decisions["outcome"] == "holdout"]
    assert len(held) > 10
    assert not held["customer_id"].isin(sending["customer_id"]).any()


def test_every_audience_member_has_one_outcome_and_a_reason(
    crowd: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    frame, history = crowd
    made = run(frame, crowd_campaigns(), history=history)
    decisions = made.decisions

    audience = int((frame["clv"] >= 30).sum()) + len(frame)
    assert len(decisions) == audience
    assert set(decisions["outcome"]) <= set(OUTCOMES)
    assert decisions["reason"].isin(list(REASONS)).all()
    assert (decisions["detail"].str.len() > 0).all()
    assert not decisions.duplicated(["campaign", "customer_id"]).any()

    # At most one action per customer: chosen, deferred or holdout.
    acted = decisions[decisions["outcome"] != "suppressed"]
    assert not acted["customer_id"].duplicated().any()


def test_the_holdout_is_the_same_in_every_run(
    crowd: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    frame, history = crowd

    def held(made: Plan) -> set[tuple[str, int]]:
        rows = made.decisions[made.decisions["outcome"] == "holdout"]
        return set(zip(rows["campaign"], rows["customer_id"], strict=True))

    first = held(run(frame, crowd_campaigns(), history=history))
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    second = held(run(shuffled, crowd_campaigns(), history=history))

    assert first and first == second


def test_quiet_hours_defer_to_the_next_allowed_time_in_the_customers_zone() -> None:
    frame = customers(2, timezone=["Australia/Sydney", "Europe/London"])
    # 10:00 London on Monday 30 November is 21:00 in Sydney.
    made = run(frame, [campaign(quiet_hours="21:00-08:00")])

    assert outcome_of(made, 1, "winback") == ("deferred", "quiet_hours")
    assert outcome_of(made, 2, "winback") == ("chosen", "best_value")
    send_at = made.decisions.set_index("customer_id")["send_at"]
    assert send_at[1] == pd.Timestamp("2026-11-30 21:00")  # 08:00 Tuesday, Sydney
    assert send_at[2] == pd.Timestamp("2026-11-30 10:00")
    detail = made.decisions.set_index("customer_id")["detail"][1]
    assert detail == "Mon 21:00 → Tue 08:00 Australia/Sydney"


def test_the_planners_default_quiet_hours_apply_when_a_campaign_sets_none() -> None:
    frame = customers(1, timezone="America/Los_Angeles")
    late = campaign(quiet_hours=None)  # 10:00 London is 02:00 in Los Angeles

    made = run(frame, [late], config=PlannerConfig(quiet_hours="22:00-07:00"))

    assert outcome_of(made, 1, "winback") == ("deferred", "quiet_hours")
    send_at = made.decisions["send_at"].iloc[0]
    assert send_at == pd.Timestamp("2026-11-30 15:00")  # 07:00 in Los Angeles


def test_the_highest_expected_value_wins() -> None:
    frame = customers(1)
    cheap = campaign("cheap", value={"response_rate": 0.01, "order_value": 40})
    rich = campaign("rich", value={"response_rate": 0.05, "order_value": 40})

    made = run(frame, [cheap, rich])

    assert outcome_of(made, 1, "rich") == ("chosen", "best_value")
    assert outcome_of(made, 1, "cheap") == ("suppressed", "lost_to_another")
    values = made.decisions.set_index("campaign")["expected_value"]
    assert values["rich"] == pytest.approx(0.05 * 40 - 0.25)


def test_priority_beats_value() -> None:
    frame = customers(1)
    urgent = campaign("urgent", priority=9, value={"response_rate": 0.01})
    rich = campaign("rich", value={"response_rate": 0.05})

    made = run(frame, [rich, urgent])

    assert outcome_of(made, 1, "urgent")[0] == "chosen"


def test_feedback_rates_replace_the_priors() -> None:
    frame = customers(1)
    a = campaign("a", value={"response_rate": 0.01, "order_value": 40})
    b = campaign("b", value={"response_rate": 0.05, "order_value": 40})

    made = run(frame, [a, b], response_rates={"a": 0.2})

    assert outcome_of(made, 1, "a")[0] == "chosen"


def test_a_short_list_passes_the_turn_to_the_next_campaign() -> None:
    frame = customers(2)
    rich = campaign(
        "rich",
        value={"response_rate": 0.05},
        recommend={"strategy": "buy_again", "count": 4},
    )
    cheap = campaign("cheap", value={"response_rate": 0.02})
    short = recommend_all(short=frozenset({1}), strategy="buy_again")

    made = run(frame, [rich, cheap], recommend=short)

    assert outcome_of(made, 1, "rich") == ("suppressed", "list_too_short")
    assert outcome_of(made, 1, "cheap") == ("chosen", "best_value")
    assert outcome_of(made, 2, "rich")[0] == "chosen"
    assert set(made.items["customer_id"]) == {1, 2}


def test_products_are_fetched_for_winners_only() -> None:
    frame = customers(3)
    recommend = recommend_all()
    made = run(
        frame,
        [campaign("a", priority=2), campaign("b", priority=1)],
        recommend=recommend,
    )

    assert [ids for ids, _ in recommend.calls] == [[1, 2, 3]]
    assert (made.items["campaign"] == "a").all()
    assert made.items.groupby("customer_id").size().tolist() == [4, 4, 4]


def test_below_the_value_threshold_nothing_is_sent() -> None:
    frame = customers(1)
    made = run(frame, [campaign()], config=PlannerConfig(value_threshold=5.0))

    assert outcome_of(made, 1, "winback") == ("suppressed", "below_threshold")


def test_fatigue_grows_with_recent_emails() -> None:
    frame = customers(2)
    history = pd.DataFrame(
        {"customer_id": [1], "campaign": ["other"], "send_at": [AS_OF - timedelta(1)]}
    )

    made = run(frame, [campaign()], history=history)

    values = made.decisions.set_index("customer_id")["expected_value"]
    assert values[1] == pytest.approx(values[2] - 0.25)


def test_caps_count_earlier_sends() -> None:
    frame = customers(4, max_emails_per_week=[np.nan, np.nan, 1.0, np.nan])
    day = timedelta(days=1)
    history = pd.DataFrame(
        {
            "customer_id": [1, 1, 2, 3, 4],
            "campaign": ["x", "y", "winback", "x", "x"],
            "send_at": [AS_OF - d * day for d in (1, 2, 20, 1, 9)],
        }
    )
    capped = campaign(caps=[{"max": 1, "days": 30}])

    made = run(frame, [capped], history=history)
    details = made.decisions.set_index("customer_id")["detail"]

    assert outcome_of(made, 1, "winback") == ("suppressed", "cap")
    assert "global cap 2" in details[1]
    assert outcome_of(made, 2, "winback") == ("suppressed", "cap")
    assert "campaign cap" in details[2]
    assert outcome_of(made, 3, "winback") == ("suppressed", "cap")
    assert "own limit" in details[3]
    assert outcome_of(made, 4, "winback")[0] == "chosen"


def test_planning_again_within_the_horizon_sends_nothing_twice() -> None:
    frame = customers(2)
    history = pd.DataFrame(
        {
            "customer_id": [1],
            "campaign": ["winback"],
            "send_at": [AS_OF + timedelta(hours=10)],  # planned, still to go
        }
    )

    made = run(frame, [campaign()], history=history)

    assert outcome_of(made, 1, "winback") == ("suppressed", "cap")
    assert made.decisions.set_index("customer_id")["detail"][1] == (
        "already planned in the last 24 hours"
    )
    assert outcome_of(made, 2, "winback")[0] == "chosen"


def test_consent_and_unsubscribes_are_reasons() -> None:
    frame = customers(
        3,
        accepts_marketing=[False, True, True],
        unsubscribed_at=[None, datetime(2026, 1, 1), None],
        has_email=[True, True, False],
    )
    made = run(frame, [campaign()])

    assert outcome_of(made, 1, "winback") == ("suppressed", "no_consent")
    assert outcome_of(made, 2, "winback") == ("suppressed", "unsubscribed")
    assert outcome_of(made, 3, "winback") == ("suppressed", "no_address")


def test_only_due_campaigns_take_part_unless_named() -> None:
    frame = customers(1)
    weekly = campaign("weekly", trigger={"schedule": "0 10 * * fri"})

    skipped = run(frame, [weekly])
    named = run(frame, [weekly], forced=frozenset({"weekly"}))

    assert skipped.decisions.empty
    assert skipped.due[0].note.startswith("not due; next Fri 2026-12-04 10:00")
    assert outcome_of(named, 1, "weekly")[0] == "chosen"


def test_disabled_campaigns_are_skipped() -> None:
    made = run(customers(1), [campaign(enabled=False)])

    assert made.decisions.empty
    assert made.due[0].note == "disabled"


def test_events_trigger_after_their_delay_and_dedupe() -> None:
    frame = customers(4)
    after_order = campaign(
        "cross_sell",
        trigger={"event": "order_placed", "delay": "2d", "dedupe": "14d"},
    )
    events = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "event": ["order_placed", "order_placed", "cart_abandoned", "order_placed"],
            "occurred_at": [
                AS_OF - timedelta(days=2, hours=3),  # due 3 hours ago: catch up
                AS_OF - timedelta(days=10),  # long past
                AS_OF - timedelta(days=2),  # another event
                AS_OF - timedelta(days=1, hours=20),  # due in 4 hours
            ],
        }
    )
    history = pd.DataFrame(
        {
            "customer_id": [4],
            "campaign": ["cross_sell"],
            "send_at": [AS_OF - timedelta(days=5)],
        }
    )

    made = run(frame, [after_order], events=events, history=history)
    rows = made.decisions.set_index("customer_id")

    assert sorted(rows.index) == [1, 4]
    assert rows.loc[1, "send_at"] == pd.Timestamp(AS_OF)
    assert rows.loc[4, "outcome"] == "suppressed"
    assert rows.loc[4, "detail"] == "dedupe window of 14d"


def test_a_new_product_concerns_the_whole_audience() -> None:
    frame = customers(3)
    arrivals = campaign("arrivals", trigger={"event": "product_added", "delay": "1h"})
    events = pd.DataFrame(
        {
            "customer_id": [None],
            "event": ["product_added"],
            "occurred_at": [AS_OF - timedelta(hours=5)],
        }
    )

    made = run(frame, [arrivals], events=events)

    assert (made.decisions["outcome"] == "chosen").sum() == 3


def test_variants_split_the_winners() -> None:
    frame = customers(400)
    two = campaign(
        variants=[{"name": "a", "subject": "A"}, {"name": "b", "subject": "B"}]
    )

    made = run(frame, [two])
    split = made.summaries()[0].variants

    assert set(split) == {"a", "b"}
    assert 150 < split["a"] < 250


def test_summaries_count_everything() -> None:
    frame = customers(10, accepts_marketing=[False] * 3 + [True] * 7)
    made = run(frame, [campaign(holdout=0.3)])
    summary = made.summaries()[0]

    assert summary.audience == 10
    assert summary.suppressed["no_consent"] == 3
    assert summary.chosen + summary.deferred + summary.holdout == 7
    assert summary.as_json()["campaign"] == "winback"


def test_an_empty_plan() -> None:
    made = run(customers(0), [campaign()])

    assert made.decisions.empty
    assert made.summaries()[0].audience == 0
