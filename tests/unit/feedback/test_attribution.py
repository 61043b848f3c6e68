"""Last-touch attribution on hand-built frames, outcomes, and uplift intervals."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nudge.errors import ConfigError
from nudge.feedback.attribution import (
    ALL_VARIANTS,
    NOT_YET,
    SIGNIFICANT,
    attribute,
    effects,
    mean_difference,
    outcomes,
    rate_difference,
    recipients,
)
from nudge.feedback.config import FeedbackConfig
from nudge.settings import load_settings

T = datetime(2026, 6, 10, 12, 0)
DAY = timedelta(days=1)
WINDOWS = {"click_window": 5 * DAY, "open_window": DAY}


def orders(*rows: tuple[int, int, datetime, float]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["order_id", "customer_id", "ordered_at", "revenue"]
    )


def touches(*rows: tuple[int, int, str, datetime, bool]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=["send_id", "customer_id", "kind", "occurred_at", "machine_open"],
    )


def credited(frame: pd.DataFrame) -> dict[int, tuple[int, str]]:
    return {
        int(r.order_id): (int(r.send_id), str(r.touch))
        for r in frame.itertuples(index=False)
    }


# ------------------------------------------------------------------ last touch


def test_a_click_beats_a_later_human_open() -> None:
    found = attribute(
        orders((1, 7, T, 40.0)),
        touches(
            (10, 7, "click", T - 3 * DAY, False),
            (11, 7, "open", T - timedelta(hours=2), False),
        ),
        **WINDOWS,
    )
    assert credited(found) == {1: (10, "click")}
    assert found.loc[0, "revenue"] == 40.0
    assert found.loc[0, "touched_at"] == pd.Timestamp(T - 3 * DAY)


def test_the_last_click_before_the_order_wins() -> None:
    found = attribute(
        orders((1, 7, T, 40.0)),
        touches(
            (10, 7, "click", T - 4 * DAY, False),
            (11, 7, "click", T - DAY, False),
            (12, 7, "click", T + timedelta(minutes=5), False),
        ),
        **WINDOWS,
    )
    assert credited(found) == {1: (11, "click")}


def test_windows_bound_clicks_and_opens() -> None:
    found = attribute(
        orders(
            (1, 1, T, 10.0),  # click 6 days before: too old
            (2, 2, T, 20.0),  # human open 30 hours before: too old
            (3, 3, T, 30.0),  # human open 20 hours before
            (4, 4, T, 40.0),  # click exactly 5 days before: still inside
        ),
        touches(
            (10, 1, "click", T - 6 * DAY, False),
            (20, 2, "open", T - timedelta(hours=30), False),
            (30, 3, "open", T - timedelta(hours=20), False),
            (40, 4, "click", T - 5 * DAY, False),
        ),
        **WINDOWS,
    )
    assert credited(found) == {3: (30, "open"), 4: (40, "click")}


def test_machine_opens_are_never_credited() -> None:
    found = attribute(
        orders((1, 7, T, 40.0)),
        touches(
            (10, 7, "open", T - timedelta(hours=1), True),
            (11, 7, "open", T - timedelta(hours=3), False),
        ),
        **WINDOWS,
    )
    assert credited(found) == {1: (11, "open")}

    alone = attribute(
        orders((1, 7, T, 40.0)),
        touches((10, 7, "open", T - timedelta(hours=1), True)),
        **WINDOWS,
    )
    assert alone.empty


def test_each_order_goes_to_one_send_of_its_own_customer() -> None:
    found = attribute(
        orders((1, 7, T, 40.0), (2, 7, T + DAY, 15.0), (3, 8, T, 99.0)),
        touches(
            (10, 7, "click", T - DAY, False),
            (11, 7, "click", T - DAY, False),  # same moment: the later send
            (20, 9, "click", T - DAY, False),  # another customer's click
            (12, 7, "open", T - timedelta(hours=1), False),
            (13, 7, "unsubscribe", T - timedelta(minutes=1), False),
        ),
        **WINDOWS,
    )
    assert credited(found) == {1: (11, "click"), 2: (11, "click")}
    assert found["order_id"].is_unique


def test_nothing_to_attribute_gives_an_empty_frame() -> None:
    assert attribute(orders(), touches((1, 1, "click", T, False)), **WINDOWS).empty
    assert attribute(orders((1, 1, T, 5.0)), touches(), **WINDOWS).empty


# ------------------------------------------------------------------ outcomes


def sends(*rows: tuple[int, int, str, str, int, bool, str, datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=[
            "send_id",
            "plan_run_id",
            "campaign",
            "variant",
            "customer_id",
            "holdout",
            "status",
            "due_at",
        ],
    )


def test_recipients_keep_delivered_sends_and_controls_of_runs_that_went_out() -> None:
    ledger = sends(
        (1, 1, "winback", "a", 1, False, "accepted", T),
        (2, 1, "winback", "a", 2, False, "failed", T),
        (3, 1, "winback", "a", 3, True, "suppressed", T),
        (4, 1, "winback", "a", 4, True, "suppressed", T + 2 * DAY),  # not due yet
        (5, 2, "winback", "a", 5, True, "suppressed", T),  # run 2 never went out
        (6, 2, "winback", "a", 6, False, "planned", T),
    )
    kept = recipients(ledger, now=T + DAY)
    assert kept["send_id"].tolist() == [1, 3]


def test_outcomes_count_orders_in_the_window_after_the_send_time() -> None:
    ledger = sends(
        (1, 1, "winback", "a", 1, False, "accepted", T),
        (2, 1, "winback", "a", 2, True, "suppressed", T),
        (3, 1, "winback", "a", 3, False, "accepted", T),
    )
    found = outcomes(
        ledger,
        orders(
            (1, 1, T - timedelta(hours=1), 100.0),  # before the send
            (2, 1, T + DAY, 30.0),
            (3, 1, T + 2 * DAY, 20.0),
            (4, 2, T + 4 * DAY, 12.5),  # the control customer, inside
            (5, 3, T + 5 * DAY, 70.0),  # the window's end is excluded
        ),
        window=5 * DAY,
    )
    by_send = found.set_index("send_id")
    assert by_send["orders"].to_dict() == {1: 2, 2: 1, 3: 0}
    assert by_send["revenue"].to_dict() == {1: 50.0, 2: 12.5, 3: 0.0}
    assert by_send["converted"].to_dict() == {1: True, 2: True, 3: False}


# ------------------------------------------------------------------ intervals


def test_rate_difference_matches_newcombes_published_intervals() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
    shown = rate_difference(56, 70, 48, 80, 0.95)
    assert shown.estimate == pytest.approx(0.2)
    assert (shown.low, shown.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    none = rate_difference(0, 10, 0, 20, 0.95)
    assert (none.low, none.high) == pytest.approx((-0.1611, 0.2775), abs=1e-4)


def test_mean_difference_is_repeatable_and_centred_on_the_observed_difference() -> None:
    data = np.random.default_rng(1)
    a = data.exponential(20, 500) * (data.random(500) < 0.3)
    b = data.exponential(20, 400) * (data.random(400) < 0.1)
    first = mean_difference(
        a, b, confidence=0.95, resamples=2000, rng=np.random.default_rng(5)
    )
    again = mean_difference(
        a, b, confidence=0.95, resamples=2000, rng=np.random.default_rng(5)
    )
    assert first == again
    assert first.estimate == pytest.approx(a.mean() - b.mean())
    assert first.low < first.estimate < first.high

    # The interval agrees with a normal approximation on a sample this large.
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert first.high - first.low == pytest.approx(2 * 1.96 * se, rel=0.1)


def synthetic(
    treated_rate: float, control_rate: float, seed: int, n: int = 3000
) -> pd.DataFrame:
    """Recipients of one campaign, 20% in holdout, buying at the given rates."""
    data = np.random.default_rng(seed)
    holdout = data.random(n) < 0.2
    rate = np.where(holdout, control_rate, treated_rate)
    converted = data.random(n) < rate
    return pd.DataFrame(
        {
            "campaign": "winback",
            "variant": np.where(data.random(n) < 0.5, "a", "b"),
            "holdout": holdout,
            "converted": converted,
            "revenue": np.where(converted, data.gamma(2.0, 25.0, n), 0.0),
        }
    )


def test_a_real_effect_is_positive_and_significant() -> None:
    found = effects(synthetic(0.12, 0.04, seed=11), FeedbackConfig())
    whole = found[0]
    assert (whole.campaign, whole.variant) == ("winback", ALL_VARIANTS)
    assert [e.variant for e in found] == [ALL_VARIANTS, "a", "b"]
    assert whole.treated + whole.control == 3000
    assert whole.verdict == SIGNIFICANT
    assert whole.conversion_verdict == SIGNIFICANT
    assert 0 < whole.conversion_uplift.low < 0.08 < whole.conversion_uplift.high
    assert whole.revenue_uplift.low > 0
    assert whole.incremental_revenue.estimate == pytest.approx(
        whole.revenue_uplift.estimate * whole.treated
    )
    assert whole.treated_rate == pytest.approx(
        whole.treated_conversions / whole.treated
    )
    # The same data and seed give the same interval.
    assert effects(synthetic(0.12, 0.04, seed=11), FeedbackConfig())[0] == whole


def test_no_effect_is_not_yet_significant() -> None:
    whole = effects(synthetic(0.06, 0.06, seed=12), FeedbackConfig())[0]
    assert whole.verdict == NOT_YET
    assert whole.conversion_verdict == NOT_YET
    assert whole.revenue_uplift.low < 0 < whole.revenue_uplift.high
    assert whole.conversion_uplift.low < 0 < whole.conversion_uplift.high
    assert whole.note == ""


def test_a_holdout_too_small_is_said_so() -> None:
    frame = synthetic(0.5, 0.0, seed=13, n=200)
    frame.loc[frame.index[:190], "holdout"] = False
    frame.loc[frame.index[190:], "holdout"] = True
    whole = effects(frame, FeedbackConfig(min_holdout=30))[0]
    assert whole.control == 10
    assert whole.verdict == NOT_YET
    assert whole.note == "holdout too small: 10 recipients, at least 30 needed"
    assert whole.as_json()["note"] == whole.note


# ------------------------------------------------------------------ settings


def test_windows_come_from_the_feedback_table(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "nudge.toml").write_text(
        "[feedback]\nclick_window_days = 3\nmin_holdout = 100\n", encoding="utf-8"
    )
    env = {"NUDGE_FEEDBACK_OPEN_WINDOW_DAYS": "0.5"}
    config = FeedbackConfig.from_settings(load_settings(env=env, cwd=tmp_path))
    assert (config.click_window_days, config.open_window_days) == (3.0, 0.5)
    assert config.min_holdout == 100
    assert FeedbackConfig.from_settings(None) == FeedbackConfig()

    (tmp_path / "config" / "nudge.toml").write_text(
        "[feedback]\nclick_window_dayz = 3\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="feedback_click_window_dayz: unknown"):
        load_settings(env={}, cwd=tmp_path)
