"""The `[insight]` settings: churn bands, stage rules and the small-data threshold.

Each field is set in the ``[insight]`` table of ``config/nudge.toml`` or by
``NUDGE_INSIGHT_<FIELD>``; the settings validate them with this model.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InsightConfig(BaseModel):
    """Thresholds and weights of the customer profiles, with documented defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Below this many customers who bought on two or more days, BG/NBD and
    # Gamma-Gamma are not fitted and every customer gets the gap heuristic.
    min_repeat_buyers: int = Field(default=100, ge=10)
    # What a fit that fails above that threshold does: stop with the reason
    # ("error"), or give every customer the gap heuristic and say why.
    fit_failure: Literal["error", "heuristic"] = "error"

    # Churn risk at or above these values is "medium" / "high"; a customer is
    # "churned" at or above churned_from.
    churn_medium_from: float = Field(default=0.3, gt=0, lt=1)
    churn_high_from: float = Field(default=0.7, gt=0, lt=1)
    churned_from: float = Field(default=0.9, gt=0, le=1)

    # "Valuable enough to win back": spend at or above this quantile of the
    # spend of all profiled customers.
    win_back_value_quantile: float = Field(default=0.5, ge=0, le=1)

    # Lifecycle: "new" while the first purchase is this recent; "reactivated"
    # while a purchase that ended a gap at least reactivation_gap_days long is
    # more recent than reactivated_days.
    new_days: int = Field(default=30, ge=1)
    reactivation_gap_days: int = Field(default=180, ge=1)
    reactivated_days: int = Field(default=90, ge=1)

    # Gap heuristic: P(alive) = exp(-days since last purchase / (scale * gap)),
    # gap = (span of own repeats + prior_weight * shop gap) / (repeats + weight).
    heuristic_gap_scale: float = Field(default=2.0, gt=0)
    gap_prior_weight: float = Field(default=2.0, gt=0)
    default_gap_days: float = Field(default=90.0, gt=0)

    # Customer lifetime value: months ahead and the monthly discount rate.
    clv_months: int = Field(default=12, ge=1, le=120)
    monthly_discount_rate: float = Field(default=0.01, ge=0, lt=1)
    # An expected next order further away than this is stored as "none".
    next_order_max_days: int = Field(default=730, ge=1)

    # Affinities: weight of a bought line, an add-to-cart and a view; how many
    # categories, brands and price bands to keep per customer.
    affinity_purchase_weight: float = Field(default=3.0, ge=0)
    affinity_cart_weight: float = Field(default=2.0, ge=0)
    affinity_view_weight: float = Field(default=1.0, ge=0)
    affinity_top: int = Field(default=3, ge=1, le=20)

    # Replenishment: repeat gaps a product needs for its own estimate; below
    # it the product's category stands in.
    replenishment_min_gaps: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _ordered_bands(self) -> Self:
        if not self.churn_medium_from < self.churn_high_from <= self.churned_from:
            raise ValueError(
                "churn bands must satisfy churn_medium_from < churn_high_from "
                "<= churned_from"
            )
        return self

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        """Return the `[insight]` config the settings hold, or the defaults."""
        config = settings.section("insight") if settings is not None else None
        return config if isinstance(config, cls) else cls()
