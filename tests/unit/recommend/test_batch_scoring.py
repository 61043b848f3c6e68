"""Batch scorers give what the per-customer and reference paths give.

Lists are scored a block of customers at a time with vectorised numpy; each
test checks one such path against a plain, obviously correct computation
(a full sort, implicit's own per-customer scorer, a dictionary, a loop).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from structlog.testing import capture_logs

from nudge.logging import configure
from nudge.recommend import (
    Interactions,
    RecommendConfig,
    build_interactions,
    make_strategy,
)
from nudge.recommend.base import _sentences, history_rows
from nudge.recommend.blend import fuse
from nudge.recommend.config import ALSConfig, NewArrivalsConfig
from nudge.recommend.ranked import Ranked, slot_score_order, stable_order
from nudge.recommend.reasons import CODE, CODES, sentences
from nudge.recommend.rules import _present
from nudge.recommend.strategies import ALS, NewArrivals, new_arrivals
from nudge.recommend.strategies.als import GROUPS, factor_top
from nudge.recommend.strategies.neighbours import (
    EVIDENCE_HISTORY,
    explain_by_similarity,
    pair_keys,
    top_history,
)
from tests.unit.recommend.conftest import AS_OF
from tests.unit.recommend.tiny import tiny_data


@pytest.fixture(scope="module")
def data(frames: dict[str, pd.DataFrame]) -> Interactions:
    return build_interactions(
        frames["lines"],
        frames["products"],
        AS_OF,
        events=frames["events"],
        customers=frames["customers"],
    )


def test_factor_top_matches_a_full_sort() -> None:
    rng = np.random.default_rng(5)
    users = rng.standard_normal((70, 6)).astype(np.float32)
    # 203 columns: the grouped search runs (m * GROUPS * 2 <= 203) on padding.
    items_t = rng.standard_normal((6, 203)).astype(np.float32)
    m = 6
    assert 2 * m * GROUPS <= items_t.shape[1]
    mask = rng.random((70, 203)) < 0.2
    # One user may get only three columns: the list is padded.
    mask[0] = True
    mask[0, :3] = False
    banned = sparse.csr_matrix(mask.astype(np.float64))

    columns, scores = factor_top(users, items_t, m, banned)

    full = (users @ items_t).astype(np.float64)
    full[mask] = -np.inf
    expected = np.argsort(-full, axis=1, kind="stable")[:, :m]
    assert np.array_equal(columns[1:], expected[1:])
    assert np.allclose(scores[1:], np.take_along_axis(full, expected, 1)[1:])
    assert columns[0, :3].tolist() == np.argsort(-full[0, :3]).tolist()
    assert columns[0, 3:].tolist() == [-1, -1, -1]
    assert np.isneginf(scores[0, 3:]).all()


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize(("max_items", "m"), [(0, 3), (40, 3), (0, 10)])
def test_als_block_scorer_matches_implicits_per_customer_path(
    data: Interactions, exclude: bool, max_items: int, m: int
) -> None:
    config = ALSConfig(factors=8, iterations=5, max_items=max_items)
    als = ALS(config).fit(data)
    assert als.model is not None
    rows = np.arange(data.n_customers, dtype=np.int64)

    ranked = als.candidates(rows, m, exclude_purchased=exclude)

    for row in rows[:120].tolist():
        ids, _ = als.model.recommend(
            row,
            data.bought[row] if exclude else None,
            N=m,
            filter_already_liked_items=exclude,
            items=als._items,
        )
        mine = ranked.item[ranked.slot == row]
        assert mine.tolist() == np.asarray(ids)[: len(mine)].tolist()
        assert len(mine) == min(m, len(ids))
        if exclude:
            assert not data.is_bought(np.full(len(mine), row), mine).any()


def test_stable_order_matches_a_stable_argsort() -> None:
    rng = np.random.default_rng(8)
    keys = rng.integers(0, 50, 5_000)
    assert np.array_equal(stable_order(keys), np.argsort(keys, kind="stable"))
    # Keys too wide to pack beside their position fall back to argsort.
    wide = keys * 2**55
    assert np.array_equal(stable_order(wide), np.argsort(wide, kind="stable"))
    assert stable_order(np.zeros(0, dtype=np.int64)).tolist() == []


def test_slot_score_order_ranks_best_first_and_keeps_ties_in_place() -> None:
    rng = np.random.default_rng(9)
    slots = rng.integers(0, 40, 3_000)
    # Few distinct scores, so that many entries tie.
    scores = rng.integers(-5, 5, 3_000) / 4.0
    expected = np.lexsort((np.arange(3_000), -scores, slots))
    assert np.array_equal(slot_score_order(slots, scores), expected)


def test_fuse_sums_and_credits_like_a_dictionary() -> None:
    rng = np.random.default_rng(10)
    parts = []
    for source in range(4):
        slots = np.repeat(np.arange(30), 12)
        items = rng.integers(0, 25, len(slots))
        shares = rng.integers(1, 6, len(slots)) / 10.0
        part = Ranked.build(slots, items, shares, source, source=source).unique()
        parts.append(part)

    # Reference: totals per pair; credit to the first largest share.
    totals: dict[tuple[int, int], float] = {}
    credit: dict[tuple[int, int], tuple[float, int]] = {}
    for part in parts:
        for slot, item, share, source in zip(
            part.slot.tolist(),
            part.item.tolist(),
            part.score.tolist(),
            part.source.tolist(),
            strict=True,
        ):
            key = (slot, item)
            totals[key] = totals.get(key, 0.0) + share
            if key not in credit or share > credit[key][0]:
                credit[key] = (share, source)

    fused = fuse(parts, 5)
    for slot in range(30):
        mine = fused.slot == slot
        best = sorted(
            (key for key in totals if key[0] == slot), key=lambda k: -totals[k]
        )[:5]
        assert np.allclose(fused.score[mine], [totals[k] for k in best])
        for item, score, source in zip(
            fused.item[mine].tolist(),
            fused.score[mine].tolist(),
            fused.source[mine].tolist(),
            strict=True,
        ):
            assert totals[(slot, item)] == pytest.approx(score)
            assert credit[(slot, item)][1] == source
    assert np.array_equal(fused.take(fused.slot >= 0).slot, np.sort(fused.slot))


def test_explain_by_similarity_matches_a_direct_lookup() -> None:
    rng = np.random.default_rng(11)
    n_items = 40
    similarity = sparse.csr_matrix(
        sparse.random(n_items, n_items, density=0.15, random_state=4)
    )
    similarity.sort_indices()
    history = sparse.csr_matrix(sparse.random(12, n_items, density=0.2, random_state=6))
    slots = np.repeat(np.arange(12), 6)
    items = rng.integers(0, n_items, len(slots))
    ranked = Ranked.build(slots, items, rng.random(len(slots)), 0)

    found = explain_by_similarity(history, similarity, ranked)
    kept = explain_by_similarity(history, similarity, ranked, pair_keys(similarity))

    sources, weights = top_history(history, EVIDENCE_HISTORY)
    dense = similarity.toarray()
    expected = []
    for slot, item in zip(ranked.slot.tolist(), ranked.item.tolist(), strict=True):
        values = [
            dense[source, item] * weight if source >= 0 and source != item else 0.0
            for source, weight in zip(sources[slot], weights[slot], strict=True)
        ]
        best = int(np.argmax(values))
        expected.append(int(sources[slot][best]) if values[best] > 0 else -1)
    assert found.tolist() == expected
    assert kept.tolist() == expected


def test_is_bought_matches_the_purchase_matrix(data: Interactions) -> None:
    rng = np.random.default_rng(12)
    rows = rng.integers(-1, data.n_customers, 4_000)
    items = rng.integers(0, data.n_items, 4_000)
    # Pairs that were bought, in no order, and duplicates.
    bought = data.bought.tocoo()
    rows = np.concatenate([rows, bought.row[:500][::-1], bought.row[:50]])
    items = np.concatenate([items, bought.col[:500][::-1], bought.col[:50]])

    dense = data.bought.toarray() > 0
    expected = (rows >= 0) & dense[np.maximum(rows, 0), items]
    assert np.array_equal(data.is_bought(rows, items), expected)
    assert expected.sum() >= 550


def test_sentences_are_rendered_once_per_distinct_reason(data: Interactions) -> None:
    rng = np.random.default_rng(13)
    size = 600
    evidence = np.where(rng.random(size) < 0.5, rng.integers(0, data.n_items, size), -1)
    ranked = Ranked(
        np.repeat(np.arange(60), 10),
        rng.integers(0, data.n_items, size),
        np.zeros(size),
        rng.integers(0, len(CODES), size).astype(np.int16),
        evidence,
        np.zeros(size, dtype=np.int16),
    )
    own = {"bought_together": ("Goes with {evidence}", "Goes well together")}

    rendered = _sentences(data, ranked, own)

    titles = [
        data.display_titles[e] if e >= 0 else None for e in ranked.evidence.tolist()
    ]
    categories = data.catalog["category"].to_numpy(object)[ranked.item].tolist()
    assert rendered.tolist() == sentences(ranked.reason, titles, categories, own)
    assert CODE["bought_together"] in ranked.reason


def test_new_arrivals_blocks_give_the_lists_of_one_block(
    data: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RecommendConfig(als={"factors": 8, "iterations": 5})
    model = NewArrivals(
        NewArrivalsConfig(window_days=120),
        als_config=config.als,
        content_config=config.content,
    ).fit(data)
    rows = np.append(np.arange(data.n_customers, dtype=np.int64), -1)
    for exclude in (False, True):
        monkeypatch.setattr(new_arrivals, "SCORE_BLOCK", 7)
        blocks = model.candidates(rows, 5, exclude_purchased=exclude)
        monkeypatch.setattr(new_arrivals, "SCORE_BLOCK", len(rows))
        whole = model.candidates(rows, 5, exclude_purchased=exclude)
        assert len(whole) > 0
        for field in ("slot", "item", "reason"):
            assert np.array_equal(getattr(blocks, field), getattr(whole, field))
        # BLAS may sum a block's (float32) ALS products in another order.
        assert np.allclose(blocks.score, whole.score, rtol=1e-5, atol=0)


def test_present_cells_hold_a_value_that_is_not_blank() -> None:
    column = pd.Series(["x", None, "  ", float("nan"), "", "https://a", 0, False])
    assert _present(column).tolist() == [
        True,
        False,
        False,
        False,
        False,
        True,
        True,
        True,
    ]


def test_history_rows_of_unknown_customers_are_empty(data: Interactions) -> None:
    rows = np.array([0, -1, 2], dtype=np.int64)
    picked = history_rows(data.bought, rows)
    assert np.diff(picked.indptr)[1] == 0
    assert (picked[2] != data.bought[2]).nnz == 0


@pytest.fixture
def info_logs() -> Iterator[None]:
    """Let info events through for one test, then quiet the logs again."""
    configure("info")
    yield
    configure("warning")


@pytest.mark.usefixtures("info_logs")
def test_short_lists_are_counted_once_in_the_log() -> None:
    data = tiny_data()
    model = make_strategy("most_bought").fit(data)
    with capture_logs() as logged:
        lists = model.recommend([1, 2, 3, 4, 5, 6, 404], 4, batch_size=3)
    sizes = lists.items.groupby("customer_id").size()
    notes = [entry for entry in logged if entry["event"] == "lists shorter than asked"]
    assert len(notes) == 1
    assert notes[0]["customers"] == int((sizes < 4).sum()) > 0
