"""The hybrid blend: each strategy's normalized scores, weighted and summed.

Every strategy with a weight proposes its best products for the customer;
their scores are scaled to the customer's best of that strategy (or turned
into reciprocal ranks), multiplied by the strategy's weight and summed per
product. A customer a strategy knows nothing about gets nothing from it, so
the slots fall to the next strategies down the weights — collaborative
filtering, co-purchase, content, trending and, last, the best sellers — a
cold-start cascade. Each product keeps the strategy and evidence of its
largest share as its reason. Lists that may repeat past purchases use
``weights``; lists of products new to the customer use ``new_weights``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nudge.recommend.base import Strategy
from nudge.recommend.config import BlendConfig, RecommendConfig
from nudge.recommend.interactions import FloatArray, IntArray, Interactions
from nudge.recommend.ranked import (
    Ranked,
    group_starts,
    rank_in_group,
    slot_score_order,
    stable_order,
)
from nudge.recommend.strategies import build_components


def normalized(ranked: Ranked, config: BlendConfig) -> FloatArray:
    """Return each entry's score scaled within its customer's list, in 0..1."""
    if config.fusion == "rank":
        offset = config.rank_offset
        return np.asarray(offset / (rank_in_group(ranked.slot) + offset), dtype=float)
    starts = group_starts(ranked.slot)
    lengths = np.diff(np.append(starts, len(ranked)))
    best = np.repeat(ranked.score[starts], lengths)
    scaled = np.divide(ranked.score, best, out=np.zeros(len(ranked)), where=best > 0)
    return np.clip(scaled, 0.0, 1.0)


def fuse(parts: list[Ranked], m: int | None = None) -> Ranked:
    """Sum the weighted shares of each (customer, product), crediting the largest.

    With ``m``, only each customer's m best products are returned.
    """
    joined = Ranked.join(parts)
    if not len(joined):
        return joined

    # Group equal (slot, product) pairs with one integer sort; ties keep
    # their order in the join.
    keys = joined.slot * (int(joined.item.max()) + 1) + joined.item
    order = stable_order(keys)
    ordered = keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    shares = joined.score[order]
    total = np.add.reduceat(shares, starts)

    # Credit the first entry holding its group's largest share.
    largest = np.maximum.reduceat(shares, starts)
    holders = np.flatnonzero(shares == largest[group])
    leading = np.ones(len(holders), dtype=bool)
    leading[1:] = group[holders[1:]] != group[holders[:-1]]
    credited = order[holders[leading]]

    # Rank, cut and only then gather the credited entries' other fields.
    slots = joined.slot[credited]
    ranking = slot_score_order(slots, total)
    if m is not None:
        ranking = ranking[rank_in_group(slots[ranking]) < m]
    picked = joined.take(credited[ranking])
    return Ranked(
        picked.slot,
        picked.item,
        total[ranking],
        picked.reason,
        picked.evidence,
        picked.source,
    )


class Blend(Strategy):
    """The tuned hybrid of every strategy with a weight."""

    name = "blend"
    personal: ClassVar[bool] = False
    config: RecommendConfig

    def __init__(
        self,
        config: RecommendConfig | None = None,
        *,
        seed: int | None = None,
        threads: int | None = None,
    ) -> None:
        config = config or RecommendConfig()
        super().__init__(
            config,
            seed=config.seed if seed is None else seed,
            threads=config.threads if threads is None else threads,
        )
        wanted = {
            name
            for table in (config.blend.weights, config.blend.new_weights)
            for name, weight in table.items()
            if weight > 0
        }
        self.components = build_components(sorted(wanted), self.config)

    @classmethod
    def default_config(cls) -> RecommendConfig:
        """Return the default configuration of every strategy and the blend."""
        return RecommendConfig()

    def _fit(self, data: Interactions) -> None:
        for component in self.components.values():
            if not component.fitted:
                component.fit(data)

    def attach(self, data: Interactions) -> Blend:
        """Give the blend and every component the interactions they were fitted on."""
        for component in self.components.values():
            component.attach(data)
        return super().attach(data)

    def single_threaded(self) -> None:
        """Hold every component to one thread."""
        for component in self.components.values():
            component.single_threaded()

    def candidates(
        self, rows: IntArray, m: int, *, exclude_purchased: bool = False
    ) -> Ranked:
        """Return each customer's best products by the weighted sum of shares."""
        blend = self.config.blend
        weights = blend.new_weights if exclude_purchased else blend.weights
        pool = max(blend.pool, m)
        parts = []
        for name, weight in weights.items():
            if weight <= 0 or name not in self.components:
                continue
            ranked = self.components[name].candidates(
                rows, pool, exclude_purchased=exclude_purchased
            )
            share = weight * normalized(ranked, blend)
            parts.append(
                Ranked(
                    ranked.slot,
                    ranked.item,
                    share,
                    ranked.reason,
                    ranked.evidence,
                    ranked.source,
                )
            )
        return fuse(parts, m)

    def explain(self, rows: IntArray, ranked: Ranked) -> Ranked:
        """Let each strategy name the evidence behind the products it placed."""
        evidence = ranked.evidence.copy()
        for component in self.components.values():
            mine = np.flatnonzero(ranked.source == component.source)
            if len(mine):
                explained = component.explain(rows, ranked.take(mine))
                evidence[mine] = explained.evidence
        return Ranked(
            ranked.slot,
            ranked.item,
            ranked.score,
            ranked.reason,
            evidence,
            ranked.source,
        )
