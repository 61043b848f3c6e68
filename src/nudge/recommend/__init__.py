"""Recommenders: strategies, the hybrid blend, business rules, reasons, evaluation.

Every recommender is a component: ``make_strategy(name, config)`` builds it,
``fit(interactions)`` returns it fitted, and ``recommend(customer_ids, n)``
returns ranked products with scores and reasons.
"""

from __future__ import annotations

from nudge.recommend.base import NotFittedError, Recommendations, Strategy
from nudge.recommend.blend import Blend
from nudge.recommend.config import STRATEGY_NAMES, RecommendConfig, RulesConfig
from nudge.recommend.interactions import Interactions, build_interactions
from nudge.recommend.strategies import STRATEGIES, build_strategy

# Names a user may ask for: every strategy, the blend, and "auto" (the tuned blend).
NAMES: tuple[str, ...] = (*STRATEGY_NAMES, "blend", "auto")


def make_strategy(name: str, config: RecommendConfig | None = None) -> Strategy:
    """Build an unfitted recommender by name ("blend" and "auto" build the blend)."""
    config = config or RecommendConfig()
    if name in ("blend", "auto"):
        return Blend(config)
    if name not in STRATEGIES:
        from nudge.errors import ConfigError

        raise ConfigError(
            f"unknown strategy {name!r}; choose one of {', '.join(NAMES)}",
            key="strategy",
        )
    return build_strategy(name, config)


__all__ = [
    "NAMES",
    "Blend",
    "Interactions",
    "NotFittedError",
    "RecommendConfig",
    "Recommendations",
    "RulesConfig",
    "Strategy",
    "build_interactions",
    "make_strategy",
]
