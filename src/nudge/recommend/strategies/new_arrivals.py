"""New arrivals ranked for a repeat buyer by content, category and ALS affinity.

A product is new while it is younger than the window (its creation time, or
its first sale where the catalog has none). Each new product's score adds
three affinities, each scaled to the customer's best: how much it reads like
what the customer bought (TF-IDF), how much the customer buys its category,
and, for a product that already has some sales, its ALS score. Early sales
break ties, so customers without any affinity still get the new arrivals
that sell.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nudge.recommend.base import Strategy, history_rows
from nudge.recommend.config import ALSConfig, ContentConfig, NewArrivalsConfig
from nudge.recommend.interactions import FloatArray, IntArray, Interactions
from nudge.recommend.ranked import Ranked, dense_top
from nudge.recommend.reasons import CODE
from nudge.recommend.strategies.als import ALS
from nudge.recommend.strategies.neighbours import Content, explain_by_similarity

# Weight of early sales, the tie-breaker.
EARLY_SALES_WEIGHT = 0.01
# Customers scored at once: their dense scores over the new products (a
# few arrays of block × products) stay in cache.
SCORE_BLOCK = 128


def _row_scaled(scores: FloatArray, weight: float) -> FloatArray:
    """Divide each row by its maximum and times the weight, in place.

    The scores are not negative; rows without a positive value become 0.
    """
    if scores.shape[1]:
        top = scores.max(axis=1, keepdims=True)
        scores /= np.where(top > 0, top, np.inf)
        scores *= weight
    return scores


class NewArrivals(Strategy):
    """Recent products, ranked by the customer's affinity with them."""

    name = "new_arrivals"
    personal: ClassVar[bool] = False
    config: NewArrivalsConfig

    def __init__(
        self,
        config: NewArrivalsConfig | None = None,
        *,
        seed: int = 42,
        threads: int = 0,
        als: ALS | None = None,
        content: Content | None = None,
        als_config: ALSConfig | None = None,
        content_config: ContentConfig | None = None,
    ) -> None:
        super().__init__(config, seed=seed, threads=threads)
        self.als = als or ALS(als_config, seed=seed, threads=threads)
        self.content = content or Content(content_config, seed=seed, threads=threads)

    @classmethod
    def default_config(cls) -> NewArrivalsConfig:
        """Return the default new-arrivals configuration."""
        return NewArrivalsConfig()

    def _fit(self, data: Interactions) -> None:
        config = self.config
        age = np.nan_to_num(data.arrival_age, nan=np.inf)
        fresh = np.flatnonzero(age < config.window_days)
        pace = data.item_popularity[fresh] / np.maximum(age[fresh], 1.0)
        keep = np.lexsort((age[fresh], -pace))[: config.max_products]
        self._new = np.sort(fresh[keep]).astype(np.int64)
        # Each product's place among the new ones (-1 for the others).
        self._place = np.full(data.n_items, -1, dtype=np.int64)
        self._place[self._new] = np.arange(len(self._new))
        if config.content_weight > 0 and not self.content.fitted:
            self.content.fit(data)
        if config.als_weight > 0 and not self.als.fitted:
            self.als.fit(data)
        early = data.item_popularity[self._new]
        self._early = early / early.max() if len(early) and early.max() > 0 else early
        self._sold = ~np.isnan(data.first_sold_age[self._new])
        if self.content.fitted:
            self._content_new = self.content.item_similarity[:, self._new]

    def attach(self, data: Interactions) -> NewArrivals:
        """Give this strategy and its ALS and content parts their interactions."""
        self.als.attach(data)
        self.content.attach(data)
        return super().attach(data)

    def single_threaded(self) -> None:
        """Hold the ALS part to one thread."""
        self.als.single_threaded()

    def candidates(
        self, rows: IntArray, m: int, *, exclude_purchased: bool = False
    ) -> Ranked:
        """Return each customer's best new products."""
        if not len(self._new) or not len(rows):
            return Ranked.empty()
        blocks = [
            self._block_candidates(rows, start, m, exclude_purchased)
            for start in range(0, len(rows), SCORE_BLOCK)
        ]
        # Blocks come in slot order, each ranked within, so joined they are
        # ranked too.
        return Ranked.join(blocks)

    def _block_candidates(
        self, all_rows: IntArray, start: int, m: int, exclude_purchased: bool
    ) -> Ranked:
        """Return the best new products of the customers from slot ``start`` on."""
        rows = all_rows[start : start + SCORE_BLOCK]
        parts = self._affinities(rows)
        total = parts[0] + parts[1] + parts[2] + EARLY_SALES_WEIGHT * self._early
        if exclude_purchased:
            self._drop_bought(total, rows)
        columns, scores = dense_top(total, m)

        # The reason follows the affinity that contributed most.
        safe = np.maximum(columns, 0)
        shares = np.stack([np.take_along_axis(p, safe, axis=1) for p in parts])
        codes = np.array(
            [CODE["new_like"], CODE["new_in_category"], CODE["new_for_you"]],
            dtype=np.int16,
        )
        reasons = np.where(
            shares.max(axis=0) > 0, codes[shares.argmax(axis=0)], codes[2]
        )
        items = np.where(columns >= 0, self._new[safe], -1)
        slots = start + np.arange(len(rows))
        return Ranked.from_dense(slots, items, scores, reasons, source=self.source)

    def _drop_bought(self, total: FloatArray, rows: IntArray) -> None:
        """Rule out the new products each customer already bought."""
        bought = history_rows(self.data.bought, rows)
        slots = np.repeat(np.arange(len(rows)), np.diff(bought.indptr))
        places = self._place[bought.indices]
        known = places >= 0
        total[slots[known], places[known]] = -np.inf

    def _affinities(self, rows: IntArray) -> list[FloatArray]:
        """Return the weighted content, category and ALS affinities."""
        data, config = self.data, self.config
        shape = (len(rows), len(self._new))
        content = np.zeros(shape)
        if config.content_weight > 0:
            history = history_rows(self.content.customer_history, rows)
            content = np.asarray((history @ self._content_new).todense())
        codes = data.category_codes[self._new]
        shares = data.category_shares(rows)
        category = np.where(codes >= 0, shares[:, np.maximum(codes, 0)], 0.0)
        als = np.zeros(shape)
        if config.als_weight > 0:
            als = self.als.scores(rows, self._new)
            np.maximum(als, 0.0, out=als)
            als *= self._sold[None, :]
        return [
            _row_scaled(content, config.content_weight),
            _row_scaled(category, config.category_weight),
            _row_scaled(als, config.als_weight),
        ]

    def explain(self, rows: IntArray, ranked: Ranked) -> Ranked:
        """Name the bought product each new product reads most like."""
        if not self.content.fitted or not len(ranked):
            return ranked
        history = history_rows(self.content.customer_history, rows)
        content = self.content
        evidence = explain_by_similarity(
            history, content.item_similarity, ranked, content.similarity_keys
        )
        evidence = np.where(ranked.reason == CODE["new_like"], evidence, -1)
        return Ranked(
            ranked.slot,
            ranked.item,
            ranked.score,
            ranked.reason,
            evidence,
            ranked.source,
        )
