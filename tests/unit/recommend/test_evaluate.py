"""Offline metrics on hand-computed cases, and against implicit.evaluation."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from implicit.evaluation import ranking_metrics_at_k
from scipy import sparse

from nudge.recommend import Interactions, RecommendConfig, build_interactions
from nudge.recommend.evaluate import (
    evaluate,
    metrics,
    rank_for,
    truth_of,
    window_truth,
)
from nudge.recommend.ranked import Ranked
from nudge.recommend.strategies import ALS
from tests.unit.recommend.conftest import AS_OF
from tests.unit.recommend.tiny import tiny_data


def lists(rows: list[list[int]]) -> Ranked:
    slots = [slot for slot, items in enumerate(rows) for _ in items]
    items = [item for row in rows for item in row]
    scores = [-rank for row in rows for rank in range(len(row))]
    return Ranked.build(np.array(slots), np.array(items), np.array(scores, float), 0)


def test_metrics_match_a_hand_computed_case() -> None:
    data = tiny_data()  # 8 products; popularity only matters for novelty
    # Customer 0 bought {1, 4}; customer 1 bought {2} and a product no model
    # can name (-1), so their truth has two products.
    truth = truth_of(np.array([0, 0, 3, 3]), np.array([1, 4, 2, -1]), data.n_items)
    ranked = lists([[1, 2, 3, 4], [5, 6, 7, 2]])
    got = metrics(ranked, truth, 3, data)
    # Customer 0: hit at place 1 only (4 is beyond k=3).
    ndcg_0 = 1.0 / (1.0 + 1.0 / math.log2(3))
    map_0 = (1.0 / 1) / 2
    # Customer 1: no hit in the first three.
    assert got["ndcg"] == pytest.approx((ndcg_0 + 0.0) / 2)
    assert got["recall"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["hit_rate"] == pytest.approx(0.5)
    assert got["map"] == pytest.approx(map_0 / 2)
    assert got["coverage"] == pytest.approx(6 / 8)


def test_precision_at_each_hit_makes_map() -> None:
    data = tiny_data()
    truth = truth_of(np.array([0, 0, 0]), np.array([2, 3, 6]), data.n_items)
    got = metrics(lists([[2, 1, 3, 6]]), truth, 4, data)
    assert got["map"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    ideal = sum(1 / math.log2(i + 2) for i in range(3))
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(5)
    assert got["ndcg"] == pytest.approx(dcg / ideal)
    assert got["recall"] == pytest.approx(1.0)


def test_novelty_is_the_mean_surprise_of_listed_products() -> None:
    data = tiny_data()
    truth = truth_of(np.array([0]), np.array([0]), data.n_items)
    got = metrics(lists([[0, 6]]), truth, 2, data)
    buyers = data.item_popularity
    expected = np.mean(
        [-math.log2((buyers[i] + 1) / (data.n_customers + 1)) for i in (0, 6)]
    )
    assert got["novelty"] == pytest.approx(expected)


def _split(frames: dict[str, pd.DataFrame]) -> tuple[Interactions, pd.DataFrame]:
    lines = frames["lines"]
    train = build_interactions(lines, frames["products"], AS_OF)
    return train, lines


def test_ndcg_and_map_agree_with_implicit(frames: dict[str, pd.DataFrame]) -> None:
    train, lines = _split(frames)
    window = window_truth(lines, train, AS_OF, 30, "new")
    # implicit's truth can only hold products the model knows: keep those.
    slots = window.keys // train.n_items
    truth = truth_of(
        window.customers[slots], window.keys % train.n_items, train.n_items
    )
    model = ALS(RecommendConfig().als.model_copy(update={"factors": 8})).fit(train)
    ranked = rank_for(model, truth.customers, 5, exclude_purchased=True)
    ours = metrics(ranked, truth, 5, train)

    slots = truth.keys // train.n_items
    test = sparse.csr_matrix(
        (
            np.ones(len(truth.keys)),
            (truth.customers[slots], truth.keys % train.n_items),
        ),
        shape=(train.n_customers, train.n_items),
    )
    theirs = ranking_metrics_at_k(
        model.model, train.bought.tocsr(), test, K=5, show_progress=False
    )
    assert ours["ndcg"] == pytest.approx(theirs["ndcg"], rel=1e-6)
    assert ours["map"] == pytest.approx(theirs["map"], rel=1e-6)


def test_truth_counts_products_no_model_can_name(
    frames: dict[str, pd.DataFrame],
) -> None:
    train, lines = _split(frames)
    placed = lines[(lines["ordered_at"] < AS_OF) & (lines["status"] == "placed")]
    late = placed.tail(1).assign(
        ordered_at=AS_OF + timedelta(days=1), product_id=10**6, order_id=10**6
    )
    truth = window_truth(pd.concat([lines, late]), train, AS_OF, 30, "all")
    customer = train.rows_of(late["customer_id"])[0]
    slot = int(np.flatnonzero(truth.customers == customer)[0])
    nameable = int((truth.keys // train.n_items == slot).sum())
    assert truth.sizes[slot] == nameable + 1


def test_evaluation_reports_every_strategy_on_both_tasks(
    frames: dict[str, pd.DataFrame],
) -> None:
    config = RecommendConfig(als={"factors": 8, "iterations": 5})
    report = evaluate(
        frames["lines"],
        frames["products"],
        AS_OF,
        config=config,
        events=frames["events"],
        window_days=30,
        k=5,
    )
    table = report.table
    assert set(table["task"]) == {"all", "new"}
    assert len(table) == 2 * 10
    assert table[["ndcg", "recall", "hit_rate", "map"]].ge(0).all().all()
    assert report.protocol["window_days"] == 30
    assert report.protocol["k"] == 5
    own = table[(table["task"] == "new") & (table["strategy"] == "most_bought")]
    assert own["ndcg"].iloc[0] == 0.0  # own purchases are never new
