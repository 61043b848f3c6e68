"""The single strategies, by name, and how the blend builds them with shared parts."""

from __future__ import annotations

from nudge.recommend.base import Strategy
from nudge.recommend.config import RecommendConfig
from nudge.recommend.strategies.als import ALS
from nudge.recommend.strategies.neighbours import Content, CoPurchase, ItemKNN
from nudge.recommend.strategies.new_arrivals import NewArrivals
from nudge.recommend.strategies.popularity import BestSellers, Trending
from nudge.recommend.strategies.repeat import BuyAgain, MostBought

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        BestSellers,
        Trending,
        MostBought,
        BuyAgain,
        CoPurchase,
        ItemKNN,
        ALS,
        Content,
        NewArrivals,
    )
}


def build_strategy(name: str, config: RecommendConfig) -> Strategy:
    """Build one unfitted strategy from the whole configuration."""
    if name == NewArrivals.name:
        return NewArrivals(
            config.new_arrivals,
            seed=config.seed,
            threads=config.threads,
            als_config=config.als,
            content_config=config.content,
        )
    own = getattr(config, name)
    return STRATEGIES[name](own, seed=config.seed, threads=config.threads)


def build_components(names: list[str], config: RecommendConfig) -> dict[str, Strategy]:
    """Build strategies by name, new arrivals sharing ALS and content with the rest."""
    components = {
        name: build_strategy(name, config) for name in names if name != NewArrivals.name
    }
    if NewArrivals.name in names:
        als = components.get(ALS.name)
        content = components.get(Content.name)
        components[NewArrivals.name] = NewArrivals(
            config.new_arrivals,
            seed=config.seed,
            threads=config.threads,
            als=als if isinstance(als, ALS) else None,
            content=content if isinstance(content, Content) else None,
            als_config=config.als,
            content_config=config.content,
        )
    return components


__all__ = [
    "ALS",
    "STRATEGIES",
    "BestSellers",
    "BuyAgain",
    "CoPurchase",
    "Content",
    "ItemKNN",
    "MostBought",
    "NewArrivals",
    "Trending",
    "build_components",
    "build_strategy",
]
