"""The audience language: parsing, checks with positions, vectorised evaluation."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from nudge.campaigns.audience import (
    FIELDS,
    Audience,
    AudienceError,
    audience_frame,
    split_list,
)

AS_OF = datetime(2026, 11, 30)


@pytest.fixture
def frame() -> pd.DataFrame:
    """Four customers: two profiled, one prospect, one unsubscribed."""
    customers = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "external_id": ["a", "b", "c", "d"],
            "country": ["GB", "IE", None, "GB"],
            "timezone": ["Europe/London", None, None, "Europe/Dublin"],
            "accepts_marketing": [True, True, False, True],
            "unsubscribed_at": [None, None, None, datetime(2026, 1, 1)],
            "favourite_categories": ["Candles|Tea", "", None, "Tea"],
            "max_emails_per_week": [None, 1, None, None],
            "has_email": [True, True, True, False],
        }
    )
    profiles = pd.DataFrame(
        {
            "customer_id": [1, 2, 4],
            "stage": ["at_risk", "active", "churned"],
            "segment": ["at_risk", "champions", "lost"],
            "churn_band": ["high", "low", "high"],
            "churn_risk": [0.8, 0.1, 0.95],
            "p_alive": [0.2, 0.9, 0.05],
            "clv": [50.0, 300.0, 5.0],
            "orders": [3, 10, 1],
            "frequency": [2, 8, 1],
            "monetary": [90.0, 800.0, 12.0],
            "avg_order_value": [30.0, 80.0, 12.0],
            "first_order_at": [datetime(2025, 1, 1)] * 3,
            "last_order_at": [
                datetime(2026, 6, 1),
                datetime(2026, 11, 20),
                datetime(2025, 1, 1),
            ],
            "expected_next_order_at": [None, datetime(2026, 12, 5), None],
            "affinities": [
                {"category": {"Candles": 0.7, "Tea": 0.3}, "price_band": {"mid": 1.0}},
                {"category": {"Kitchen": 1.0}, "brand": {"Oak": 1.0}},
                {},
            ],
        }
    )
    return audience_frame(profiles, customers, AS_OF)


def members(frame: pd.DataFrame, text: str) -> list[str]:
    """Return the external ids an expression selects."""
    return frame.loc[Audience.parse(text).matches(frame), "external_id"].tolist()


def test_the_frame_has_every_field_and_prospects(frame: pd.DataFrame) -> None:
    assert set(FIELDS) <= set(frame.columns)
    prospect = frame.set_index("external_id").loc["c"]
    assert prospect["stage"] == "prospect"
    assert prospect["orders"] == 0
    assert np.isnan(prospect["days_since_last_order"])
    assert frame["days_until_next_order"].tolist()[1] == 5.0
    assert frame["consent"].tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stage = at_risk", ["a"]),
        ("stage in [at_risk, churned]", ["a", "d"]),
        ("stage not in [at_risk, churned]", ["b", "c"]),
        ("stage = prospect", ["c"]),
        ("clv >= 50 and churn_band = high", ["a"]),
        ("clv > 100 or days_since_last_order > 365", ["b", "d"]),
        ("not (clv > 100)", ["a", "c", "d"]),
        ("orders >= 0", ["a", "b", "c", "d"]),
        ("orders in [1, 3]", ["a", "d"]),
        ("days_until_next_order <= 7", ["b"]),
        ("days_until_next_order != 3", ["b"]),
        ("consent", ["a", "b"]),
        ("consent = false", ["c", "d"]),
        ("favourite_categories has Tea", ["a", "d"]),
        ("favourite_categories has [Candles, Kitchen]", ["a"]),
        ("favourite_categories", ["a", "d"]),
        ("affinity_categories has Kitchen", ["b"]),
        ("affinity_brands has 'Oak'", ["b"]),
        ("affinity_price_bands has mid", ["a"]),
        ("top_category = Candles", ["a"]),
        ("country = GB AND segment != lost", ["a"]),
        ("max_emails_per_week = 1", ["b"]),
        ('country = "IE"', ["b"]),
    ],
)
def test_expressions_select_the_right_customers(
    frame: pd.DataFrame, text: str, expected: list[str]
) -> None:
    assert members(frame, text) == expected


def test_and_binds_tighter_than_or(frame: pd.DataFrame) -> None:
    assert members(frame, "stage = active or stage = churned and clv > 100") == ["b"]
    assert members(frame, "(stage = active or stage = churned) and clv > 1") == [
        "b",
        "d",
    ]


def test_fields_lists_what_an_expression_reads() -> None:
    parsed = Audience.parse("stage = new or not (clv > 3 and consent)")
    assert parsed.fields == {"stage", "clv", "consent"}


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("stag = new", "unknown field 'stag'", 1),
        ("stage > new", "operator '>' does not apply to text field stage", 7),
        ("stage = at-risk", "unknown stage 'at-risk'", 9),
        ("clv >= lots", "clv compares with numbers", 8),
        ("clv in 3", "in needs a list", 8),
        ("stage = [new]", "compares with one value, not a list", 9),
        ("clv", "clv needs an operator", 4),
        ("clv > 3 and", "expected a field name, found the end", 12),
        ("clv > 3 stage = new", "expected 'and', 'or' or the end", 9),
        ("(clv > 3", "expected ')', found the end", 9),
        ("stage in [new, active", "expected ',' or ']'", 22),
        ("consent = yes", "consent is true or false", 11),
        ("affinity_price_bands has cheap", "unknown affinity_price_bands", 26),
        ("country = 'GB", "quote is never closed", 11),
        ("clv % 3", "unexpected character '%'", 5),
        ("", "the audience is empty", 1),
    ],
)
def test_bad_expressions_say_what_and_where(
    text: str, message: str, column: int
) -> None:
    with pytest.raises(AudienceError) as caught:
        Audience.parse(text)

    assert message in str(caught.value)
    assert caught.value.column == column


def test_lists_split_on_common_separators() -> None:
    assert split_list("Candles | Tea;Kitchen, Garden") == {
        "Candles",
        "Tea",
        "Kitchen",
        "Garden",
    }
    assert split_list(None) == frozenset()
    assert split_list("  ") == frozenset()


def test_evaluation_is_vectorised_over_many_customers() -> None:
    n = 50_000
    frame = pd.DataFrame(
        {
            "clv": np.linspace(0, 100, n),
            "stage": np.where(np.arange(n) % 2, "active", "churned"),
            "favourite_categories": [frozenset({"Tea"})] * n,
        }
    )
    parsed = Audience.parse("clv > 50 and stage = active and favourite_categories")

    assert int(parsed.matches(frame).sum()) == n // 4
