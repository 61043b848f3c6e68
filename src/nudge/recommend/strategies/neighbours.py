"""Item-to-item strategies: bought together, item-kNN CF and content similarity.

Each learns a sparse products × products similarity and scores a customer
by the similarity of every product to the customer's history, with
implicit's nearest-neighbour scorer. The reason of each recommended product
names the history product that contributed most.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from implicit.nearest_neighbours import (
    NearestNeighboursScorer,
    all_pairs_knn,
    bm25_weight,
)
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from nudge.recommend.base import Strategy, history_rows
from nudge.recommend.config import ContentConfig, CoPurchaseConfig, ItemKNNConfig
from nudge.recommend.interactions import FloatArray, IntArray, Interactions
from nudge.recommend.ranked import Ranked, rank_in_group, stable_order
from nudge.recommend.reasons import CODE

# History products considered when naming the evidence behind a reason.
EVIDENCE_HISTORY = 20
# Views and carts count this much beside purchases in a content profile.
CONTENT_FEEDBACK_SHARE = 0.1


def without_diagonal(matrix: Any) -> sparse.csr_matrix:
    """Return a square similarity as CSR (float64) with its diagonal removed."""
    similarity = sparse.csr_matrix(matrix, dtype=np.float64)
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    similarity.sort_indices()
    return similarity


def top_history(history: sparse.csr_matrix, h: int) -> tuple[IntArray, FloatArray]:
    """Return each row's h heaviest products and weights, padded with -1 and 0."""
    counts = np.diff(history.indptr)
    slots = np.repeat(np.arange(history.shape[0]), counts)
    order = np.lexsort((-history.data, slots))
    rank = rank_in_group(slots[order])
    keep = order[rank < h]
    items = np.full((history.shape[0], h), -1, dtype=np.int64)
    weights = np.zeros((history.shape[0], h))
    kept_rank = rank[rank < h]
    items[slots[keep], kept_rank] = history.indices[keep]
    weights[slots[keep], kept_rank] = history.data[keep]
    return items, weights


def pair_keys(similarity: sparse.csr_matrix) -> IntArray:
    """Return row * columns + column for every stored entry, sorted."""
    counts = np.diff(similarity.indptr)
    rows = np.repeat(np.arange(similarity.shape[0], dtype=np.int64), counts)
    keys = rows * similarity.shape[1] + similarity.indices.astype(np.int64)
    return np.asarray(keys, dtype=np.int64)


def explain_by_similarity(
    history: sparse.csr_matrix,
    similarity: sparse.csr_matrix,
    ranked: Ranked,
    keys: IntArray | None = None,
) -> IntArray:
    """Return, per entry, the history product whose similarity contributed most.

    ``keys`` are the similarity's `pair_keys`, when the caller keeps them.
    """
    if not len(ranked) or similarity.nnz == 0:
        return np.full(len(ranked), -1, dtype=np.int64)
    n_items = similarity.shape[1]
    if keys is None:
        keys = pair_keys(similarity)

    # Look every (history product, recommended product) pair up at once;
    # sorted, the searches walk the keys in order instead of at random.
    items, weights = top_history(history, EVIDENCE_HISTORY)
    sources = items[ranked.slot]
    entry, place = np.nonzero((sources >= 0) & (sources != ranked.item[:, None]))
    pairs = sources[entry, place] * n_items + ranked.item[entry]
    order = stable_order(pairs)
    found = np.empty(len(pairs), dtype=np.int64)
    found[order] = np.searchsorted(keys, pairs[order])
    found = np.minimum(found, len(keys) - 1)
    hit = keys[found] == pairs

    value = np.zeros(sources.shape)
    entry, place, found = entry[hit], place[hit], found[hit]
    weight = weights[ranked.slot[entry], place]
    value[entry, place] = similarity.data[found] * weight
    best = value.argmax(axis=1)
    chosen = np.take_along_axis(sources, best[:, None], axis=1)[:, 0]
    return np.where(value.max(axis=1) > 0, chosen, -1)


class _Neighbours(Strategy):
    """Shared scoring of a customer's history through a product similarity."""

    reason: ClassVar[str]

    @abstractmethod
    def similarity(self, data: Interactions) -> sparse.csr_matrix:
        """Return the products × products similarity."""

    @abstractmethod
    def history(self, data: Interactions) -> sparse.csr_matrix:
        """Return the customers × products weights that are scored."""

    def _fit(self, data: Interactions) -> None:
        with threadpool_limits(1, "blas"):
            self.item_similarity = self.similarity(data)
        self.customer_history = sparse.csr_matrix(self.history(data), dtype=np.float64)
        self._scorer = NearestNeighboursScorer(self.item_similarity)
        self.similarity_keys = pair_keys(self.item_similarity)

    def __getstate__(self) -> dict[str, Any]:
        # implicit's scorer is a C++ object that cannot be pickled, and the
        # keys are as large as the similarity; both are rebuilt on load.
        state = super().__getstate__()
        state.pop("_scorer", None)
        state.pop("similarity_keys", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "item_similarity" in state:
            self._scorer = NearestNeighboursScorer(self.item_similarity)
            self.similarity_keys = pair_keys(self.item_similarity)

    def candidates(
        self, rows: IntArray, m: int, *, exclude_purchased: bool = False
    ) -> Ranked:
        """Return the products most similar to each customer's history."""
        data = self.data
        history = history_rows(self.customer_history, rows)
        spare = np.zeros(len(rows), dtype=np.int64)
        own = np.zeros(len(rows), dtype=bool)
        if exclude_purchased:
            bought = history_rows(data.bought, rows)
            spare = np.diff(bought.indptr).astype(np.int64)
            # Where the history holds exactly the purchases (it always holds
            # them all), the scorer can drop them itself; elsewhere the list
            # is made longer and filtered after.
            own = (np.diff(history.indptr) == spare) & self._holds_purchases(data)
            spare[own] = 0

        # implicit's scorer takes one customer at a time (its C++ loop is fast);
        # plain Python numbers and one reused index array keep the loop cheap.
        found_items, found_scores, counts = [], [], []
        indptr = history.indptr.tolist()
        indices, values = history.indices, history.data
        sizes = (spare + m).tolist()
        removes = own.tolist()
        window = np.zeros(2, dtype=np.int32)
        recommend = self._scorer.recommend
        for slot in range(len(rows)):
            start, end = indptr[slot], indptr[slot + 1]
            if start == end:
                counts.append(0)
                continue
            window[1] = end - start
            found, score = recommend(
                window,
                indices[start:end],
                values[start:end],
                K=sizes[slot],
                remove_own_likes=removes[slot],
            )
            found_items.append(found)
            found_scores.append(score)
            counts.append(len(found))
        if not found_items:
            return Ranked.empty()
        slots = np.repeat(np.arange(len(rows)), counts)
        items = np.concatenate(found_items)
        scores = np.concatenate(found_scores)
        # The scorer returns each customer's products best first.
        ranked = Ranked.presorted(
            slots, items, scores, CODE[self.reason], source=self.source
        )
        ranked = ranked.take(ranked.score > 0)
        if exclude_purchased:
            ranked = ranked.take(~data.is_bought(rows[ranked.slot], ranked.item))
        return ranked.top(m)

    def _holds_purchases(self, data: Interactions) -> bool:
        """Tell whether every customer's history includes all their purchases."""
        return True

    def explain(self, rows: IntArray, ranked: Ranked) -> Ranked:
        """Name the history product behind each recommended product."""
        history = history_rows(self.customer_history, rows)
        evidence = explain_by_similarity(
            history, self.item_similarity, ranked, self.similarity_keys
        )
        return Ranked(
            ranked.slot,
            ranked.item,
            ranked.score,
            ranked.reason,
            evidence,
            ranked.source,
        )


class CoPurchase(_Neighbours):
    """Frequently bought together: products sharing orders, by lift and confidence.

    Partners of a product are ranked by count / partners_orders ** (beta / 2)
    (0: confidence, 2: lift) and kept when they shared at least ``min_count``
    orders with a lift of at least ``min_lift``; a customer's latest orders
    weigh most, for cross-sell after an order.
    """

    name = "co_purchase"
    reason = "bought_together"
    config: CoPurchaseConfig

    @classmethod
    def default_config(cls) -> CoPurchaseConfig:
        """Return the default co-purchase configuration."""
        return CoPurchaseConfig()

    def similarity(self, data: Interactions) -> sparse.csr_matrix:
        """Return the kept partners of each product, scored for ranking."""
        config = self.config
        log = data.purchases
        orders, order_rows = np.unique(log["order"].to_numpy(), return_inverse=True)
        shape = (len(orders), data.n_items)
        items = log["item"].to_numpy()
        baskets = sparse.csr_matrix((np.ones(len(log)), (order_rows, items)), shape)
        baskets.data[:] = 1.0
        holding = np.asarray(baskets.sum(axis=0)).ravel()

        # Scale columns so that the pair products rank by the chosen measure.
        scale = np.power(np.maximum(holding, 1.0), -config.beta / 2)
        weighted = sparse.csr_matrix(baskets @ sparse.diags(scale))
        knn = all_pairs_knn(
            weighted,
            config.neighbours + 1,
            num_threads=self.threads,
            show_progress=False,
        )
        similarity = without_diagonal(knn)
        return self._filtered(similarity, holding, len(orders))

    def _filtered(
        self, similarity: sparse.csr_matrix, holding: FloatArray, n_orders: int
    ) -> sparse.csr_matrix:
        """Drop partners below the minimum count or lift, recording both measures."""
        config = self.config
        coo = similarity.tocoo()
        pair_orders = holding[coo.row] * holding[coo.col]
        count = np.rint(coo.data * np.power(pair_orders, config.beta / 2))
        lift = count * n_orders / np.maximum(pair_orders, 1.0)
        keep = (count >= config.min_count) & (lift >= config.min_lift)
        self.pairs = pd.DataFrame(
            {
                "item": coo.row[keep],
                "partner": coo.col[keep],
                "orders": count[keep],
                "confidence": count[keep] / np.maximum(holding[coo.row[keep]], 1.0),
                "lift": lift[keep],
            }
        )
        shape = similarity.shape
        kept = (coo.data[keep], (coo.row[keep], coo.col[keep]))
        return without_diagonal(sparse.coo_matrix(kept, shape=shape))

    def history(self, data: Interactions) -> sparse.csr_matrix:
        """Return purchases weighted toward the latest orders."""
        return data.recency_weights(self.config.half_life_days)


class ItemKNN(_Neighbours):
    """Item-to-item collaborative filtering (implicit's BM25 or cosine item-kNN)."""

    name = "item_knn"
    reason = "because_you_bought"
    config: ItemKNNConfig

    @classmethod
    def default_config(cls) -> ItemKNNConfig:
        """Return the default item-kNN configuration."""
        return ItemKNNConfig()

    def similarity(self, data: Interactions) -> sparse.csr_matrix:
        """Return each product's nearest products, weighted as implicit's models do."""
        config = self.config
        feedback = sparse.csr_matrix(data.feedback, dtype=np.float64)
        if feedback.nnz == 0:
            return sparse.csr_matrix((data.n_items, data.n_items))
        # The weighting of BM25Recommender and CosineRecommender, handed to
        # implicit's all-pairs kNN as CSR (their own fit converts from COO).
        if config.kind == "bm25":
            weighted = bm25_weight(feedback.T, K1=config.k1, B=config.b).T
        else:
            weighted = normalize(feedback.T).T
        knn = all_pairs_knn(
            sparse.csr_matrix(weighted),
            config.neighbours,
            num_threads=self.threads,
            show_progress=False,
        )
        similarity = sparse.csr_matrix(knn, dtype=np.float64)
        similarity.sort_indices()
        return similarity

    def history(self, data: Interactions) -> sparse.csr_matrix:
        """Return the weighted feedback the similarity was learned from."""
        return data.feedback

    def _holds_purchases(self, data: Interactions) -> bool:
        """Tell whether purchases count in the feedback (their weight is not 0)."""
        return data.feedback_config.purchase_weight > 0


class Content(_Neighbours):
    """Content-based: TF-IDF over title, description, category and brand.

    Products without any sale still have text, so new arrivals are reachable;
    a customer with one purchase gets the products that read most like it.
    """

    name = "content"
    reason = "similar_to"
    config: ContentConfig

    @classmethod
    def default_config(cls) -> ContentConfig:
        """Return the default content configuration."""
        return ContentConfig()

    def similarity(self, data: Interactions) -> sparse.csr_matrix:
        """Return each product's nearest products by TF-IDF cosine."""
        texts = product_texts(data.catalog)
        shape = (data.n_items, data.n_items)
        if not any(texts):
            return sparse.csr_matrix(shape)
        vectorizer = TfidfVectorizer(
            max_df=self.config.max_df if data.n_items > 10 else 1.0,
            sublinear_tf=True,
            stop_words="english",
        )
        try:
            vectors = vectorizer.fit_transform(texts)
        except ValueError:
            # Every word was too common or a stop word: nothing to compare.
            return sparse.csr_matrix(shape)
        self.vocabulary = len(vectorizer.vocabulary_)
        terms = sparse.csr_matrix(vectors.T, dtype=np.float64)
        knn = all_pairs_knn(
            terms,
            self.config.neighbours + 1,
            num_threads=self.threads,
            show_progress=False,
        )
        return without_diagonal(knn)

    def history(self, data: Interactions) -> sparse.csr_matrix:
        """Return recent purchases, with views and carts counting a little."""
        recent = data.recency_weights(self.config.half_life_days)
        return recent + CONTENT_FEEDBACK_SHARE * data.feedback.astype(np.float64)


def product_texts(catalog: pd.DataFrame) -> list[str]:
    """Return each product's title, description, category and brand as one text."""
    parts = [
        catalog[column].fillna("").astype(str)
        for column in ("title", "description", "category", "brand")
    ]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + " " + part
    return [text.strip() for text in joined.tolist()]
