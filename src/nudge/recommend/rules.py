"""Business rules applied to ranked candidates before the final cut.

Rules remove products (out of stock, no image or page, outside the price
band, excluded categories, brands or products, past purchases that are not
due), boost others (new, high margin), pin chosen products first, fill short
lists with the best sellers that pass, and cap products per category. A rule
that needs a catalog field the shop's data lacks, or that would remove every
product, is skipped with one logged note instead of emptying every list.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np
import pandas as pd

from nudge.logging import get_logger
from nudge.recommend.config import SOURCE, RulesConfig
from nudge.recommend.interactions import BoolArray, FloatArray, IntArray, Interactions
from nudge.recommend.ranked import Ranked, rank_in_group
from nudge.recommend.reasons import CODE
from nudge.recommend.replenish import Replenishment, replenishment

log = get_logger(__name__)

# Fill lists from this many best sellers per wanted product.
FILL_FACTOR = 5


def _present(column: pd.Series) -> BoolArray:
    """Tell which cells hold a value (not null, not blank text)."""
    known = np.array(column.notna(), dtype=bool)
    text = column[known].astype(str).str.strip()
    known[known] = (text != "").to_numpy(bool)
    return known


class Rules:
    """The business rules of one run, prepared for one set of interactions."""

    def __init__(self, config: RulesConfig, data: Interactions) -> None:
        self.config = config
        self.data = data
        self.notes: list[str] = []
        self.allowed = self._allowed()
        self.boost = self._boost()
        self.pinned = self._pinned()
        self.capped = self._capped()
        if config.purchased == "unless_due":
            # Measured once here, so forked workers inherit it.
            _ = self._replenishment
        for note in self.notes:
            log.info("rule skipped", note=note)

    def pool(self, n: int) -> int:
        """Return how many candidates to ask a strategy for, before the rules."""
        return max(4 * n, n + 20)

    def minimum(self, n: int) -> int:
        """Return the shortest list that is still sent."""
        return min(self.config.min_items, n)

    def apply(
        self, ranked: Ranked, rows: IntArray, n: int, exclude_purchased: bool
    ) -> Ranked:
        """Filter, boost, pin, fill and cap one batch's candidates."""
        mode = "exclude" if exclude_purchased else self.config.purchased
        ranked = ranked.take(self._passes(ranked, rows, mode))
        if self.boost is not None:
            ranked = self._boosted(ranked)

        # Pinned products go first, fills last; duplicates keep the best entry.
        parts = [ranked, self._pins(ranked, rows, mode)]
        if self.config.fill:
            parts.append(self._fills(ranked, rows, n, mode))
        ranked = Ranked.concat(parts).unique()
        return self._cap(ranked) if self.capped else ranked

    def _passes(self, ranked: Ranked, rows: IntArray, mode: str) -> BoolArray:
        """Tell which entries survive the product and past-purchase rules."""
        keep = self.allowed[ranked.item]
        if mode == "keep" or not len(ranked):
            return keep
        customer_rows = rows[ranked.slot]
        bought = self.data.is_bought(customer_rows, ranked.item)
        if mode == "exclude":
            return keep & ~bought
        ratio = self._replenishment.due_ratio(self.data, customer_rows, ranked.item)
        due = np.nan_to_num(ratio, nan=0.0) >= self.config.due_from
        return keep & (~bought | due)

    @cached_property
    def _replenishment(self) -> Replenishment:
        return replenishment(self.data)

    def _boosted(self, ranked: Ranked) -> Ranked:
        """Multiply good scores (and divide bad ones) by each product's boost."""
        assert self.boost is not None
        factor = self.boost[ranked.item]
        score = np.where(
            ranked.score >= 0, ranked.score * factor, ranked.score / factor
        )
        return replace(ranked, score=score).resorted()

    def _pins(self, ranked: Ranked, rows: IntArray, mode: str) -> Ranked:
        """Return the pinned products of every slot, above every candidate."""
        if not len(self.pinned):
            return Ranked.empty()
        top = float(ranked.score.max()) if len(ranked) else 0.0
        count = len(self.pinned)
        slots = np.repeat(np.arange(len(rows)), count)
        items = np.tile(self.pinned, len(rows))
        scores = np.tile(top + 1.0 + np.arange(count, 0, -1, dtype=float), len(rows))
        pins = Ranked.build(slots, items, scores, CODE["pinned"]).with_source(
            SOURCE["pinned"]
        )
        return pins.take(self._passes(pins, rows, mode))

    def _fills(self, ranked: Ranked, rows: IntArray, n: int, mode: str) -> Ranked:
        """Return best sellers for the slots holding fewer than n products."""
        short = np.flatnonzero(ranked.counts(len(rows)) < n)
        order = self.data.best_seller_order
        fill = order[self.allowed[order]][: FILL_FACTOR * n + len(self.pinned)]
        if not len(short) or not len(fill):
            return Ranked.empty()
        bottom = float(ranked.score.min()) if len(ranked) else 0.0
        slots = np.repeat(short, len(fill))
        items = np.tile(fill, len(short))
        scores = np.tile(bottom - 1.0 - np.arange(len(fill), dtype=float), len(short))
        fills = Ranked.build(slots, items, scores, CODE["best_seller"]).with_source(
            SOURCE["best_sellers"]
        )
        return fills.take(self._passes(fills, rows, mode))

    def _cap(self, ranked: Ranked) -> Ranked:
        """Keep at most max_per_category products of each category per slot."""
        assert self.config.max_per_category is not None
        category = self.data.category_codes[ranked.item]
        order = np.lexsort((np.arange(len(ranked)), category, ranked.slot))
        rank = np.empty(len(ranked), dtype=np.int64)
        groups = ranked.slot[order] * (int(category.max()) + 2) + category[order] + 1
        rank[order] = rank_in_group(groups)
        keep = (category < 0) | (rank < self.config.max_per_category)
        return ranked.take(keep)

    def _allowed(self) -> BoolArray:
        """Return which products every list may hold."""
        catalog = self.data.catalog
        config = self.config
        allowed = np.ones(self.data.n_items, dtype=bool)
        if config.exclude_out_of_stock:
            stock = catalog["in_stock"]
            known = _present(stock)
            out = known & (stock.to_numpy(object) == False)  # noqa: E712
            allowed = self._narrow(allowed, ~out, "exclude_out_of_stock", known)
        if config.require_image:
            has = _present(catalog["image_url"])
            allowed = self._narrow(allowed, has, "require_image", has)
        if config.require_url:
            has = _present(catalog["product_url"])
            allowed = self._narrow(allowed, has, "require_url", has)
        allowed = self._price_band(allowed)
        allowed = self._names(
            allowed, "category", config.include_categories, config.exclude_categories
        )
        allowed = self._names(
            allowed, "brand", config.include_brands, config.exclude_brands
        )
        if config.exclude_products:
            excluded = np.isin(
                catalog["external_id"].to_numpy(object), list(config.exclude_products)
            )
            allowed = self._narrow(
                allowed, ~excluded, "exclude_products", np.ones_like(excluded)
            )
        return allowed

    def _price_band(self, allowed: BoolArray) -> BoolArray:
        """Narrow to the price band, where the catalog has prices."""
        low, high = self.config.min_price, self.config.max_price
        if low is None and high is None:
            return allowed
        price = self.data.catalog["price"].to_numpy(np.float64)
        inside = ~np.isnan(price)
        if low is not None:
            inside &= price >= low
        if high is not None:
            inside &= price <= high
        return self._narrow(allowed, inside, "price band", ~np.isnan(price))

    def _names(
        self,
        allowed: BoolArray,
        field: str,
        include: tuple[str, ...],
        exclude: tuple[str, ...],
    ) -> BoolArray:
        """Narrow to the included and away from the excluded categories or brands."""
        if not include and not exclude:
            return allowed
        values = self.data.catalog[field].to_numpy(object)
        known = _present(self.data.catalog[field])
        passes = np.ones(len(values), dtype=bool)
        if include:
            passes &= np.isin(values, list(include))
        if exclude:
            passes &= ~np.isin(values, list(exclude))
        return self._narrow(allowed, passes, f"{field} include/exclude", known)

    def _narrow(
        self, allowed: BoolArray, passes: BoolArray, rule: str, known: BoolArray
    ) -> BoolArray:
        """Apply one product rule unless its field is missing or it empties all."""
        if len(known) and not known.any():
            self.notes.append(f"{rule}: the catalog has no values for this field")
            return allowed
        narrowed = allowed & passes
        if allowed.any() and not narrowed.any():
            self.notes.append(f"{rule}: it would remove every product")
            return allowed
        return narrowed

    def _boost(self) -> FloatArray | None:
        """Return each product's score multiplier, or None without boosts."""
        config = self.config
        boost = np.ones(self.data.n_items)
        if config.new_boost > 0:
            age = self.data.arrival_age
            if np.isnan(age).all():
                self.notes.append("new_boost: the catalog has no arrival dates")
            else:
                boost *= np.where(age < config.new_days, 1.0 + config.new_boost, 1.0)
        if config.margin_boost > 0:
            if "margin" not in self.data.catalog.columns:
                self.notes.append("margin_boost: the catalog has no margins")
            else:
                margin = pd.to_numeric(self.data.catalog["margin"], errors="coerce")
                share = np.clip(np.nan_to_num(margin.to_numpy(float)), 0.0, 1.0)
                boost *= 1.0 + config.margin_boost * share
        return None if np.all(boost == 1.0) else boost

    def _pinned(self) -> IntArray:
        """Return the columns of the pinned products that pass the product rules."""
        if not self.config.pinned:
            return np.zeros(0, dtype=np.int64)
        items = self.data.items_by_external(self.config.pinned)
        unknown = [p for p, i in zip(self.config.pinned, items, strict=True) if i < 0]
        if unknown:
            self.notes.append(f"pinned: {len(unknown)} products not in the catalog")
        items = items[items >= 0]
        return items[self.allowed[items]]

    def _capped(self) -> bool:
        """Tell whether the per-category cap applies to this catalog."""
        if self.config.max_per_category is None:
            return False
        if (self.data.category_codes < 0).all():
            self.notes.append("max_per_category: the catalog has no categories")
            return False
        return True
