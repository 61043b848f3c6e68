"""The recommender component every strategy (and the blend) is.

A strategy's configuration is given at construction and never changes;
`fit(interactions)` learns its state and returns the fitted strategy;
`recommend(customer_ids, n)` returns ranked products with scores and reasons.
A subclass fills in three hooks: `_fit`, `candidates` (scored products for
a batch of customers) and, where its reasons name a product, `explain`.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy import sparse

from nudge.errors import NudgeError
from nudge.logging import get_logger
from nudge.recommend import reasons as reason_text
from nudge.recommend.config import SOURCE, SOURCES, RulesConfig
from nudge.recommend.interactions import IntArray, Interactions
from nudge.recommend.ranked import Ranked, rank_in_group
from nudge.recommend.rules import Rules

log = get_logger(__name__)

ITEM_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "rank",
    "product_id",
    "score",
    "strategy",
    "reason",
    "reason_text",
    "evidence_id",
)
SKIP_COLUMNS: tuple[str, ...] = ("customer_id", "reason")
# A forked worker silent this long on one batch is given up on.
WORKER_TIMEOUT_S = 600.0


class NotFittedError(NudgeError):
    """A recommender was asked for lists before it was fitted."""


@dataclass(frozen=True)
class Recommendations:
    """Ranked lists, and the customers who got none (or too short a list) and why.

    ``items`` columns: customer_id and product_id (store ids), rank (from 1),
    score, strategy (the one that placed the item), reason (a machine code),
    reason_text (a sentence) and evidence_id (the product the reason names,
    or None). ``skipped`` columns: customer_id, reason.
    """

    items: pd.DataFrame
    skipped: pd.DataFrame

    @classmethod
    def empty(cls) -> Recommendations:
        """Return lists for nobody."""
        return cls(
            pd.DataFrame({name: [] for name in ITEM_COLUMNS}),
            pd.DataFrame({name: [] for name in SKIP_COLUMNS}),
        )


class Strategy(ABC):
    """A recommender: configured once, fitted on interactions, asked in batches."""

    name: ClassVar[str]
    # Whether the lists depend on the customer (unknown customers get none).
    personal: ClassVar[bool] = True

    def __init__(self, config: Any = None, *, seed: int = 42, threads: int = 0) -> None:
        self.config = config if config is not None else self.default_config()
        self.seed = seed
        self.threads = threads
        self._data: Interactions | None = None
        self._fitted = False

    @classmethod
    @abstractmethod
    def default_config(cls) -> Any:
        """Return the strategy's configuration with its defaults."""

    @property
    def data(self) -> Interactions:
        """Return the interactions the strategy was fitted on."""
        if self._data is None:
            raise NotFittedError(f"the {self.name} recommender is not fitted")
        return self._data

    @property
    def source(self) -> int:
        """Return this strategy's number among the list sources."""
        return SOURCE[self.name]

    @property
    def fitted(self) -> bool:
        """Tell whether `fit` has run."""
        return self._fitted

    def fit(self, data: Interactions) -> Self:
        """Learn from interactions and return the fitted strategy."""
        self._data = data
        self._fit(data)
        self._fitted = True
        return self

    def attach(self, data: Interactions) -> Self:
        """Give a reloaded model the (unchanged) interactions it was fitted on."""
        if self._fitted:
            self._data = data
        return self

    def __getstate__(self) -> dict[str, Any]:
        # The interactions are rebuilt from the store and attached on load;
        # saving them beside every model would only repeat the data.
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @abstractmethod
    def _fit(self, data: Interactions) -> None:
        """Learn the strategy's state from the interactions."""

    @abstractmethod
    def candidates(
        self, rows: IntArray, m: int, *, exclude_purchased: bool = False
    ) -> Ranked:
        """Return up to m scored products for each row (-1: unknown customer)."""

    def explain(self, rows: IntArray, ranked: Ranked) -> Ranked:
        """Return the entries with the product behind each reason filled in."""
        return ranked

    def recommend(
        self,
        customer_ids: Iterable[Any],
        n: int = 10,
        *,
        exclude_purchased: bool = False,
        rules: RulesConfig | None = None,
        templates: Mapping[str, tuple[str, str]] | None = None,
        batch_size: int = 2000,
        workers: int = 1,
    ) -> Recommendations:
        """Return up to n products for each customer, with scores and reasons.

        Without ``rules`` the lists are the strategy's own; with them, products
        are filtered, boosted, pinned and filled before the cut, and a customer
        whose list stays below the minimum length is skipped with a reason.
        """
        parts = list(
            self.recommend_batches(
                customer_ids,
                n,
                exclude_purchased=exclude_purchased,
                rules=rules,
                templates=templates,
                batch_size=batch_size,
                workers=workers,
            )
        )
        if not parts:
            return Recommendations.empty()
        return Recommendations(
            pd.concat([p.items for p in parts], ignore_index=True),
            pd.concat([p.skipped for p in parts], ignore_index=True),
        )

    def recommend_batches(
        self,
        customer_ids: Iterable[Any],
        n: int = 10,
        *,
        exclude_purchased: bool = False,
        rules: RulesConfig | None = None,
        templates: Mapping[str, tuple[str, str]] | None = None,
        batch_size: int = 2000,
        workers: int = 1,
    ) -> Iterator[Recommendations]:
        """Yield the lists batch by batch, in order (see `recommend`).

        With ``workers`` above 1 (and where processes can fork), batches are
        shared among that many forked processes that inherit the fitted model.
        """
        data = self.data
        ids = np.asarray(list(customer_ids), dtype=object)
        applied = Rules(rules, data) if rules is not None else None
        chunks = [
            ids[start : start + batch_size] for start in range(0, len(ids), batch_size)
        ]
        job = _Job(self, chunks, n, exclude_purchased, applied, templates)
        if workers > 1 and len(chunks) > 1 and _can_fork():
            # Tables built on first use are built once here, not in each worker.
            data.warm()
            batches = _forked(job, workers)
        else:
            batches = (job.run(chunk) for chunk in chunks)

        # A list shorter than asked (yet long enough to send) is said so once.
        # Ranks run 1, 2, ... per customer: lists that start but never reach
        # rank n are the short ones.
        short = 0
        for lists in batches:
            ranks = lists.items["rank"].to_numpy()
            short += int((ranks == 1).sum() - (ranks == n).sum())
            yield lists
        if short:
            log.info(
                "lists shorter than asked", customers=short, n=n, strategy=self.name
            )

    def _batch(
        self,
        ids: np.ndarray[Any, Any],
        n: int,
        exclude_purchased: bool,
        rules: Rules | None,
        templates: Mapping[str, tuple[str, str]] | None,
    ) -> Recommendations:
        """Return the lists of one batch of customers."""
        rows = self.data.rows_of(ids)
        pool = n if rules is None else rules.pool(n)
        ranked = self.candidates(rows, pool, exclude_purchased=exclude_purchased)
        if rules is not None:
            ranked = rules.apply(ranked, rows, n, exclude_purchased)
        ranked = self.explain(rows, ranked.top(n))

        # Lists below the minimum length are not sent: their customers are
        # skipped with a reason instead.
        minimum = rules.minimum(n) if rules is not None else 1
        counts = ranked.counts(len(rows))
        keep = counts[ranked.slot] >= minimum
        return Recommendations(
            self._frame(ids, ranked.take(keep), templates),
            _skipped(ids, rows, counts, minimum, self.personal, rules),
        )

    def single_threaded(self) -> None:  # noqa: B027 (most strategies use no threads)
        """Make every later call use one thread (in forked worker processes)."""

    def _frame(
        self,
        ids: np.ndarray[Any, Any],
        ranked: Ranked,
        templates: Mapping[str, tuple[str, str]] | None,
    ) -> pd.DataFrame:
        """Turn a batch's entries into rows of the items frame."""
        data = self.data
        products = data.products.to_numpy()
        has_evidence = ranked.evidence >= 0
        evidence_ids = np.full(len(ranked), None, dtype=object)
        evidence_ids[has_evidence] = products[ranked.evidence[has_evidence]].tolist()
        return pd.DataFrame(
            {
                "customer_id": ids[ranked.slot],
                "rank": _ranks(ranked.slot),
                "product_id": products[ranked.item],
                "score": ranked.score,
                "strategy": np.asarray(SOURCES, dtype=object)[ranked.source],
                "reason": np.asarray(reason_text.CODES, dtype=object)[ranked.reason],
                "reason_text": _sentences(data, ranked, templates),
                # As a list, so that pandas types it (float with NaN where
                # some entries name no product).
                "evidence_id": evidence_ids.tolist(),
            }
        )


def _sentences(
    data: Interactions,
    ranked: Ranked,
    templates: Mapping[str, tuple[str, str]] | None,
) -> np.ndarray[Any, Any]:
    """Return each entry's reason sentence, rendering each distinct one once."""
    if not len(ranked):
        return np.zeros(0, dtype=object)

    # A sentence depends only on the code, the evidence and the category.
    category = data.category_codes[ranked.item]
    keys = ranked.reason.astype(np.int64) * (data.n_items + 1) + ranked.evidence + 1
    keys = keys * (len(data.category_names) + 1) + category + 1
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)

    evidence = ranked.evidence[first]
    titles = data.display_titles[np.maximum(evidence, 0)]
    titles[evidence < 0] = None
    # Code -1 (no category) picks the None at the end.
    names = np.asarray([*data.category_names, None], dtype=object)[category[first]]
    rendered = reason_text.sentences(
        ranked.reason[first], titles.tolist(), names.tolist(), templates
    )
    distinct: np.ndarray[Any, Any] = np.asarray(rendered, dtype=object)
    return np.asarray(distinct[inverse.ravel()], dtype=object)


@dataclass(frozen=True)
class _Job:
    """One `recommend_batches` call: the model, the batches and their options."""

    model: Strategy
    chunks: list[np.ndarray[Any, Any]]
    n: int
    exclude_purchased: bool
    rules: Rules | None
    templates: Mapping[str, tuple[str, str]] | None

    def run(self, chunk: np.ndarray[Any, Any]) -> Recommendations:
        """Return the lists of one batch."""
        return self.model._batch(
            chunk, self.n, self.exclude_purchased, self.rules, self.templates
        )


# The job forked workers inherit; set just before their pool starts.
_INHERITED: list[_Job] = []


def _can_fork() -> bool:
    """Tell whether worker processes can inherit the fitted model by forking."""
    return "fork" in multiprocessing.get_all_start_methods()


def _child_start() -> None:
    """Hold a forked worker to one thread (OpenMP pools do not survive fork)."""
    _INHERITED[0].model.single_threaded()


def _child_batch(index: int) -> Recommendations:
    """Return the lists of the inherited job's batch number ``index``."""
    job = _INHERITED[0]
    return job.run(job.chunks[index])


def _forked(job: _Job, workers: int) -> Iterator[Recommendations]:
    """Yield a job's batches, in order, computed by forked worker processes."""
    _INHERITED[:] = [job]
    context = multiprocessing.get_context("fork")
    done = 0
    try:
        with context.Pool(workers, initializer=_child_start) as pool:
            results = pool.imap(_child_batch, range(len(job.chunks)))
            while done < len(job.chunks):
                yield results.next(timeout=WORKER_TIMEOUT_S)
                done += 1
    except multiprocessing.TimeoutError:
        # A worker that stops answering must not stall an export: the rest
        # is done here, one batch at a time.
        log.warning("recommend workers stalled", batch=done, of=len(job.chunks))
        for chunk in job.chunks[done:]:
            yield job.run(chunk)
    finally:
        _INHERITED.clear()


def _ranks(slots: IntArray) -> IntArray:
    """Return 1-based ranks within each run of equal slots."""
    return rank_in_group(slots) + 1


def _skipped(
    ids: np.ndarray[Any, Any],
    rows: IntArray,
    counts: IntArray,
    minimum: int,
    personal: bool,
    rules: Rules | None,
) -> pd.DataFrame:
    """Say why each customer of a batch got no list (or too short a list)."""
    short = np.flatnonzero(counts < minimum)
    reasons: list[str] = []
    for slot in short.tolist():
        if rows[slot] < 0 and personal:
            reasons.append("customer unknown to the model")
        elif counts[slot] == 0 and rules is None:
            reasons.append("no candidates")
        elif counts[slot] == 0:
            reasons.append("every candidate removed by the rules")
        else:
            reasons.append(
                f"only {counts[slot]} products left after the rules (minimum {minimum})"
            )
    return pd.DataFrame({"customer_id": ids[short], "reason": reasons})


def history_rows(matrix: sparse.csr_matrix, rows: IntArray) -> sparse.csr_matrix:
    """Return the rows of a customer matrix, empty rows for unknown customers."""
    if matrix.shape[0] == 0:
        return sparse.csr_matrix((len(rows), matrix.shape[1]), dtype=matrix.dtype)
    known = np.maximum(rows, 0)
    picked: sparse.csr_matrix = matrix[known]
    if (rows < 0).any():
        mask = sparse.diags((rows >= 0).astype(matrix.dtype))
        picked = sparse.csr_matrix(mask @ picked)
        picked.eliminate_zeros()
    return picked
