"""Business rules: filters, boosts, pins, fills, caps and the minimum length."""

from __future__ import annotations

import pandas as pd
import pytest

from nudge.recommend import RulesConfig, make_strategy
from nudge.recommend.rules import Rules
from tests.unit.recommend.tiny import tiny_data

CUSTOMERS = [1, 2, 3, 4, 5, 6]


def lists(
    rules: RulesConfig,
    *,
    strategy: str = "best_sellers",
    n: int = 5,
    exclude_purchased: bool = False,
    **data_options: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    data = tiny_data(**data_options)
    model = make_strategy(strategy).fit(data)
    result = model.recommend(
        CUSTOMERS, n, rules=rules, exclude_purchased=exclude_purchased
    )
    return result.items, result.skipped


def test_out_of_stock_and_imageless_products_are_never_listed() -> None:
    items, skipped = lists(RulesConfig())
    assert skipped.empty
    assert not {3, 4} & set(items["product_id"])  # A3 out of stock, A4 no image


def test_a_rule_on_a_field_the_catalog_lacks_is_skipped_with_a_note() -> None:
    data = tiny_data(images=False, stock=False)
    rules = Rules(RulesConfig(), data)
    assert any(note.startswith("require_image") for note in rules.notes)
    assert any(note.startswith("exclude_out_of_stock") for note in rules.notes)
    assert rules.allowed.all()
    items, skipped = lists(RulesConfig(), images=False, stock=False)
    assert skipped.empty
    assert items.groupby("customer_id").size().min() == 5


def test_price_band_and_category_and_brand_filters() -> None:
    items, _ = lists(RulesConfig(min_price=6, max_price=25))
    assert set(items["product_id"]) <= {1, 2, 6}
    items, _ = lists(RulesConfig(include_categories=("Candles",)))
    assert set(items["product_id"]) <= {7}  # A3 out of stock, A4 imageless
    items, _ = lists(RulesConfig(exclude_brands=("Oak", "Maple")))
    assert set(items["product_id"]) <= {7}


def test_a_rule_that_would_remove_every_product_is_skipped() -> None:
    data = tiny_data()
    rules = Rules(RulesConfig(include_categories=("Garden",)), data)
    assert any("remove every product" in note for note in rules.notes)
    items, skipped = lists(RulesConfig(include_categories=("Garden",)))
    assert skipped.empty and not items.empty


def test_at_most_max_per_category_products_of_a_category() -> None:
    rules = RulesConfig(max_per_category=1, require_image=False, min_items=1)
    items, _ = lists(rules, n=5)
    categories = items["product_id"].map(
        {1: "K", 2: "K", 3: "C", 4: "C", 5: "K", 6: "K", 7: "C", 8: "K"}
    )
    per_category = items.assign(c=categories).groupby(["customer_id", "c"]).size()
    assert per_category.max() == 1
    assert items.groupby("customer_id").size().max() == 2
    # Two categories cannot make the default minimum of three products.
    _, skipped = lists(RulesConfig(max_per_category=1, require_image=False), n=5)
    assert len(skipped) == len(CUSTOMERS)


def test_pinned_products_come_first() -> None:
    items, _ = lists(RulesConfig(pinned=("A8", "A4", "nope")))
    first = items[items["rank"] == 1]
    assert (first["product_id"] == 8).all()
    assert (first["reason"] == "pinned").all()
    assert (first["strategy"] == "pinned").all()
    assert 4 not in set(items["product_id"])  # pinned but without an image


def test_short_lists_are_filled_with_best_sellers() -> None:
    items, skipped = lists(RulesConfig(), strategy="most_bought", n=4)
    assert skipped.empty
    four = items[items["customer_id"] == 4]  # bought only A1
    assert len(four) == 4
    assert four.iloc[0]["strategy"] == "most_bought"
    assert set(four.iloc[1:]["strategy"]) == {"best_sellers"}
    assert set(four.iloc[1:]["reason"]) == {"best_seller"}


def test_lists_below_the_minimum_are_skipped_with_a_reason() -> None:
    rules = RulesConfig(fill=False, min_items=3)
    _, skipped = lists(rules, strategy="most_bought")
    reasons = skipped.set_index("customer_id")["reason"]
    assert reasons[4] == "only 1 products left after the rules (minimum 3)"
    _, skipped = lists(RulesConfig(), exclude_purchased=True, strategy="best_sellers")
    reasons = skipped.set_index("customer_id")["reason"]
    # Customer 5 bought every product: nothing new is left for them.
    assert reasons[5] == "every candidate removed by the rules"


def test_new_products_can_be_boosted_and_margins_need_a_field() -> None:
    items, _ = lists(RulesConfig(new_boost=50.0))
    firsts = items[items["rank"] == 1]["product_id"]
    assert (firsts == 7).all()
    rules = Rules(RulesConfig(margin_boost=1.0), tiny_data())
    assert rules.boost is None
    assert any(note.startswith("margin_boost") for note in rules.notes)


def test_past_purchases_are_kept_only_when_due() -> None:
    keep, _ = lists(RulesConfig(purchased="keep"), strategy="most_bought")
    due, _ = lists(
        RulesConfig(purchased="unless_due", fill=False, min_items=1),
        strategy="most_bought",
    )
    gone, _ = lists(RulesConfig(purchased="exclude"), strategy="most_bought")
    assert 1 in set(keep.loc[keep["customer_id"] == 1, "product_id"])
    # Customer 1 buys A1 every 30 days and last bought it 30 days ago: due.
    assert 1 in set(due.loc[due["customer_id"] == 1, "product_id"])
    # Customer 4 bought A1 once, 15 days ago, with no known rhythm: not due.
    assert 4 not in set(due["customer_id"])
    rows = tiny_data().rows_of(gone["customer_id"])
    columns = tiny_data().items_of(gone["product_id"])
    assert not tiny_data().is_bought(rows, columns).any()


@pytest.mark.parametrize("strategy", ["blend", "als", "content", "new_arrivals"])
def test_every_strategy_survives_rules_that_filter_everything(strategy: str) -> None:
    items, skipped = lists(
        RulesConfig(max_price=1.0), strategy=strategy, exclude_purchased=True
    )
    # A price band no product meets is skipped, never emptying every list.
    assert len(items) + len(skipped) > 0
