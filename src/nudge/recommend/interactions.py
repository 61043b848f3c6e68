"""Turn the store's frames into the matrices and vocabularies recommenders fit on.

Rows are customers and columns are products; the vocabularies (store id ↔
row or column) live on the `Interactions` object and on every model fitted
from it. Only what happened strictly before ``as_of`` is kept, so nothing a
model learns can come from the future it is evaluated on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse

from nudge.recommend.config import FeedbackConfig
from nudge.recommend.ranked import stable_order
from nudge.recommend.reasons import display_title

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CATALOG_COLUMNS: tuple[str, ...] = (
    "external_id",
    "title",
    "description",
    "category",
    "brand",
    "price",
    "image_url",
    "product_url",
    "in_stock",
    "created_at",
)
_DAY = np.timedelta64(1, "D")
# The window of the best sellers that fill lists the rules left short.
BEST_SELLER_DAYS = 90.0


def naive_utc(moment: datetime) -> datetime:
    """Return a moment as naive UTC, the way the store keeps times."""
    if moment.tzinfo is None:
        return moment
    offset = moment.utcoffset() or timedelta(0)
    return (moment - offset).replace(tzinfo=None)


def _ages(times: pd.Series, as_of: datetime) -> FloatArray:
    """Return how many days before ``as_of`` each time lies."""
    stamps = pd.to_datetime(times).to_numpy(dtype="datetime64[us]")
    return np.asarray((np.datetime64(as_of, "us") - stamps) / _DAY, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Interactions:
    """Customers × products signals before ``as_of``, with their vocabularies.

    ``purchases`` holds one row per (order, product) bought before ``as_of``:
    ``row`` (customer), ``item`` (product), ``order`` and ``age`` (days
    before ``as_of``). ``bought`` counts the orders holding each item per
    customer; ``feedback`` is the weighted implicit feedback of every signal.
    """

    as_of: datetime
    customers: pd.Index
    customer_external: npt.NDArray[np.object_]
    products: pd.Index
    catalog: pd.DataFrame
    purchases: pd.DataFrame
    bought: sparse.csr_matrix
    feedback: sparse.csr_matrix
    feedback_config: FeedbackConfig = field(default_factory=FeedbackConfig)

    @property
    def n_customers(self) -> int:
        """Return the number of customers (rows)."""
        return len(self.customers)

    @property
    def n_items(self) -> int:
        """Return the number of products (columns)."""
        return len(self.products)

    def rows_of(self, customer_ids: Any) -> IntArray:
        """Return each customer's row, or -1 for a customer the data lacks."""
        return np.asarray(
            self.customers.get_indexer(pd.Index(list(customer_ids))), dtype=np.int64
        )

    def items_of(self, product_ids: Any) -> IntArray:
        """Return each product's column, or -1 for a product the catalog lacks."""
        return np.asarray(
            self.products.get_indexer(pd.Index(list(product_ids))), dtype=np.int64
        )

    def items_by_external(self, external_ids: Any) -> IntArray:
        """Return the columns of products named by the shop's own ids (-1 if none)."""
        index = pd.Index(self.catalog["external_id"].to_numpy())
        return np.asarray(
            index.get_indexer(pd.Index(list(external_ids))), dtype=np.int64
        )

    @cached_property
    def category_codes(self) -> IntArray:
        """Return each product's category as a code, -1 where it has none."""
        codes, _ = pd.factorize(self.catalog["category"], use_na_sentinel=True)
        return np.asarray(codes, dtype=np.int64)

    @cached_property
    def category_names(self) -> list[str]:
        """Return the category names in code order."""
        _, names = pd.factorize(self.catalog["category"], use_na_sentinel=True)
        return [str(name) for name in names]

    @cached_property
    def product_age(self) -> FloatArray:
        """Return days since each product arrived (NaN where unknown)."""
        created = self.catalog["created_at"]
        if created.isna().all():
            return np.full(self.n_items, np.nan)
        return _ages(created, self.as_of)

    @cached_property
    def first_sold_age(self) -> FloatArray:
        """Return days since each product's first sale (NaN if never sold)."""
        ages = np.full(self.n_items, np.nan)
        if len(self.purchases):
            first = self.purchases.groupby("item")["age"].max()
            ages[first.index.to_numpy()] = first.to_numpy()
        return ages

    @cached_property
    def arrival_age(self) -> FloatArray:
        """Return each product's age: its creation, else its first sale."""
        ages = self.product_age.copy()
        missing = np.isnan(ages)
        ages[missing] = self.first_sold_age[missing]
        return ages

    @cached_property
    def item_popularity(self) -> FloatArray:
        """Return each product's distinct buyers (for novelty and the fill)."""
        bought = self.bought.tocsc()
        return np.asarray(np.diff(bought.indptr), dtype=np.float64)

    @cached_property
    def category_matrix(self) -> sparse.csr_matrix:
        """Return the products × categories one-hot matrix."""
        codes = self.category_codes
        known = np.flatnonzero(codes >= 0)
        shape = (self.n_items, max(len(self.category_names), 1))
        ones = np.ones(len(known))
        return sparse.csr_matrix((ones, (known, codes[known])), shape=shape)

    def category_shares(self, rows: IntArray) -> FloatArray:
        """Return each customer's share of feedback per category (rows sum to 1)."""
        known = np.maximum(rows, 0)
        totals = np.asarray((self.feedback[known] @ self.category_matrix).todense())
        totals[rows < 0] = 0.0
        sums = totals.sum(axis=1, keepdims=True)
        shares = np.divide(totals, sums, out=np.zeros_like(totals), where=sums > 0)
        return np.asarray(shares, dtype=np.float64)

    def recency_weights(
        self, half_life_days: float, rows: IntArray | None = None
    ) -> sparse.csr_matrix:
        """Return customers × products sums of 0.5 ** (age / half-life) per order."""
        log = self.purchases
        weights = np.exp2(-log["age"].to_numpy() / half_life_days)
        shape = (self.n_customers, self.n_items)
        matrix = sparse.csr_matrix(
            (weights, (log["row"].to_numpy(), log["item"].to_numpy())), shape=shape
        )
        matrix.sum_duplicates()
        return matrix if rows is None else matrix[rows]

    @cached_property
    def display_titles(self) -> npt.NDArray[np.object_]:
        """Return each product's title as a sentence shows it (None if untitled)."""
        return np.asarray(
            [display_title(t) for t in self.catalog["title"].tolist()], dtype=object
        )

    @cached_property
    def bought_keys(self) -> IntArray:
        """Return row * n_items + item for every bought pair, sorted."""
        # CSR indices are sorted within rows and rows ascend, so the keys of
        # every (row, item) pair come out sorted.
        counts = np.diff(self.bought.indptr)
        rows = np.repeat(np.arange(self.n_customers, dtype=np.int64), counts)
        keys = rows * self.n_items + self.bought.indices.astype(np.int64)
        return np.asarray(keys, dtype=np.int64)

    def is_bought(self, rows: IntArray, items: IntArray) -> BoolArray:
        """Tell for each (row, item) pair whether the customer bought the item."""
        rows = np.asarray(rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(rows) == 0 or self.bought.nnz == 0:
            return np.zeros(len(rows), dtype=bool)
        # Search only the keys of the customers asked about: a small array
        # stays in cache where the keys of every customer would not. (A sort
        # finds them faster than np.unique's hash.)
        asked = np.sort(rows[rows >= 0])
        asked = asked[np.append(True, asked[1:] != asked[:-1])] if len(asked) else asked
        indptr = self.bought.indptr
        lengths = indptr[asked + 1] - indptr[asked]
        offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
        positions = (
            np.arange(int(lengths.sum())) - offsets + np.repeat(indptr[asked], lengths)
        )
        keys = self.bought_keys[positions]
        if len(keys) == 0:
            return np.zeros(len(rows), dtype=bool)
        # Searched in order, the needles walk the keys instead of jumping.
        wanted = np.where(rows >= 0, rows * self.n_items + items, 0)
        order = stable_order(wanted)
        found = np.empty(len(wanted), dtype=np.int64)
        found[order] = np.searchsorted(keys, wanted[order])
        found = np.minimum(found, len(keys) - 1)
        return np.asarray((keys[found] == wanted) & (rows >= 0), dtype=bool)

    def warm(self) -> None:
        """Build the tables recommending reads, so forked workers share them."""
        for name in (
            "category_codes",
            "category_names",
            "category_matrix",
            "display_titles",
            "bought_keys",
            "best_seller_order",
            "arrival_age",
        ):
            getattr(self, name)

    @cached_property
    def best_seller_order(self) -> IntArray:
        """Return products by distinct buyers in the last 90 days, then ever."""
        recent = self.purchases[self.purchases["age"] <= BEST_SELLER_DAYS]
        buyers = np.zeros(self.n_items)
        pairs = recent.drop_duplicates(["row", "item"])
        np.add.at(buyers, pairs["item"].to_numpy(), 1.0)
        return np.lexsort((-self.item_popularity, -buyers)).astype(np.int64)

    def version(self) -> str:
        """Return a digest of the data, so a model fitted on it can be reused."""
        digest = hashlib.sha256()
        digest.update(str(self.as_of).encode())
        for array in (
            self.customers.to_numpy(),
            self.products.to_numpy(),
            self.feedback.indptr,
            self.feedback.indices,
            self.feedback.data,
            self.purchases["order"].to_numpy(),
            self.purchases["age"].to_numpy(),
        ):
            digest.update(np.ascontiguousarray(array).tobytes())
        columns = [c for c in CATALOG_COLUMNS if c in self.catalog.columns]
        text = pd.util.hash_pandas_object(self.catalog[columns].astype(str))
        digest.update(text.to_numpy().tobytes())
        return digest.hexdigest()[:16]


def build_interactions(
    lines: pd.DataFrame,
    products: pd.DataFrame,
    as_of: datetime,
    *,
    events: pd.DataFrame | None = None,
    clicks: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    config: FeedbackConfig | None = None,
) -> Interactions:
    """Build the interactions of everything that happened before ``as_of``.

    ``lines`` are order lines as `nudge.store.queries.order_lines` returns them;
    ``products`` the catalog (`queries.products`); ``events`` behaviour events
    (views and add-to-carts count); ``clicks`` e-mail clicks with
    customer_id, product_id and occurred_at; ``customers`` (id, external_id)
    names customers who only browsed. Guest lines, cancelled or returned
    lines and lines without a positive quantity are left out.
    """
    config = config or FeedbackConfig()
    as_of = naive_utc(as_of)

    # The catalog as it stood: products created later are not offered yet.
    catalog = _catalog(products, as_of)
    vocabulary = pd.Index(catalog.index.to_numpy())
    signals = _signals(lines, events, clicks, as_of, config)
    signals = signals[vocabulary.get_indexer(signals["product_id"]) >= 0]
    signals["customer_external_id"] = _external_ids(signals, customers)

    # Customers: everyone with a signal before as_of, in store-id order.
    customer_frame = (
        signals[["customer_id", "customer_external_id"]]
        .drop_duplicates("customer_id")
        .sort_values("customer_id", kind="stable")
    )
    people = pd.Index(customer_frame["customer_id"].to_numpy())
    rows = people.get_indexer(signals["customer_id"])
    items = vocabulary.get_indexer(signals["product_id"])

    purchases = _purchases(signals, rows, items)
    shape = (len(people), len(vocabulary))
    bought = _matrix(purchases["row"], purchases["item"], 1.0, shape)
    weight = signals["weight"].to_numpy(np.float64)
    if config.half_life_days is not None:
        weight = weight * np.exp2(-signals["age"].to_numpy() / config.half_life_days)
    feedback = _matrix(rows, items, weight, shape)
    if config.scaling == "log":
        feedback.data = np.log1p(feedback.data)

    return Interactions(
        as_of=as_of,
        customers=people,
        customer_external=customer_frame["customer_external_id"].to_numpy(object),
        products=vocabulary,
        catalog=catalog.reset_index(drop=True),
        purchases=purchases,
        bought=bought,
        feedback=feedback.astype(np.float32),
        feedback_config=config,
    )


def _catalog(products: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Return the catalog known before ``as_of``, indexed by store id."""
    frame = products.copy()
    for column in CATALOG_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if "margin" in products.columns:
        frame["margin"] = products["margin"]
    created = pd.to_datetime(frame["created_at"])
    keep = created.isna() | (created < pd.Timestamp(as_of))
    frame = frame.loc[keep.to_numpy()]
    columns = [*CATALOG_COLUMNS, *(["margin"] if "margin" in frame.columns else [])]
    frame = frame.set_index("id")[columns].sort_index(kind="stable")
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce").astype(float)
    return frame


def _signals(
    lines: pd.DataFrame,
    events: pd.DataFrame | None,
    clicks: pd.DataFrame | None,
    as_of: datetime,
    config: FeedbackConfig,
) -> pd.DataFrame:
    """Stack purchases, events and clicks into one frame of weighted signals."""
    parts = [_purchase_signals(lines, as_of, config)]
    weights = {"view": config.view_weight, "add_to_cart": config.cart_weight}
    if events is not None and len(events):
        frame = events[
            events["customer_id"].notna()
            & events["product_id"].notna()
            & events["event_type"].isin(list(weights))
        ]
        parts.append(
            _signal_frame(
                frame, frame["event_type"].map(weights), frame["occurred_at"], as_of
            )
        )
    if clicks is not None and len(clicks):
        frame = clicks[clicks["customer_id"].notna() & clicks["product_id"].notna()]
        weight = (
            frame["weight"].astype(np.float64)
            if "weight" in frame.columns
            else pd.Series(config.click_weight, index=frame.index)
        )
        parts.append(_signal_frame(frame, weight, frame["occurred_at"], as_of))
    signals = pd.concat(parts, ignore_index=True)
    signals = signals[(signals["age"] > 0) & (signals["weight"] > 0)]
    signals["customer_id"] = signals["customer_id"].astype(np.int64)
    signals["product_id"] = signals["product_id"].astype(np.int64)
    return signals.reset_index(drop=True)


def _purchase_signals(
    lines: pd.DataFrame, as_of: datetime, config: FeedbackConfig
) -> pd.DataFrame:
    """Return one purchase signal per (order, product) placed before ``as_of``."""
    keep = lines["customer_id"].notna() & (lines["quantity"] > 0)
    if "status" in lines.columns:
        keep &= lines["status"].eq("placed")
    frame = lines.loc[keep].drop_duplicates(["order_id", "product_id"])
    weight = pd.Series(config.purchase_weight, index=frame.index)
    signals = _signal_frame(frame, weight, frame["ordered_at"], as_of)
    signals["order"] = frame["order_id"].to_numpy(np.int64)
    signals["is_purchase"] = True
    return signals


def _signal_frame(
    frame: pd.DataFrame, weight: pd.Series, times: pd.Series, as_of: datetime
) -> pd.DataFrame:
    """Return the common columns of one kind of signal."""
    if "customer_external_id" in frame.columns:
        external = frame["customer_external_id"].to_numpy(object)
    else:
        external = np.full(len(frame), None, dtype=object)
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(),
            "customer_external_id": external,
            "product_id": frame["product_id"].to_numpy(),
            "age": _ages(times, as_of),
            "weight": weight.to_numpy(np.float64),
            "order": np.full(len(frame), -1, dtype=np.int64),
            "is_purchase": np.zeros(len(frame), dtype=bool),
        }
    )


def _external_ids(signals: pd.DataFrame, customers: pd.DataFrame | None) -> Any:
    """Return each signal's customer external id, from the customers frame if given."""
    external = signals["customer_external_id"]
    if customers is not None and len(customers):
        names = pd.Series(
            customers["external_id"].to_numpy(object),
            index=customers["id"].to_numpy(),
        )
        external = external.fillna(signals["customer_id"].map(names))
    # Without a name anywhere, the store id stands in.
    return external.fillna(signals["customer_id"].astype(str)).to_numpy(object)


def _purchases(signals: pd.DataFrame, rows: IntArray, items: IntArray) -> pd.DataFrame:
    """Return the purchase log sorted by customer, item and age (newest last)."""
    is_purchase = signals["is_purchase"].to_numpy(bool)
    frame = pd.DataFrame(
        {
            "row": rows[is_purchase],
            "item": items[is_purchase],
            "order": signals["order"].to_numpy()[is_purchase],
            "age": signals["age"].to_numpy()[is_purchase],
        }
    )
    return frame.sort_values(
        ["row", "item", "age"], ascending=[True, True, False], ignore_index=True
    )


def _matrix(
    rows: Any, cols: Any, values: Any, shape: tuple[int, int]
) -> sparse.csr_matrix:
    """Sum values into a CSR matrix of the given shape."""
    rows = np.asarray(rows, dtype=np.int64)
    data = np.broadcast_to(np.asarray(values, dtype=np.float64), rows.shape)
    matrix = sparse.coo_matrix(
        (data, (rows, np.asarray(cols, dtype=np.int64))), shape=shape
    ).tocsr()
    matrix.sum_duplicates()
    return matrix
