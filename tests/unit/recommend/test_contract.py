"""The contract every recommender passes: each strategy and the blend."""

from __future__ import annotations

import pickle
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from nudge.recommend import (
    NAMES,
    Interactions,
    NotFittedError,
    RecommendConfig,
    Strategy,
    build_interactions,
    make_strategy,
)
from nudge.recommend.base import ITEM_COLUMNS
from nudge.recommend.config import SOURCES
from nudge.recommend.reasons import CODES
from tests.unit.recommend.conftest import AS_OF

EVERY = [name for name in NAMES if name != "auto"]
# Strategies that know nothing of a customer without history.
PERSONAL = {"most_bought", "buy_again", "co_purchase", "item_knn", "als", "content"}
CONFIG = RecommendConfig(als={"factors": 8, "iterations": 5})


def build(
    frames: dict[str, pd.DataFrame], lines: pd.DataFrame | None = None
) -> Interactions:
    return build_interactions(
        frames["lines"] if lines is None else lines,
        frames["products"],
        AS_OF,
        events=frames["events"],
        customers=frames["customers"],
    )


@pytest.fixture(scope="module")
def data(frames: dict[str, pd.DataFrame]) -> Interactions:
    return build(frames)


@pytest.fixture(scope="module")
def fitted(data: Interactions) -> dict[str, Strategy]:
    return {name: make_strategy(name, CONFIG).fit(data) for name in EVERY}


@pytest.mark.parametrize("name", EVERY)
class TestRecommenderContract:
    """Shapes, as-of correctness, determinism and bad input, for every strategy."""

    def test_fit_returns_the_fitted_model(self, name: str, data: Interactions) -> None:
        model = make_strategy(name, CONFIG)
        assert not model.fitted
        assert model.fit(data) is model
        assert model.fitted

    def test_lists_have_the_documented_shape(
        self, name: str, fitted: dict[str, Strategy], data: Interactions
    ) -> None:
        customers = data.customers[:40].tolist()
        lists = fitted[name].recommend(customers, 5)
        items = lists.items
        assert list(items.columns) == list(ITEM_COLUMNS)
        assert set(items["customer_id"]) <= set(customers)
        assert items.groupby("customer_id").size().max() <= 5
        assert set(items["product_id"]) <= set(data.products)
        assert set(items["reason"]) <= set(CODES)
        assert set(items["strategy"]) <= set(SOURCES)
        assert items["reason_text"].str.len().min() > 0
        for _, one in items.groupby("customer_id"):
            assert one["rank"].tolist() == list(range(1, len(one) + 1))
            assert one["score"].is_monotonic_decreasing
            assert one["product_id"].is_unique
        listed = set(items["customer_id"]) | set(lists.skipped["customer_id"])
        assert listed == set(customers)

    def test_later_purchases_never_change_a_list(
        self, name: str, frames: dict[str, pd.DataFrame], data: Interactions
    ) -> None:
        lines = frames["lines"]
        earlier = lines[lines["ordered_at"] < AS_OF]
        # A burst of purchases just after as_of, by the same customers.
        burst = earlier.tail(200).assign(
            ordered_at=AS_OF + timedelta(seconds=1), order_id=10**9
        )
        later = pd.concat([lines, burst], ignore_index=True)
        customers = data.customers[:60].tolist()
        expected = make_strategy(name, CONFIG).fit(build(frames, earlier))
        actual = make_strategy(name, CONFIG).fit(build(frames, later))
        pd.testing.assert_frame_equal(
            expected.recommend(customers, 8).items,
            actual.recommend(customers, 8).items,
        )

    def test_the_same_seed_gives_the_same_lists(
        self, name: str, data: Interactions
    ) -> None:
        customers = data.customers[:60].tolist()
        first = make_strategy(name, CONFIG).fit(data).recommend(customers, 8)
        second = make_strategy(name, CONFIG).fit(data).recommend(customers, 8)
        pd.testing.assert_frame_equal(first.items, second.items)

    def test_unknown_customers_get_a_reason_not_an_error(
        self, name: str, fitted: dict[str, Strategy], data: Interactions
    ) -> None:
        known = data.customers[0]
        lists = fitted[name].recommend([-7, known, "nobody"], 5)
        if name in PERSONAL:
            skipped = lists.skipped.set_index("customer_id")["reason"]
            assert skipped[-7] == "customer unknown to the model"
            assert skipped["nobody"] == "customer unknown to the model"
            assert set(lists.items["customer_id"]) <= {known}
        else:
            # Popularity, new arrivals and the blend serve newcomers too.
            assert {-7, "nobody"} <= set(lists.items["customer_id"])

    def test_excluding_purchases_leaves_only_new_products(
        self, name: str, fitted: dict[str, Strategy], data: Interactions
    ) -> None:
        customers = data.customers[:60].tolist()
        items = fitted[name].recommend(customers, 8, exclude_purchased=True).items
        rows = data.rows_of(items["customer_id"])
        columns = data.items_of(items["product_id"])
        assert not data.is_bought(rows, columns).any()

    def test_a_saved_model_reloads_with_the_same_lists(
        self, name: str, fitted: dict[str, Strategy], data: Interactions
    ) -> None:
        customers = data.customers[:30].tolist()
        copy = pickle.loads(pickle.dumps(fitted[name])).attach(data)
        pd.testing.assert_frame_equal(
            fitted[name].recommend(customers, 6).items,
            copy.recommend(customers, 6).items,
        )

    def test_an_unfitted_model_says_so(self, name: str) -> None:
        with pytest.raises(NotFittedError, match="not fitted"):
            make_strategy(name, CONFIG).recommend([1], 3)

    def test_an_empty_catalog_gives_reasons_not_errors(
        self, name: str, frames: dict[str, pd.DataFrame]
    ) -> None:
        empty = frames["products"].iloc[:0]
        data = build_interactions(frames["lines"], empty, AS_OF)
        lists = make_strategy(name, CONFIG).fit(data).recommend([1, 2, 3], 5)
        assert lists.items.empty
        assert len(lists.skipped) == 3

    def test_no_customer_at_all_is_handled(self, name: str) -> None:
        model = make_strategy(name, CONFIG)
        lists = model.fit(
            build_interactions(
                pd.DataFrame(
                    {
                        "order_id": pd.Series([], dtype=np.int64),
                        "customer_id": pd.Series([], dtype=np.int64),
                        "ordered_at": pd.Series([], dtype="datetime64[us]"),
                        "product_id": pd.Series([], dtype=np.int64),
                        "quantity": pd.Series([], dtype=np.int64),
                    }
                ),
                pd.DataFrame({"id": [1, 2], "external_id": ["a", "b"]}),
                AS_OF,
            )
        ).recommend([5], 3)
        assert len(lists.items) + len(lists.skipped) >= 1
