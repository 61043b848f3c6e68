"""Matrix factorization: implicit's alternating least squares on weighted feedback."""

from __future__ import annotations

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from scipy import sparse
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from nudge.recommend.base import Strategy, history_rows
from nudge.recommend.config import ALSConfig
from nudge.recommend.interactions import FloatArray, IntArray, Interactions
from nudge.recommend.ranked import Ranked
from nudge.recommend.reasons import CODE
from nudge.recommend.strategies.neighbours import EVIDENCE_HISTORY, top_history

# Scores below this are implicit's marks of filtered products.
FILTERED = -1e30


class ALS(Strategy):
    """Customer and product factors whose dot product ranks every product.

    implicit's own thread pool does the work; OpenBLAS is held to one thread
    while it fits, as implicit advises.
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

    def single_threaded(self) -> None:
        """Score with one thread (implicit's OpenMP pool does not survive fork)."""
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
        data = self.data
        users = rows[slots]
        ids, scores = self.model.recommend(
            users,
            data.bought[users] if exclude_purchased else None,
            N=min(m, data.n_items),
            filter_already_liked_items=exclude_purchased,
            items=self._items,
        )
        ids = np.asarray(ids, dtype=np.int64).reshape(len(slots), -1)
        scores = np.asarray(scores, dtype=np.float64).reshape(len(slots), -1)
        # implicit pads a short list with filtered products scored -FLT_MAX.
        scores[(ids < 0) | (scores < FILTERED)] = -np.inf
        return Ranked.from_dense(
            slots, ids, scores, CODE["because_you_bought"], source=self.source
        )

    def scores(self, rows: IntArray, items: IntArray) -> FloatArray:
        """Return the factor scores of some products for a batch (0 if unknown)."""
        result = np.zeros((len(rows), len(items)))
        known = rows >= 0
        if self.model is None or not known.any() or not len(items):
            return result
        users = np.asarray(self.model.user_factors)[rows[known]]
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
