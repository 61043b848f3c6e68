"""Matrix factorization: implicit's alternating least squares on weighted feedback.

implicit fits the factors; lists are scored here, one matrix product per
block of customers, because implicit's ``recommend`` looks up each
customer's past purchases one at a time in Python and writes a whole
batch's scores to memory before picking the best.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
from implicit.cpu.als import AlternatingLeastSquares
from scipy import sparse
from threadpoolctl import (  # type: ignore[import-untyped]
    ThreadpoolController,
    threadpool_limits,
)

from nudge.recommend.base import Strategy, history_rows
from nudge.recommend.config import ALSConfig
from nudge.recommend.interactions import FloatArray, IntArray, Interactions
from nudge.recommend.ranked import Ranked
from nudge.recommend.reasons import CODE
from nudge.recommend.strategies.neighbours import EVIDENCE_HISTORY, top_history

Float32Array = npt.NDArray[np.float32]
# Customers scored per matrix product: a block's scores (block × products in
# float32, 5 MB at 20,000 products) stay in cache, where a batch's would not.
SCORE_BLOCK = 64
# Columns are dealt into this many interleaved groups before the top-m search.
GROUPS = 8


@cache
def _blas() -> Any:
    """Return the controller of the BLAS thread pools (found once)."""
    return ThreadpoolController()


def one_blas_thread() -> Any:
    """Return a context that holds BLAS to one thread.

    Scoring multiplies small blocks: OpenBLAS threads would spend more
    time waiting on each other (and spinning) than multiplying.
    """
    return _blas().limit(limits=1, user_api="blas")


def factor_top(
    users: Float32Array,
    item_factors_t: Float32Array,
    m: int,
    banned: sparse.csr_matrix | None = None,
) -> tuple[IntArray, FloatArray]:
    """Return each user's m best columns by dot product, and their scores.

    ``item_factors_t`` is factors × columns; ``banned`` (users × columns)
    marks columns a user may not get. Rows are best first and padded with
    column -1 and score -inf where fewer than m columns are allowed.
    """
    n_users, n_columns = len(users), item_factors_t.shape[1]
    m = min(m, n_columns)
    columns = np.full((n_users, m), -1, dtype=np.int64)
    scores = np.full((n_users, m), -np.inf)
    if m == 0 or n_users == 0:
        return columns, scores

    # Pad the columns to a multiple of the groups; padding scores -inf.
    width = n_columns
    if n_columns >= 2 * m * GROUPS:
        width = -(-n_columns // GROUPS) * GROUPS
        padded = np.zeros((item_factors_t.shape[0], width), dtype=np.float32)
        padded[:, :n_columns] = item_factors_t
        item_factors_t = padded
    block = np.empty((min(SCORE_BLOCK, n_users), width), dtype=np.float32)

    for start in range(0, n_users, SCORE_BLOCK):
        stop = min(start + SCORE_BLOCK, n_users)
        values = block[: stop - start]
        np.matmul(users[start:stop], item_factors_t, out=values)
        values[:, n_columns:] = -np.inf
        if banned is not None:
            _ban(values, banned, start, stop)
        part = _block_top(values, m)
        found = np.take_along_axis(values, part, axis=1)
        order = np.argsort(-found, axis=1, kind="stable")
        columns[start:stop] = np.take_along_axis(part, order, axis=1)
        scores[start:stop] = np.take_along_axis(found, order, axis=1)
    columns[~np.isfinite(scores)] = -1
    scores[columns < 0] = -np.inf
    return columns, scores


def _block_top(values: Float32Array, m: int) -> IntArray:
    """Return the columns of each row's m largest values, in no order."""
    rows, width = values.shape
    if width >= 2 * m * GROUPS and width % GROUPS == 0:
        # Column c lies in group c % stride. The m groups with the highest
        # maxima hold m values at least as high as any other group's, so
        # the search narrows to them; the maxima are one vectorised pass.
        stride = width // GROUPS
        maxima = values.reshape(rows, GROUPS, stride).max(axis=1)
        groups = np.argpartition(maxima, stride - m, axis=1)[:, stride - m :]
        spread = groups[:, :, None] + stride * np.arange(GROUPS)
        candidates = spread.reshape(rows, m * GROUPS)
        found = np.take_along_axis(values, candidates, axis=1)
        best = np.argpartition(found, m * GROUPS - m, axis=1)[:, m * GROUPS - m :]
        return np.asarray(np.take_along_axis(candidates, best, axis=1), np.int64)
    # argpartition for the kth largest from the top needs no negated copy.
    if m < width:
        return np.argpartition(values, width - m, axis=1)[:, width - m :]
    return np.broadcast_to(np.arange(width, dtype=np.int64), values.shape)


def _ban(
    values: Float32Array, banned: sparse.csr_matrix, start: int, stop: int
) -> None:
    """Score the banned columns of users start..stop as -inf, in place."""
    first, last = banned.indptr[start], banned.indptr[stop]
    if first == last:
        return
    counts = np.diff(banned.indptr[start : stop + 1])
    slots = np.repeat(np.arange(stop - start), counts)
    values[slots, banned.indices[first:last]] = -np.inf


class ALS(Strategy):
    """Customer and product factors whose dot product ranks every product.

    implicit's own thread pool fits the factors, OpenBLAS held to one thread
    as implicit advises; lists are scored on one thread by `factor_top`.
    """

    name = "als"
    config: ALSConfig

    @classmethod
    def default_config(cls) -> ALSConfig:
        """Return the default ALS configuration."""
        return ALSConfig()

    def _fit(self, data: Interactions) -> None:
        config = self.config
        self.model: AlternatingLeastSquares | None = None
        if data.feedback.nnz == 0:
            return
        # implicit checks the BLAS threads when the model is built, and its
        # own threads contend with OpenBLAS ones while it fits.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=config.factors,
                regularization=config.regularization,
                alpha=config.alpha,
                iterations=config.iterations,
                random_state=self.seed,
                num_threads=self.threads,
                calculate_training_loss=False,
            )
            model.fit(sparse.csr_matrix(data.feedback, dtype=np.float32), False)
        self.model = model
        ranked = data.best_seller_order
        limit = config.max_items or len(ranked)
        self._items = np.sort(ranked[:limit]) if limit < len(ranked) else None
        factors = np.asarray(model.item_factors, dtype=np.float32)
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        self._unit_items = factors / np.maximum(norms, 1e-12)
        self._scoring = self._scoring_factors()

    def _scoring_factors(self) -> tuple[Float32Array, IntArray]:
        """Return the ranked products' factors (factors × products) and columns.

        The columns array maps every product to its place among the ranked
        ones, -1 for products not ranked.
        """
        assert self.model is not None
        factors = np.asarray(self.model.item_factors, dtype=np.float32)
        ranked = self._items if self._items is not None else np.arange(len(factors))
        place = np.full(len(factors), -1, dtype=np.int64)
        place[ranked] = np.arange(len(ranked))
        return np.ascontiguousarray(factors[ranked].T), place

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # Models saved before the block scorer lack its factors.
        if getattr(self, "model", None) is not None and "_scoring" not in state:
            self._scoring = self._scoring_factors()

    def single_threaded(self) -> None:
        """Hold implicit's OpenMP pool to one thread (it does not survive fork)."""
        model = getattr(self, "model", None)
        if model is not None:
            model.num_threads = 1

    def candidates(
        self, rows: IntArray, m: int, *, exclude_purchased: bool = False
    ) -> Ranked:
        """Return each known customer's best products by factor dot product."""
        slots = np.flatnonzero(rows >= 0)
        if self.model is None or not len(slots):
            return Ranked.empty()
        users = rows[slots]
        factors_t, place = self._scoring
        banned = (
            self._bought_columns(users, place, factors_t.shape[1])
            if exclude_purchased
            else None
        )
        user_factors = np.asarray(self.model.user_factors, dtype=np.float32)
        with one_blas_thread():
            columns, scores = factor_top(user_factors[users], factors_t, m, banned)
        products = self._items if self._items is not None else np.arange(len(place))
        ids = np.where(columns >= 0, products[np.maximum(columns, 0)], -1)
        return Ranked.from_dense(
            slots, ids, scores, CODE["because_you_bought"], source=self.source
        )

    def _bought_columns(
        self, users: IntArray, place: IntArray, width: int
    ) -> sparse.csr_matrix:
        """Return the customers' purchases as columns among the ranked products."""
        bought = self.data.bought[users]
        slots = np.repeat(np.arange(len(users)), np.diff(bought.indptr))
        columns = place[bought.indices]
        kept = columns >= 0
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(slots[kept], minlength=len(users)))
        entries = (np.ones(int(kept.sum())), columns[kept], indptr)
        return sparse.csr_matrix(entries, shape=(len(users), width))

    def scores(self, rows: IntArray, items: IntArray) -> FloatArray:
        """Return the factor scores of some products for a batch (0 if unknown)."""
        result = np.zeros((len(rows), len(items)))
        known = rows >= 0
        if self.model is None or not known.any() or not len(items):
            return result
        users = np.asarray(self.model.user_factors)[rows[known]]
        with one_blas_thread():
            result[known] = users @ np.asarray(self.model.item_factors)[items].T
        return result

    def explain(self, rows: IntArray, ranked: Ranked) -> Ranked:
        """Name the bought product whose factors are closest to each product's."""
        if self.model is None or not len(ranked):
            return ranked
        history = history_rows(self.data.feedback, rows)
        items, _ = top_history(history, EVIDENCE_HISTORY)
        sources = items[ranked.slot]
        unit = self._unit_items
        similar = np.einsum(
            "ef,ehf->eh", unit[ranked.item], unit[np.maximum(sources, 0)]
        )
        usable = (sources >= 0) & (sources != ranked.item[:, None]) & (similar > 0)
        similar = np.where(usable, similar, -np.inf)
        best = similar.argmax(axis=1)
        chosen = np.take_along_axis(sources, best[:, None], axis=1)[:, 0]
        evidence = np.where(np.isfinite(similar.max(axis=1)), chosen, -1)
        return Ranked(
            ranked.slot,
            ranked.item,
            ranked.score,
            ranked.reason,
            np.asarray(evidence, dtype=np.int64),
            ranked.source,
        )
