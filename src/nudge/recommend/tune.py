"""Search the main parameters on a validation window that ends at the cutoff.

The models are fitted on what happened before ``cutoff - validation_days``
and scored (NDCG@k, the protocol of `nudge.recommend.evaluate`) on the
purchases of the validation window, so nothing at or after the cutoff is
seen. The search runs in stages, each keeping its best value:

1. ALS: factors, regularization, alpha and iterations, a seeded random
   sample of the grid, on products new to the customer (where ALS matters);
2. item-kNN: neighbours and BM25 versus cosine, same task;
3. co-purchase: the confidence-to-lift exponent, same task;
4. buy-again: half-life and due boost, on lists that may repeat purchases;
5. the blend: fusion by score or rank, then rounds of coordinate search over
   each strategy's weight, for each task on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from nudge.recommend.base import Strategy
from nudge.recommend.blend import fuse, normalized
from nudge.recommend.config import BlendConfig, RecommendConfig
from nudge.recommend.evaluate import Task, Truth, metrics, rank_for, window_truth
from nudge.recommend.interactions import Interactions, build_interactions, naive_utc
from nudge.recommend.ranked import Ranked
from nudge.recommend.strategies import build_components, build_strategy

Progress = Callable[[str], None]
# Multipliers tried on each blend weight per round (0 drops the strategy).
WEIGHT_STEPS: tuple[float, ...] = (0.0, 0.25, 0.5, 2.0, 4.0)
BUY_AGAIN_HALF_LIVES: tuple[float | None, ...] = (30.0, 90.0, 180.0, 365.0, None)
DUE_BOOSTS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
CO_PURCHASE_BETAS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class TuneReport:
    """The chosen configuration and every trial's validation score."""

    config: RecommendConfig
    trials: pd.DataFrame
    protocol: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """Return the report as plain JSON values."""
        return {
            "protocol": self.protocol,
            "config": self.config.model_dump(mode="json"),
            "trials": self.trials.to_dict(orient="records"),
        }


class _Validation:
    """The validation split, and scoring of one model on one task."""

    def __init__(
        self,
        lines: pd.DataFrame,
        train: Interactions,
        start: datetime,
        days: int,
        k: int,
    ) -> None:
        self.train = train
        self.k = k
        self.truths: dict[Task, Truth] = {
            task: window_truth(lines, train, start, days, task)
            for task in ("all", "new")
        }

    def score(self, model: Strategy, task: Task) -> float:
        """Return a fitted model's NDCG@k on the validation window."""
        truth = self.truths[task]
        ranked = rank_for(
            model, truth.customers, self.k, exclude_purchased=task == "new"
        )
        return metrics(ranked, truth, self.k, self.train)["ndcg"]


def tune(
    lines: pd.DataFrame,
    products: pd.DataFrame,
    cutoff: datetime,
    *,
    config: RecommendConfig | None = None,
    events: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    progress: Progress | None = None,
) -> TuneReport:
    """Choose the configuration that scores best on the window before the cutoff."""
    config = config or RecommendConfig()
    days = config.tune.validation_days
    start = naive_utc(cutoff) - timedelta(days=days)
    train = build_interactions(
        lines,
        products,
        start,
        events=events,
        customers=customers,
        config=config.feedback,
    )
    check = _Validation(lines, train, start, days, config.evaluation.k)
    trials: list[dict[str, Any]] = []

    def note(stage: str, values: dict[str, Any], task: Task, ndcg: float) -> None:
        trials.append({"stage": stage, "task": task, "ndcg": ndcg} | values)
        if progress is not None:
            progress(f"{stage} {values} ndcg={ndcg:.4f}")

    config = _tune_als(config, check, note)
    config = _tune_item_knn(config, check, note)
    config = _tune_co_purchase(config, check, note)
    config = _tune_buy_again(config, check, note)
    config = _tune_blend(config, check, note)
    protocol = {
        "cutoff": naive_utc(cutoff).isoformat(),
        "validation_start": start.isoformat(),
        "validation_days": days,
        "k": config.evaluation.k,
        "metric": "ndcg",
    }
    return TuneReport(config, pd.DataFrame(trials), protocol)


Note = Callable[[str, dict[str, Any], Task, float], None]


def _best(
    config: RecommendConfig,
    check: _Validation,
    note: Note,
    stage: str,
    candidates: Iterable[dict[str, Any]],
    task: Task,
) -> RecommendConfig:
    """Fit one strategy per candidate setting and keep the best scoring one."""
    best_score, best = -1.0, config
    for values in candidates:
        trial = config.model_copy(
            update={stage: getattr(config, stage).model_copy(update=values)}
        )
        model = build_strategy(stage, trial).fit(check.train)
        ndcg = check.score(model, task)
        note(stage, values, task, ndcg)
        if ndcg > best_score:
            best_score, best = ndcg, trial
    return best


def _tune_als(
    config: RecommendConfig, check: _Validation, note: Note
) -> RecommendConfig:
    """Try a seeded random sample of the ALS grid."""
    grid = config.tune
    combos = list(
        itertools.product(
            grid.factors, grid.regularization, grid.alpha, grid.iterations
        )
    )
    rng = np.random.default_rng(config.seed)
    picked = rng.choice(
        len(combos), size=min(grid.als_trials, len(combos)), replace=False
    )
    candidates = [
        dict(
            zip(
                ("factors", "regularization", "alpha", "iterations"),
                combos[i],
                strict=True,
            )
        )
        for i in sorted(picked.tolist())
    ]
    return _best(config, check, note, "als", candidates, "new")


def _tune_item_knn(
    config: RecommendConfig, check: _Validation, note: Note
) -> RecommendConfig:
    """Try each neighbour count with BM25 and cosine weighting."""
    candidates = [
        {"kind": kind, "neighbours": neighbours}
        for kind in ("bm25", "cosine")
        for neighbours in config.tune.neighbours
    ]
    return _best(config, check, note, "item_knn", candidates, "new")


def _tune_co_purchase(
    config: RecommendConfig, check: _Validation, note: Note
) -> RecommendConfig:
    """Try partners ranked from confidence to lift."""
    candidates = [{"beta": beta} for beta in CO_PURCHASE_BETAS]
    return _best(config, check, note, "co_purchase", candidates, "new")


def _tune_buy_again(
    config: RecommendConfig, check: _Validation, note: Note
) -> RecommendConfig:
    """Try how fast old orders fade and how much being due counts."""
    candidates = [
        {"half_life_days": half_life, "due_boost": boost}
        for half_life in BUY_AGAIN_HALF_LIVES
        for boost in DUE_BOOSTS
    ]
    return _best(config, check, note, "buy_again", candidates, "all")


def _tune_blend(
    config: RecommendConfig, check: _Validation, note: Note
) -> RecommendConfig:
    """Search fusion and weights of each task on precomputed candidates."""
    names = sorted(set(config.blend.weights) | set(config.blend.new_weights))
    components = build_components(names, config)
    for component in components.values():
        component.fit(check.train)
    blend, rounds = config.blend, config.tune.blend_rounds
    best_score, best = -np.inf, blend
    for fusion in ("score", "rank"):
        trial = blend.model_copy(update={"fusion": fusion})
        weights, score_all = _search_weights(
            trial, components, check, note, ("all", rounds), blend.weights
        )
        new_weights, score_new = _search_weights(
            trial, components, check, note, ("new", rounds), blend.new_weights
        )
        if score_all + score_new > best_score:
            best_score = score_all + score_new
            best = BlendConfig.model_validate(
                trial.model_dump() | {"weights": weights, "new_weights": new_weights}
            )
    return config.model_copy(update={"blend": best})


def _search_weights(
    blend: BlendConfig,
    components: dict[str, Strategy],
    check: _Validation,
    note: Note,
    search: tuple[Task, int],
    start: dict[str, float],
) -> tuple[dict[str, float], float]:
    """Coordinate search of one task's weights; return them and their score."""
    task, rounds = search
    truth = check.truths[task]
    shares = {
        name: _shares(model, truth, blend, check.k, task == "new")
        for name, model in components.items()
    }
    weights = {name: start.get(name, 0.0) for name in components}

    def score(trial: dict[str, float]) -> float:
        parts = [
            _scaled(shares[name], weight)
            for name, weight in trial.items()
            if weight > 0
        ]
        return metrics(fuse(parts), truth, check.k, check.train)["ndcg"]

    best = score(weights)
    for _ in range(rounds):
        for name in components:
            current = weights[name] if weights[name] > 0 else 0.05
            for step in WEIGHT_STEPS:
                trial = weights | {name: current * step}
                value = score(trial)
                if value > best + 1e-6:
                    best, weights = value, trial
    note("blend", {"fusion": blend.fusion, "weights": weights}, task, best)
    return {name: round(w, 4) for name, w in weights.items() if w > 0}, best


def _shares(
    model: Strategy, truth: Truth, blend: BlendConfig, k: int, exclude: bool
) -> Ranked:
    """Return a strategy's normalized candidates for the validation customers."""
    pool = max(blend.pool, k)
    ranked = rank_for(model, truth.customers, pool, exclude_purchased=exclude)
    return _scaled(ranked, 1.0, normalized(ranked, blend))


def _scaled(ranked: Ranked, weight: float, scores: Any = None) -> Ranked:
    """Return the entries with their scores replaced and multiplied by a weight."""
    values = ranked.score if scores is None else scores
    return Ranked(
        ranked.slot,
        ranked.item,
        weight * values,
        ranked.reason,
        ranked.evidence,
        ranked.source,
    )
