"""Popularity: best sellers and trending products, overall and per category.

Both rank one score per product; a customer with category affinities gets
the best products of their favourite categories lifted, with a reason that
names the category. Trending forecasts each product's buyers over the next
days with an additive Holt-Winters model (level, trend and a day-of-week
pattern, fitted per product on its daily distinct buyers), and ranks the
forecast by its growth over the product's own recent average, so that rising
products rank before they peak.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from nudge.recommend.base import Strategy, history_rows
from nudge.recommend.config import BestSellersConfig, TrendingConfig
from nudge.recommend.interactions import FloatArray, IntArray, Interactions
from nudge.recommend.ranked import Ranked
from nudge.recommend.reasons import CODE

# A product of a category holding this share of the customer's interest is
# recommended "in" that category; the share lifts its score up to 1 + LIFT.
CATEGORY_SHARE = 0.2
CATEGORY_LIFT = 3.0
# Products kept per category list.
CATEGORY_LIST = 500
SEASON = 7


class _Popular(Strategy):
    """Shared ranking of one score per product, lifted by category affinity."""

    personal: ClassVar[bool] = False
    overall_reason: ClassVar[str]
    category_reason: ClassVar[str]

    @abstractmethod
    def item_scores(self, data: Interactions) -> FloatArray:
        """Return each product's popularity (0 for products not ranked)."""

    def _fit(self, data: Interactions) -> None:
        scores = self.item_scores(data)
        top = float(scores.max()) if len(scores) else 0.0
        self._scores = scores / top if top > 0 else scores
        ranked = np.argsort(-self._scores, kind="stable")
        self._order = ranked[self._scores[ranked] > 0].astype(np.int64)
        # Each product's place in the overall list (unranked ones last).
        self._rank = np.full(data.n_items, data.n_items, dtype=np.int64)
        self._rank[self._order] = np.arange(len(self._order))
        self._by_category = self._category_lists(data)

    def _category_lists(self, data: Interactions) -> IntArray | None:
        """Return each category's best products (padded with -1), or None."""
        if not self.config.per_category or (data.category_codes < 0).all():
            return None
        codes = data.category_codes[self._order]
        lists = np.full((len(data.category_names), CATEGORY_LIST), -1, np.int64)
        for code in range(len(data.category_names)):
            members = self._order[codes == code][:CATEGORY_LIST]
            lists[code, : len(members)] = members
        return lists

    def candidates(
        self, rows: IntArray, m: int, *, exclude_purchased: bool = False
    ) -> Ranked:
        """Return the best products overall and of each favourite category."""
        data = self.data
        lengths = np.full(len(rows), min(m, len(self._order)), dtype=np.int64)
        if exclude_purchased:
            lengths = np.minimum(m + self._bought_ahead(rows, m), len(self._order))
        slots, places = _ragged(lengths)
        items = [self._order[places]]
        owners = [slots]
        shares = None
        if self._by_category is not None:
            shares = data.category_shares(rows)
            favourite = np.argsort(-shares, axis=1)[:, : self.config.categories]
            liked = np.take_along_axis(shares, favourite, axis=1) > 0
            width = min(int(lengths.max(initial=0)), self._by_category.shape[1])
            for column in range(favourite.shape[1]):
                wanted = np.where(liked[:, column], np.minimum(lengths, width), 0)
                cat_slots, cat_places = _ragged(wanted)
                found = self._by_category[favourite[cat_slots, column], cat_places]
                # Products already in the slot's overall list appear once.
                fresh = (found >= 0) & (
                    self._rank[np.maximum(found, 0)] >= lengths[cat_slots]
                )
                items.append(found[fresh])
                owners.append(cat_slots[fresh])
        ranked = self._scored(np.concatenate(owners), np.concatenate(items), shares)
        if exclude_purchased:
            ranked = ranked.take(~data.is_bought(rows[ranked.slot], ranked.item))
        return ranked.top(m)

    def _bought_ahead(self, rows: IntArray, m: int) -> IntArray:
        """Count each customer's purchases among the products they could be offered."""
        bought = history_rows(self.data.bought, rows)
        counts = np.diff(bought.indptr)
        slots = np.repeat(np.arange(len(rows)), counts)
        ranks = self._rank[bought.indices]
        ahead = ranks < m + counts[slots]
        return np.bincount(slots[ahead], minlength=len(rows)).astype(np.int64)

    def _scored(
        self, slots: IntArray, items: IntArray, shares: FloatArray | None
    ) -> Ranked:
        """Score candidates, lifting those of the customer's favourite categories."""
        scores = self._scores[items]
        reasons = np.full(len(items), CODE[self.overall_reason], dtype=np.int16)
        if shares is not None:
            codes = self.data.category_codes[items]
            share = np.where(codes >= 0, shares[slots, np.maximum(codes, 0)], 0.0)
            scores = scores * (1.0 + CATEGORY_LIFT * share)
            reasons[share >= CATEGORY_SHARE] = CODE[self.category_reason]
        return Ranked.build(slots, items, scores, reasons, source=self.source)


def _ragged(lengths: IntArray) -> tuple[IntArray, IntArray]:
    """Return (slot, place) for places 0..length-1 of every slot."""
    slots = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return slots, np.arange(len(slots)) - offsets


class BestSellers(_Popular):
    """Products with the most distinct buyers over a recent window."""

    name = "best_sellers"
    overall_reason = "best_seller"
    category_reason = "best_seller_in_category"
    config: BestSellersConfig

    @classmethod
    def default_config(cls) -> BestSellersConfig:
        """Return the default best-seller configuration."""
        return BestSellersConfig()

    def item_scores(self, data: Interactions) -> FloatArray:
        """Return distinct buyers in the window, all-time buyers breaking ties."""
        log = data.purchases
        recent = log[log["age"] < self.config.window_days]
        pairs = recent.drop_duplicates(["row", "item"])
        buyers = np.bincount(pairs["item"].to_numpy(), minlength=data.n_items)
        total = data.item_popularity
        tie = total / (total.max() + 1.0) if len(total) else total
        return np.where(buyers > 0, buyers + tie, 0.0)


class Trending(_Popular):
    """Products whose forecast demand is high and rising."""

    name = "trending"
    overall_reason = "trending"
    category_reason = "trending_in_category"
    config: TrendingConfig

    @classmethod
    def default_config(cls) -> TrendingConfig:
        """Return the default trending configuration."""
        return TrendingConfig()

    def item_scores(self, data: Interactions) -> FloatArray:
        """Return next week's forecast buyers times their growth over the average."""
        config = self.config
        daily = daily_buyers(data, config.history_days)
        forecast = holt_winters(
            daily,
            config.horizon_days,
            config.level_smoothing,
            config.trend_smoothing,
            config.season_smoothing,
        )
        weekly = forecast * SEASON / config.horizon_days
        average = daily.sum(axis=1) * SEASON / config.history_days
        prior = config.growth_prior
        scores = weekly * (weekly + prior) / (average + prior)
        # Kept for reports: each product's forecast buyers over the horizon.
        self.demand_forecast = forecast
        return np.where(average > 0, scores, 0.0)


def daily_buyers(data: Interactions, days: int) -> FloatArray:
    """Return products × days distinct buyers, the last column the latest day."""
    log = data.purchases
    recent = log[log["age"] < days]
    day = days - 1 - np.floor(recent["age"].to_numpy()).astype(np.int64)
    frame = recent.assign(day=day).drop_duplicates(["row", "item", "day"])
    cells = frame["item"].to_numpy() * days + frame["day"].to_numpy()
    counts = np.bincount(cells, minlength=data.n_items * days)
    return counts.reshape(data.n_items, days).astype(np.float64)


def holt_winters(
    series: FloatArray, horizon: int, alpha: float, beta: float, gamma: float
) -> FloatArray:
    """Forecast the sum of the next ``horizon`` values of every row, never below 0.

    Additive Holt-Winters with a 7-day season, all rows at once: the level,
    trend and seasonal terms start from the first two weeks and are updated
    day by day with smoothing ``alpha``, ``beta`` and ``gamma``.
    """
    rows, days = series.shape
    if rows == 0:
        return np.zeros(0)
    first, second = series[:, :SEASON], series[:, SEASON : 2 * SEASON]
    level = first.mean(axis=1)
    trend = (second.mean(axis=1) - level) / SEASON
    season = first - level[:, None]

    for day in range(days):
        phase = day % SEASON
        observed = series[:, day]
        previous = level
        level = alpha * (observed - season[:, phase]) + (1 - alpha) * (level + trend)
        trend = beta * (level - previous) + (1 - beta) * trend
        season[:, phase] = gamma * (observed - level) + (1 - gamma) * season[:, phase]

    steps = np.arange(1, horizon + 1)
    seasonal = season[:, (days - 1 + steps) % SEASON].sum(axis=1)
    forecast = horizon * level + trend * steps.sum() + seasonal
    return np.asarray(np.maximum(forecast, 0.0), dtype=np.float64)
