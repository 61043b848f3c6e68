"""Offline evaluation: a time split, full-ranking metrics, two tasks.

Protocol. Every strategy is fitted on what happened before the cutoff and
ranks the whole catalog known then (no sampled negatives) for each customer
known before the cutoff (a purchase, view or add-to-cart) who buys in the
window after it. The truth of a
customer is the set of distinct products bought (placed, positive quantity)
in the window. Task ``all``: every product counts, repeats included. Task
``new``: the lists leave out what the customer bought before the cutoff and
the truth keeps only products new to the customer; customers with no new
product in the window are not scored. Products first sold after the cutoff
stay in the truth (no strategy can name them), so every recall is honest.

Metrics at k, averaged over scored customers (with H the hits among the
first k and T the truth): Recall = |H| / |T|; HitRate = 1 if H is not empty;
NDCG = DCG / ideal DCG over min(k, |T|) places (binary gains, log2
discount); MAP = sum of precision at each hit / min(k, |T|), as
``implicit.evaluation`` computes it. Coverage is the share of the catalog
recommended to anyone; novelty the mean of -log2 of each recommended
product's share of buyers before the cutoff (add-one smoothed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from nudge.recommend.base import Strategy
from nudge.recommend.blend import Blend
from nudge.recommend.config import STRATEGY_NAMES, RecommendConfig
from nudge.recommend.interactions import (
    BoolArray,
    FloatArray,
    IntArray,
    Interactions,
    build_interactions,
    naive_utc,
)
from nudge.recommend.ranked import Ranked, rank_in_group
from nudge.recommend.strategies import build_components

Task = Literal["all", "new"]
TASKS: tuple[Task, ...] = ("all", "new")
METRICS: tuple[str, ...] = ("ndcg", "recall", "hit_rate", "map", "coverage", "novelty")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Truth:
    """What each scored customer bought in the window, for one task.

    Slot i is the customer at training row ``customers[i]``; ``keys`` holds
    slot * n_items + product for every product the model could name, and
    ``sizes`` the size of each truth, unnameable products included.
    """

    customers: IntArray
    keys: IntArray
    sizes: IntArray
    n_items: int

    def hits(self, ranked: Ranked) -> BoolArray:
        """Tell which entries of the scored customers' lists are in the truth."""
        if not len(self.keys) or not len(ranked):
            return np.zeros(len(ranked), dtype=bool)
        wanted = ranked.slot * self.n_items + ranked.item
        found = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        return np.asarray(self.keys[found] == wanted, dtype=bool)


def window_truth(
    lines: pd.DataFrame,
    train: Interactions,
    start: datetime,
    days: int,
    task: Task,
) -> Truth:
    """Return the truth of the customers known before ``start`` who buy after it."""
    start = naive_utc(start)
    end = start + timedelta(days=days)
    when = pd.to_datetime(lines["ordered_at"])
    keep = (
        lines["customer_id"].notna()
        & (lines["quantity"] > 0)
        & (when >= pd.Timestamp(start))
        & (when < pd.Timestamp(end))
    )
    if "status" in lines.columns:
        keep &= lines["status"].eq("placed")
    window = lines.loc[keep, ["customer_id", "product_id"]].drop_duplicates()
    rows = train.rows_of(window["customer_id"].to_numpy())
    items = train.items_of(window["product_id"].to_numpy())
    known = rows >= 0
    rows, items = rows[known], items[known]
    if task == "new":
        fresh = (items < 0) | ~train.is_bought(rows, np.maximum(items, 0))
        rows, items = rows[fresh], items[fresh]
    return truth_of(rows, items, train.n_items)


def truth_of(rows: IntArray, items: IntArray, n_items: int) -> Truth:
    """Group (row, product) pairs into a truth; product -1 counts but never hits."""
    customers, slots = np.unique(rows, return_inverse=True)
    sizes = np.bincount(slots, minlength=len(customers)).astype(np.int64)
    nameable = items >= 0
    keys = np.sort(slots[nameable].astype(np.int64) * n_items + items[nameable])
    return Truth(customers.astype(np.int64), keys, sizes, n_items)


def metrics(
    ranked: Ranked, truth: Truth, k: int, train: Interactions
) -> dict[str, float]:
    """Return every metric of lists for the truth's customers (slots match)."""
    ranked = ranked.top(k)
    scored = len(truth.customers)
    if scored == 0:
        return dict.fromkeys(METRICS, float("nan"))
    hit = truth.hits(ranked).astype(np.float64)
    place = rank_in_group(ranked.slot)

    # Per customer: hits, discounted gain and average precision.
    hits = np.bincount(ranked.slot, weights=hit, minlength=scored)
    gain = np.bincount(ranked.slot, weights=hit / np.log2(place + 2), minlength=scored)
    ideal_places = np.minimum(k, truth.sizes)
    ideal = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2))))
    earlier = _running_sum(hit, ranked.slot)
    precision = np.bincount(
        ranked.slot, weights=hit * earlier / (place + 1), minlength=scored
    )

    popularity = train.item_popularity[ranked.item]
    surprise = -np.log2((popularity + 1.0) / (train.n_customers + 1.0))
    return {
        "ndcg": float(np.mean(gain / ideal[ideal_places])),
        "recall": float(np.mean(hits / truth.sizes)),
        "hit_rate": float(np.mean(hits > 0)),
        "map": float(np.mean(precision / ideal_places)),
        "coverage": float(len(np.unique(ranked.item)) / max(train.n_items, 1)),
        "novelty": float(surprise.mean()) if len(surprise) else float("nan"),
    }


def _running_sum(values: FloatArray, groups: IntArray) -> FloatArray:
    """Return the cumulative sum of values within each run of equal groups."""
    total = np.cumsum(values)
    rank = rank_in_group(groups)
    before = (total - values)[np.arange(len(values)) - rank]
    return np.asarray(total - before, dtype=np.float64)


def rank_for(
    model: Strategy,
    rows: IntArray,
    k: int,
    *,
    exclude_purchased: bool,
    batch_size: int = 2000,
) -> Ranked:
    """Return a model's top k for the given rows, slots numbering the rows."""
    parts = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        ranked = model.candidates(batch, k, exclude_purchased=exclude_purchased)
        ranked = ranked.top(k)
        parts.append(
            Ranked(
                ranked.slot + start,
                ranked.item,
                ranked.score,
                ranked.reason,
                ranked.evidence,
                ranked.source,
            )
        )
    return Ranked.concat(parts)


def fit_models(
    train: Interactions,
    config: RecommendConfig,
    names: Iterable[str],
    progress: Progress | None = None,
) -> dict[str, Strategy]:
    """Fit the named strategies once each, and the blend on the same components."""
    names = list(names)
    blend = Blend(config) if "blend" in names else None
    wanted = sorted(
        {n for n in names if n != "blend"} | set(blend.components if blend else ())
    )
    components = build_components(wanted, config)
    for name, component in components.items():
        if progress is not None:
            progress(name)
        component.fit(train)
    models: dict[str, Strategy] = {
        name: components[name] for name in names if name != "blend"
    }
    if blend is not None:
        blend.components = {name: components[name] for name in blend.components}
        models["blend"] = blend.fit(train)
    return models


@dataclass(frozen=True)
class EvaluationReport:
    """The metrics of every strategy on both tasks, with the protocol used."""

    protocol: dict[str, Any]
    table: pd.DataFrame

    def as_json(self) -> dict[str, Any]:
        """Return the report as plain JSON values."""
        rows = self.table.astype(object).where(self.table.notna(), None)
        return {"protocol": self.protocol, "results": rows.to_dict(orient="records")}


def evaluate(
    lines: pd.DataFrame,
    products: pd.DataFrame,
    cutoff: datetime,
    *,
    config: RecommendConfig | None = None,
    strategies: Iterable[str] | None = None,
    events: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    window_days: int | None = None,
    k: int | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Fit every strategy before the cutoff and score the window after it."""
    config = config or RecommendConfig()
    window_days = window_days or config.evaluation.window_days
    k = k or config.evaluation.k
    names = list(strategies) if strategies is not None else [*STRATEGY_NAMES, "blend"]
    cutoff = naive_utc(cutoff)
    train = build_interactions(
        lines,
        products,
        cutoff,
        events=events,
        customers=customers,
        config=config.feedback,
    )
    models = fit_models(train, config, names, progress)

    rows = []
    for task in TASKS:
        truth = window_truth(lines, train, cutoff, window_days, task)
        for name, model in models.items():
            if progress is not None:
                progress(f"{name} ({task})")
            ranked = rank_for(
                model,
                truth.customers,
                k,
                exclude_purchased=task == "new",
                batch_size=config.batch_size,
            )
            scores = metrics(ranked, truth, k, train)
            rows.append(
                {"task": task, "strategy": name, "customers": len(truth.customers)}
                | scores
            )
    protocol = {
        "cutoff": cutoff.isoformat(),
        "window_days": window_days,
        "window_end": (cutoff + timedelta(days=window_days)).isoformat(),
        "k": k,
        "train_customers": train.n_customers,
        "catalog": train.n_items,
        "config": config.model_digest(),
    }
    return EvaluationReport(protocol, pd.DataFrame(rows))
