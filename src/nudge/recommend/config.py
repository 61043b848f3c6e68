"""Configuration of the recommenders, rules, reasons, evaluation and tuning.

Every model's configuration is a frozen pydantic model with documented
defaults, kept apart from its fitted state. The defaults of the blend, ALS and
the other strategies are the values `nudge recommend tune` chose on Online
Retail II (validation window before 2011-09-01); a shop's own tuning run
stores its choice next to the fitted models and `auto` uses that instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    """A frozen configuration that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def digest(self) -> str:
        """Return a short, stable hash of every value, for cache keys."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeedbackConfig(_Config):
    """How purchases, add-to-carts, views and e-mail clicks become one weight."""

    # Purchases count once per order; the others once per event.
    purchase_weight: float = Field(default=4.0, ge=0)
    cart_weight: float = Field(default=2.0, ge=0)
    view_weight: float = Field(default=1.0, ge=0)
    # An e-mail click on a product's page; a product bought within five days
    # of such a click gets email_order_weight on top of its purchase.
    click_weight: float = Field(default=0.5, ge=0)
    email_order_weight: float = Field(default=2.0, ge=0)
    # An interaction this many days old counts half; None keeps every one whole.
    half_life_days: float | None = Field(default=None, gt=0)
    # "log" turns a weight w into log(1 + w), damping wholesale repeat buyers.
    scaling: Literal["linear", "log"] = "log"


class BestSellersConfig(_Config):
    """Best sellers: distinct buyers over a look-back window."""

    window_days: int = Field(default=90, ge=1)
    # Rank the best sellers of the customer's favourite categories first.
    per_category: bool = True
    categories: int = Field(default=3, ge=1, le=20)


class TrendingConfig(_Config):
    """Trending: a Holt-Winters forecast of each product's buyers a day."""

    history_days: int = Field(default=56, ge=14)
    horizon_days: int = Field(default=7, ge=1, le=28)
    # Smoothing of the level, the trend and the day-of-week pattern.
    level_smoothing: float = Field(default=0.3, gt=0, lt=1)
    trend_smoothing: float = Field(default=0.1, gt=0, lt=1)
    season_smoothing: float = Field(default=0.1, gt=0, lt=1)
    # Buyers a week added to both sides of the growth ratio, so that a product
    # going from one buyer to two does not outrank a steady best seller.
    growth_prior: float = Field(default=2.0, gt=0)
    per_category: bool = True
    categories: int = Field(default=3, ge=1, le=20)


class MostBoughtConfig(_Config):
    """The baseline: a customer's own items by the number of orders holding them."""


class BuyAgainConfig(_Config):
    """Buy again: own repeat purchases, timed by the replenishment gap."""

    # An order this many days old counts half; None weighs every order alike.
    half_life_days: float | None = Field(default=90.0, gt=0)
    # Score grows as orders ** count_power (below 1 damps heavy repeaters).
    count_power: float = Field(default=1.0, gt=0, le=3)
    # Extra weight for an item whose typical gap has (nearly) passed.
    due_boost: float = Field(default=0.5, ge=0)
    # "Due" from this share of the typical gap on.
    due_from: float = Field(default=0.8, gt=0, le=3)
    # Repeat gaps a product needs for its own typical gap.
    min_gaps: int = Field(default=5, ge=1)


class CoPurchaseConfig(_Config):
    """Frequently bought together, from items sharing an order."""

    neighbours: int = Field(default=50, ge=1, le=1000)
    # Ranks partners by count / partner_orders ** (beta / 2): 0 ranks by
    # confidence, 2 by lift.
    beta: float = Field(default=1.0, ge=0, le=2)
    min_count: int = Field(default=2, ge=1)
    min_lift: float = Field(default=1.0, ge=0)
    # Items of older orders count half after this many days (cross-sell
    # follows the latest order).
    half_life_days: float = Field(default=30.0, gt=0)


class ItemKNNConfig(_Config):
    """Item-to-item collaborative filtering with implicit's nearest neighbours."""

    kind: Literal["bm25", "cosine"] = "bm25"
    neighbours: int = Field(default=50, ge=1, le=2000)
    k1: float = Field(default=1.2, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)


class ALSConfig(_Config):
    """Matrix factorization with implicit's alternating least squares."""

    factors: int = Field(default=64, ge=2, le=1024)
    regularization: float = Field(default=0.05, gt=0)
    alpha: float = Field(default=0.5, gt=0)
    iterations: int = Field(default=15, ge=1, le=200)
    # Rank only this many products, the best sellers (recent, then all-time):
    # scoring costs a dot product per product, and a long tail nobody bought
    # is left to the other strategies. 0 ranks the whole catalog.
    max_items: int = Field(default=20_000, ge=0)


class ContentConfig(_Config):
    """Content-based: TF-IDF over title, description, category and brand."""

    neighbours: int = Field(default=50, ge=1, le=1000)
    # Words in more than this share of products say nothing about taste.
    max_df: float = Field(default=0.2, gt=0, le=1)
    # Older purchases count half after this many days.
    half_life_days: float = Field(default=90.0, gt=0)


class NewArrivalsConfig(_Config):
    """New arrivals ranked by the customer's affinity with them."""

    # A product is new while it is younger than this.
    window_days: int = Field(default=60, ge=1)
    # At most this many new products are ranked: those selling fastest since
    # they arrived (the newest first among equals).
    max_products: int = Field(default=1000, ge=1)
    content_weight: float = Field(default=1.0, ge=0)
    category_weight: float = Field(default=0.5, ge=0)
    als_weight: float = Field(default=0.5, ge=0)


STRATEGY_NAMES: tuple[str, ...] = (
    "best_sellers",
    "trending",
    "most_bought",
    "buy_again",
    "co_purchase",
    "item_knn",
    "als",
    "content",
    "new_arrivals",
)

# Where an entry of a list came from: a strategy, the blend or a pinned item.
SOURCES: tuple[str, ...] = (*STRATEGY_NAMES, "blend", "pinned")
SOURCE = {name: number for number, name in enumerate(SOURCES)}


class BlendConfig(_Config):
    """The hybrid: weights of each strategy's normalized scores, by task.

    `weights` serve lists that may repeat past purchases; `new_weights` serve
    lists of items new to the customer. A strategy with weight 0 is not fitted.
    """

    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "buy_again": 1.0,
            "als": 0.15,
            "item_knn": 0.1,
            "trending": 0.12,
            "best_sellers": 0.16,
            "new_arrivals": 0.02,
        }
    )
    new_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "new_arrivals": 0.2,
            "co_purchase": 0.1,
            "content": 0.1,
            "best_sellers": 0.08,
            "als": 0.05,
            "item_knn": 0.0312,
            "trending": 0.025,
        }
    )
    # Candidates each strategy proposes for every customer.
    pool: int = Field(default=50, ge=1, le=1000)
    # "score": score / the customer's best score of that strategy; "rank":
    # 1 / (rank + rank_offset), as in reciprocal rank fusion.
    fusion: Literal["score", "rank"] = "score"
    rank_offset: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _known_strategies(self) -> Self:
        for table in (self.weights, self.new_weights):
            for name, weight in table.items():
                if name not in STRATEGY_NAMES:
                    raise ValueError(f"unknown strategy {name!r} in blend weights")
                if weight < 0:
                    raise ValueError(f"blend weight of {name} must not be negative")
        return self


class RulesConfig(_Config):
    """Business rules applied before the final cut."""

    # "keep" lets past purchases through (ranked by the strategy), "unless_due"
    # keeps only those whose replenishment gap has come round, "exclude" none.
    purchased: Literal["keep", "unless_due", "exclude"] = "keep"
    # "Due" from this share of the pair's typical repeat gap on.
    due_from: float = Field(default=0.8, gt=0, le=3)
    exclude_out_of_stock: bool = True
    require_image: bool = True
    require_url: bool = True
    min_price: float | None = Field(default=None, ge=0)
    max_price: float | None = Field(default=None, ge=0)
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    include_brands: tuple[str, ...] = ()
    exclude_brands: tuple[str, ...] = ()
    # The shop's product ids never to recommend (e.g. postage, gift vouchers).
    exclude_products: tuple[str, ...] = ()
    max_per_category: int | None = Field(default=None, ge=1)
    # Score multipliers: 1 + new_boost for products younger than new_days, and
    # 1 + margin_boost * margin (a 0..1 share) where the catalog has a margin.
    new_boost: float = Field(default=0.0, ge=0)
    new_days: int = Field(default=30, ge=1)
    margin_boost: float = Field(default=0.0, ge=0)
    # The shop's product ids placed first in every list.
    pinned: tuple[str, ...] = ()
    # A list shorter than this after the rules (and the best-seller fill) is
    # not sent; the customer is skipped with a reason.
    min_items: int = Field(default=3, ge=1)
    # Fill short lists with the best sellers that pass the rules.
    fill: bool = True


class EvaluationConfig(_Config):
    """The offline protocol: a time split at the cutoff."""

    window_days: int = Field(default=28, ge=1)
    k: int = Field(default=10, ge=1, le=100)


class TuneConfig(_Config):
    """The search of `nudge recommend tune` on a validation window."""

    validation_days: int = Field(default=28, ge=7)
    factors: tuple[int, ...] = (32, 64, 128)
    regularization: tuple[float, ...] = (0.05, 0.2, 0.8)
    alpha: tuple[float, ...] = (0.5, 1.0, 4.0)
    iterations: tuple[int, ...] = (15, 30)
    neighbours: tuple[int, ...] = (50, 100, 300)
    # Random ALS configurations tried (the full grid is large).
    als_trials: int = Field(default=16, ge=1)
    # Rounds of coordinate search over the blend weights.
    blend_rounds: int = Field(default=3, ge=1)


class RecommendConfig(_Config):
    """Everything the recommenders read, with documented defaults."""

    seed: int = 42
    # Threads for implicit; 0 means one per core.
    threads: int = Field(default=0, ge=0)
    batch_size: int = Field(default=2000, ge=1)
    # Processes sharing the batches of an export; 0 means one per core.
    workers: int = Field(default=0, ge=0)
    feedback: FeedbackConfig = FeedbackConfig()
    best_sellers: BestSellersConfig = BestSellersConfig()
    trending: TrendingConfig = TrendingConfig()
    most_bought: MostBoughtConfig = MostBoughtConfig()
    buy_again: BuyAgainConfig = BuyAgainConfig()
    co_purchase: CoPurchaseConfig = CoPurchaseConfig()
    item_knn: ItemKNNConfig = ItemKNNConfig()
    als: ALSConfig = ALSConfig()
    content: ContentConfig = ContentConfig()
    new_arrivals: NewArrivalsConfig = NewArrivalsConfig()
    blend: BlendConfig = BlendConfig()
    rules: RulesConfig = RulesConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tune: TuneConfig = TuneConfig()

    def model_part(self) -> dict[str, Any]:
        """Return the values that change a fitted model (not rules or reports)."""
        return self.model_dump(
            mode="json",
            exclude={
                "rules",
                "evaluation",
                "tune",
                "batch_size",
                "workers",
                "threads",
            },
        )

    def model_digest(self) -> str:
        """Return a short hash of the values that change a fitted model."""
        text = json.dumps(self.model_part(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def worker_count(self) -> int:
        """Return how many processes share an export's batches."""
        return self.workers or os.cpu_count() or 1

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        """Return the `[recommend]` config the settings hold, or the defaults.

        A part's field is ``[recommend.<part>] <field>`` in ``config/nudge.toml``
        or ``NUDGE_RECOMMEND_<PART>_<FIELD>``.
        """
        config = settings.section("recommend") if settings is not None else None
        return config if isinstance(config, cls) else cls()
