"""A customer's own past purchases: the most-bought baseline and buy-again.

Both score every (customer, product) pair the customer bought once, at fit
time, aligned with the entries of ``Interactions.bought``; a batch only
gathers its customers' entries and keeps the best.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from nudge.recommend.base import Strategy
from nudge.recommend.config import BuyAgainConfig, MostBoughtConfig
from nudge.recommend.interactions import FloatArray, IntArray, Interactions
from nudge.recommend.ranked import Ranked, slot_score_order
from nudge.recommend.reasons import CODE
from nudge.recommend.replenish import replenishment

# Ties among equally bought products go to the most recent (a year's half-life).
TIE_HALF_LIFE = 365.0


def row_entries(indptr: IntArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """Return (slot, position) of every CSR entry of the known rows of a batch."""
    slots = np.flatnonzero(rows >= 0)
    starts = indptr[rows[slots]]
    lengths = indptr[rows[slots] + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(total) - offsets + np.repeat(starts, lengths)
    return np.repeat(slots, lengths), positions.astype(np.int64)


class _OwnItems(Strategy):
    """Shared ranking of a customer's own bought products."""

    @abstractmethod
    def entry_scores(self, data: Interactions) -> tuple[FloatArray, IntArray]:
        """Return the score and reason code of every bought pair."""

    def _fit(self, data: Interactions) -> None:
        scores, reasons = self.entry_scores(data)
        # Order each customer's entries best first once, so batches need no sort.
        bought = data.bought
        slots = np.repeat(np.arange(data.n_customers), np.diff(bought.indptr))
        order = slot_score_order(slots, scores)
        self._items = bought.indices[order].astype(np.int64)
        self._scores = scores[order]
        self._reasons = reasons[order].astype(np.int16)

    def candidates(
        self, rows: IntArray, m: int, *, exclude_purchased: bool = False
    ) -> Ranked:
        """Return each customer's best own products (none when they are excluded)."""
        if exclude_purchased:
            return Ranked.empty()
        slots, positions = row_entries(self.data.bought.indptr, rows)
        ranked = Ranked.presorted(
            slots,
            self._items[positions],
            self._scores[positions],
            self._reasons[positions],
            source=self.source,
        )
        return ranked.top(m)


class MostBought(_OwnItems):
    """The baseline: the customer's products by the number of orders holding them."""

    name = "most_bought"
    config: MostBoughtConfig

    @classmethod
    def default_config(cls) -> MostBoughtConfig:
        """Return the (empty) baseline configuration."""
        return MostBoughtConfig()

    def entry_scores(self, data: Interactions) -> tuple[FloatArray, IntArray]:
        """Score orders, the most recent purchase breaking ties."""
        timing = replenishment(data)
        tie = 0.5 * np.exp2(-timing.last_age / TIE_HALF_LIFE)
        reasons = np.full(len(tie), CODE["bought_before"], dtype=np.int64)
        return timing.orders + tie, reasons


class BuyAgain(_OwnItems):
    """Own repeat purchases by recency-weighted orders, timed by the repeat gap."""

    name = "buy_again"
    config: BuyAgainConfig

    @classmethod
    def default_config(cls) -> BuyAgainConfig:
        """Return the default buy-again configuration."""
        return BuyAgainConfig()

    def entry_scores(self, data: Interactions) -> tuple[FloatArray, IntArray]:
        """Score recent orders, lifted as the typical repeat gap comes round."""
        config = self.config
        timing = replenishment(
            data, min_gaps=config.min_gaps, half_life_days=config.half_life_days
        )
        ratio = timing.last_age / timing.gap
        # Unknown gaps neither lift nor lower; known ones lift up to due.
        progress = np.clip(np.nan_to_num(ratio / config.due_from, nan=0.0), 0, 1)
        scores = timing.recency**config.count_power * (1 + config.due_boost * progress)
        due = np.nan_to_num(ratio, nan=0.0) >= config.due_from
        reasons = np.where(due, CODE["due_again"], CODE["bought_before"])
        self.due_ratio = ratio
        return scores, reasons.astype(np.int64)
