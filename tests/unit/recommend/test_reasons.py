"""Reasons: machine codes and the sentences templates show."""

from __future__ import annotations

import numpy as np

from nudge.recommend import RecommendConfig, make_strategy
from nudge.recommend.reasons import CODE, CODES, TEMPLATES, display_title, sentences
from tests.unit.recommend.tiny import tiny_data


def test_shouting_titles_are_calmed_and_others_kept() -> None:
    assert display_title("WHITE HANGING HEART T-LIGHT HOLDER") == (
        "White Hanging Heart T-light Holder"
    )
    assert display_title("SET OF 3 CAKE TINS") == "Set of 3 Cake Tins"
    assert display_title("Blue Mug") == "Blue Mug"
    assert display_title("  ") is None
    assert display_title(None) is None


def test_sentences_name_the_evidence_and_the_category() -> None:
    codes = np.array(
        [
            CODE["because_you_bought"],
            CODE["trending_in_category"],
            CODE["new_in_category"],
        ],
        dtype=np.int16,
    )
    assert sentences(codes, ["Blue Mug", None, None], [None, "Kitchen", "Candles"]) == [
        "Because you bought Blue Mug",
        "Popular in Kitchen this week",
        "New in Candles, a category you like",
    ]


def test_a_missing_name_falls_back_to_a_sentence_without_it() -> None:
    codes = np.array(
        [CODE["because_you_bought"], CODE["trending_in_category"]], np.int16
    )
    assert sentences(codes, [None, None], [None, None]) == [
        TEMPLATES["because_you_bought"][1],
        "Popular this week",
    ]


def test_templates_can_be_replaced() -> None:
    codes = np.array([CODE["bought_together"]], dtype=np.int16)
    own = {"bought_together": ("Goes well with {evidence}", "Goes well together")}
    assert sentences(codes, ["Tea"], [None], own) == ["Goes well with Tea"]


def test_every_code_has_both_sentences() -> None:
    for code in CODES:
        full, fallback = TEMPLATES[code]
        assert full and fallback
        assert "{" not in fallback


def test_every_listed_product_carries_a_code_and_a_sentence() -> None:
    data = tiny_data()
    config = RecommendConfig(als={"factors": 4, "iterations": 3})
    items = make_strategy("blend", config).fit(data).recommend([1, 2, 3, 99], 6).items
    assert items["reason"].isin(CODES).all()
    assert items["reason_text"].str.len().gt(0).all()
    because = items[items["reason"].isin(["because_you_bought", "bought_together"])]
    named = because[because["evidence_id"].notna()]
    assert (
        named["reason_text"].str.contains("Blue Mug|Oak Bowl|Fig Candle|Tea").any()
        or named.empty
    )
    # A "because you bought" names a product the customer really bought.
    rows = data.rows_of(named["customer_id"])
    evidence = data.items_of(named["evidence_id"].astype(int))
    assert data.is_bought(rows, evidence).all()
