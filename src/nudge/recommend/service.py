"""The recommenders' service: reads the store, caches fitted models, exports lists.

This is the only module of `nudge.recommend` that reads the store (through
`nudge.store.queries`). Fitted models are saved under ``var/models`` keyed by
the strategy, a digest of the data they were fitted on and a digest of their
configuration, so a second run on unchanged data reloads instead of
refitting. `nudge recommend tune` stores its chosen configuration there too
(``tuned.json``); the ``auto`` strategy and every other strategy use it.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from nudge import __version__
from nudge.errors import ConfigError, NudgeError
from nudge.logging import get_logger
from nudge.recommend import make_strategy
from nudge.recommend.base import Recommendations, Strategy
from nudge.recommend.config import STRATEGY_NAMES, RecommendConfig
from nudge.recommend.evaluate import EvaluationReport, evaluate
from nudge.recommend.interactions import Interactions, build_interactions, naive_utc
from nudge.recommend.tune import TuneReport, tune
from nudge.settings import Settings
from nudge.store import queries

log = get_logger(__name__)

EXPORT_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "rank",
    "product_id",
    "score",
    "strategy",
    "reason",
)
DETAIL_COLUMNS: tuple[str, ...] = ("reason_code", "evidence_product_id")
TUNED_FILE = "tuned.json"
# The parts of a configuration that tuning chooses.
TUNED_PARTS: tuple[str, ...] = ("feedback", *STRATEGY_NAMES, "blend")
Progress = Callable[[int, int], None]


class RecommendError(NudgeError):
    """A recommendation run cannot go ahead (no data, unusable saved files)."""


@dataclass
class ExportReport:
    """What an export wrote: customers listed, rows, and who was skipped why."""

    out: Path
    as_of: datetime
    strategy: str
    customers: int = 0
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_file: Path | None = None
    model_reused: bool = False

    def as_json(self) -> dict[str, Any]:
        """Return the report as plain JSON values."""
        return {
            "out": str(self.out),
            "as_of": self.as_of.isoformat(),
            "strategy": self.strategy,
            "customers": self.customers,
            "rows": self.rows,
            "skipped": self.skipped,
            "skipped_file": str(self.skipped_file) if self.skipped_file else None,
            "model_reused": self.model_reused,
        }


class RecommendService:
    """Fit, cache, evaluate, tune and export recommenders over one store."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        config: RecommendConfig | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.models_dir = settings.path(settings.var_dir) / "models"
        self._given = config
        self.last_reused = False

    @property
    def config(self) -> RecommendConfig:
        """Return the configuration in force: given, else settings with tuned models.

        A tuned configuration replaces the models' parts only; rules, batch
        sizes and the other run settings always come from the settings.
        """
        if self._given is not None:
            return self._given
        config = RecommendConfig.from_settings(self.settings)
        tuned = self.tuned()
        if tuned is None:
            return config
        return config.model_copy(
            update={part: getattr(tuned[0], part) for part in TUNED_PARTS}
        )

    def tuned(self) -> tuple[RecommendConfig, dict[str, Any]] | None:
        """Return the stored tuned configuration and its protocol, if any."""
        path = self.models_dir / TUNED_FILE
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return RecommendConfig.model_validate(stored["config"]), stored["protocol"]
        except (ValueError, KeyError) as err:
            raise RecommendError(
                f"{path}: not a tuned configuration nudge can read ({err}); "
                "run `nudge recommend tune` again or delete it"
            ) from err

    def interactions(self, as_of: datetime) -> Interactions:
        """Read everything before ``as_of`` from the store into interactions."""
        as_of = naive_utc(as_of)
        frames = self._frames(as_of, as_of)
        feedback = self.config.feedback
        data = build_interactions(
            frames["lines"],
            frames["products"],
            as_of,
            events=frames["events"],
            # What customers did with nudge's e-mails: clicks and the orders
            # that followed, each with its own weight.
            clicks=queries.email_signals(
                self.engine,
                as_of,
                click_weight=feedback.click_weight,
                order_weight=feedback.email_order_weight,
            ),
            customers=frames["customers"],
            config=feedback,
        )
        log.info(
            "interactions built",
            as_of=as_of.isoformat(),
            customers=data.n_customers,
            products=data.n_items,
            signals=int(data.feedback.nnz),
        )
        return data

    def _frames(
        self, as_of: datetime, lines_until: datetime
    ) -> dict[str, pd.DataFrame]:
        """Read the frames a fit needs (order lines up to ``lines_until``)."""
        return {
            "lines": queries.order_lines(
                self.engine, lines_until, include_guests=False
            ),
            "products": queries.products(self.engine, as_of),
            "events": queries.behaviour_events(self.engine, as_of),
            "customers": queries.customers(self.engine, as_of),
        }

    def model(self, strategy: str, data: Interactions) -> Strategy:
        """Return a fitted model, reloaded when data and configuration are unchanged."""
        config = self.config
        name = "blend" if strategy == "auto" else strategy
        key = f"{name}-{data.version()}-{config.model_digest()}"
        path = self.models_dir / f"{key}.pkl"
        loaded = self._load(path, data)
        self.last_reused = loaded is not None
        if loaded is not None:
            log.info("model reloaded", strategy=name, file=str(path))
            return loaded
        model = make_strategy(name, config).fit(data)
        self._save(model, path, data, config)
        log.info("model fitted", strategy=name, file=str(path))
        return model

    def _load(self, path: Path, data: Interactions) -> Strategy | None:
        """Return the model saved at ``path`` reattached to the data, or None."""
        if not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                model = pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as err:
            log.warning("saved model unusable", file=str(path), error=str(err))
            return None
        if not isinstance(model, Strategy):
            return None
        model.attach(data)
        return model

    def _save(
        self, model: Strategy, path: Path, data: Interactions, config: RecommendConfig
    ) -> None:
        """Save a fitted model and a JSON note of what it was fitted on."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        with partial.open("wb") as handle:
            pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(path)
        note = {
            "strategy": model.name,
            "data_version": data.version(),
            "as_of": data.as_of.isoformat(),
            "config_digest": config.model_digest(),
            "config": config.model_part(),
            "nudge": __version__,
            "saved_at": datetime.now(UTC).isoformat(),
        }
        path.with_suffix(".json").write_text(json.dumps(note, indent=2), "utf-8")

    def recommend(
        self,
        as_of: datetime,
        customer_ids: list[Any],
        *,
        n: int = 10,
        strategy: str = "auto",
        exclude_purchased: bool = False,
        data: Interactions | None = None,
    ) -> tuple[Recommendations, Interactions]:
        """Return lists (rules and reasons applied) for store customer ids."""
        data = data or self.interactions(as_of)
        model = self.model(strategy, data)
        lists = model.recommend(
            customer_ids,
            n,
            exclude_purchased=exclude_purchased,
            rules=self.config.rules,
            batch_size=self.config.batch_size,
        )
        return lists, data

    def customer_id(self, external_id: str) -> int | None:
        """Return the store id of a customer named by the shop's own id."""
        frame = queries.customers(self.engine)
        match = frame.loc[frame["external_id"] == external_id, "id"]
        return int(match.iloc[0]) if len(match) else None

    def export(
        self,
        as_of: datetime,
        out: Path,
        *,
        n: int = 10,
        strategy: str = "auto",
        exclude_purchased: bool = False,
        details: bool = False,
        progress: Progress | None = None,
    ) -> ExportReport:
        """Write every known customer's list as CSV, with the shop's own ids."""
        as_of = naive_utc(as_of)
        data = self.interactions(as_of)
        if data.n_customers == 0:
            raise RecommendError(f"no customer has any history before {as_of:%Y-%m-%d}")
        model = self.model(strategy, data)
        report = ExportReport(out, as_of, strategy, model_reused=self.last_reused)
        columns = [*EXPORT_COLUMNS, *(DETAIL_COLUMNS if details else ())]
        skipped: list[pd.DataFrame] = []
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for lists in self._batches(model, data, n, exclude_purchased, progress):
                rows = _export_rows(lists.items, data, details)
                writer.writerows(rows[columns].itertuples(index=False, name=None))
                report.rows += len(rows)
                report.customers += int(rows["customer_id"].nunique())
                skipped.append(lists.skipped)
        self._write_skipped(report, skipped, data)
        log.info(
            "recommendations exported",
            file=str(out),
            customers=report.customers,
            rows=report.rows,
            skipped=sum(report.skipped.values()),
        )
        return report

    def _batches(
        self,
        model: Strategy,
        data: Interactions,
        n: int,
        exclude_purchased: bool,
        progress: Progress | None,
    ) -> Iterator[Recommendations]:
        """Yield the lists of every customer, one batch at a time."""
        config = self.config
        ids = data.customers.to_numpy()
        done = 0
        for lists in model.recommend_batches(
            ids,
            n,
            exclude_purchased=exclude_purchased,
            rules=config.rules,
            batch_size=config.batch_size,
            workers=config.worker_count(),
        ):
            done = min(done + config.batch_size, len(ids))
            if progress is not None:
                progress(done, len(ids))
            yield lists

    def _write_skipped(
        self, report: ExportReport, parts: list[pd.DataFrame], data: Interactions
    ) -> None:
        """Count the skipped customers by reason, and list them beside the export."""
        skipped = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if skipped.empty:
            return
        report.skipped = {
            str(k): int(v) for k, v in skipped["reason"].value_counts().items()
        }
        rows = data.rows_of(skipped["customer_id"])
        names = data.customer_external[np.maximum(rows, 0)].tolist()
        external = [
            name if row >= 0 else None
            for name, row in zip(names, rows.tolist(), strict=True)
        ]
        path = report.out.with_name(report.out.stem + ".skipped.csv")
        pd.DataFrame({"customer_id": external, "reason": skipped["reason"]}).to_csv(
            path, index=False
        )
        report.skipped_file = path

    def evaluate(
        self,
        cutoff: datetime,
        *,
        k: int | None = None,
        window_days: int | None = None,
        strategies: list[str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> EvaluationReport:
        """Evaluate every strategy and the blend at a cutoff (see `evaluate`)."""
        cutoff = naive_utc(cutoff)
        config = self.config
        window = window_days or config.evaluation.window_days
        frames = self._frames(cutoff, cutoff + timedelta(days=window))
        report = evaluate(
            frames["lines"],
            frames["products"],
            cutoff,
            config=config,
            strategies=strategies,
            events=frames["events"],
            customers=frames["customers"],
            window_days=window,
            k=k,
            progress=progress,
        )
        tuned = self.tuned() if self._given is None else None
        if tuned is not None:
            report.protocol["tuned_at_cutoff"] = tuned[1].get("cutoff")
        return report

    def tune(
        self, cutoff: datetime, *, progress: Callable[[str], None] | None = None
    ) -> TuneReport:
        """Tune on the window before the cutoff and store the chosen configuration."""
        cutoff = naive_utc(cutoff)
        frames = self._frames(cutoff, cutoff)
        base = self._given or RecommendConfig.from_settings(self.settings)
        report = tune(
            frames["lines"],
            frames["products"],
            cutoff,
            config=base,
            events=frames["events"],
            customers=frames["customers"],
            progress=progress,
        )
        self.models_dir.mkdir(parents=True, exist_ok=True)
        path = self.models_dir / TUNED_FILE
        path.write_text(json.dumps(report.as_json(), indent=2, default=str), "utf-8")
        log.info("configuration tuned", file=str(path), cutoff=cutoff.isoformat())
        return report


def _export_rows(
    items: pd.DataFrame, data: Interactions, details: bool
) -> pd.DataFrame:
    """Turn store ids into the shop's own ids and keep the export's columns."""
    rows = data.rows_of(items["customer_id"])
    columns = data.items_of(items["product_id"])
    external = data.catalog["external_id"].to_numpy(object)
    frame = pd.DataFrame(
        {
            "customer_id": data.customer_external[rows],
            "rank": items["rank"].to_numpy(),
            "product_id": external[columns],
            "score": np.round(items["score"].to_numpy(np.float64), 6),
            "strategy": items["strategy"].to_numpy(),
            "reason": items["reason_text"].to_numpy(),
        }
    )
    if details:
        evidence = data.items_of(items["evidence_id"].fillna(-1))
        frame["reason_code"] = items["reason"].to_numpy()
        frame["evidence_product_id"] = np.where(
            evidence >= 0, external[np.maximum(evidence, 0)], ""
        )
    return frame


def parse_names(names: tuple[str, ...] | list[str]) -> list[str]:
    """Check strategy names given on the command line."""
    from nudge.recommend import NAMES

    unknown = [name for name in names if name not in NAMES]
    if unknown:
        raise ConfigError(
            f"unknown strategy {unknown[0]!r}; choose from {', '.join(NAMES)}",
            key="--strategy",
        )
    return list(names)
