"""Customer profiles as of a moment: RFM, segments, lifecycle, churn risk, CLV.

Everything here is a pure function over data frames (order lines, behaviour
events, products) and an ``as_of`` moment; nothing after ``as_of`` is used.

Rules, each applied the same way everywhere in this module:

- A *purchase* is an order placed before ``as_of`` by a known customer, counting
  only its ``placed`` lines (cancelled and returned lines are left out), whose
  value (quantity × unit price summed over those lines) is above zero. Orders
  worth zero or less (free samples, credit notes) are not purchases.
- Purchases on the same calendar day (UTC) are one *purchase day*; their values
  add up. Frequency, recency and the model inputs count purchase days.
- A customer without any purchase before ``as_of`` gets no profile.
- RFM scores are 1 to 5: ``1 + floor(5 × share of customers strictly worse)``,
  so ties share a score and a lone one-time buyer scores 1 on frequency.
- Segments come from the recency score R and FM = ``(F + M + 1) // 2``, first
  match wins (see ``SEGMENT_RULES``).
- Lifecycle stages are decided in the order new, churned, at_risk, reactivated,
  active (see ``_stages``); each profile keeps the rule that decided it.
- P(alive) comes from BG/NBD for repeat buyers when the shop has at least
  ``min_repeat_buyers`` of them, and from the gap heuristic otherwise (one-time
  buyers always: BG/NBD gives every one of them P(alive) = 1 by construction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse

from nudge.insight._common import MONTH_DAYS, FitError, FloatArray
from nudge.insight.bgnbd import BetaGeoModel
from nudge.insight.config import InsightConfig
from nudge.insight.gammagamma import GammaGammaModel

IntArray = npt.NDArray[np.int64]

SEGMENTS: tuple[str, ...] = (
    "champions",
    "loyal",
    "potential_loyalists",
    "new",
    "at_risk",
    "cant_lose",
    "hibernating",
    "lost",
)
# The documented mapping, first match wins; R and FM are RFM scores 1 to 5,
# "one purchase day" is the frequency itself.
SEGMENT_RULES: dict[str, str] = {
    "champions": "R >= 4 and FM >= 4",
    "loyal": "R = 3 and FM >= 4",
    "new": "R >= 4 and one purchase day",
    "potential_loyalists": "R >= 3 (and FM <= 3)",
    "cant_lose": "R = 1 and FM >= 4",
    "at_risk": "R <= 2 and FM >= 3",
    "hibernating": "R = 2 and FM <= 2",
    "lost": "R = 1 and FM <= 2",
}
# The order in which segment_of tries the rules.
_SEGMENT_ORDER = list(SEGMENT_RULES)
STAGES: tuple[str, ...] = ("new", "active", "reactivated", "at_risk", "churned")
CHURN_BANDS: tuple[str, ...] = ("low", "medium", "high")
MODELS: tuple[str, ...] = ("bgnbd", "heuristic")
PRICE_BANDS: tuple[str, ...] = ("budget", "mid", "premium")
AFFINITY_DIMENSIONS: tuple[str, ...] = ("category", "brand", "price_band")

PROFILE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "as_of",
    "first_order_at",
    "last_order_at",
    "recency_days",
    "frequency",
    "orders",
    "monetary",
    "avg_order_value",
    "tenure_days",
    "r_score",
    "f_score",
    "m_score",
    "segment",
    "stage",
    "stage_rule",
    "model_used",
    "p_alive",
    "churn_risk",
    "churn_band",
    "clv",
    "expected_next_order_at",
    "typical_gap_days",
    "affinities",
)
LINE_COLUMNS = ("order_id", "customer_id", "ordered_at", "quantity", "unit_price")
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class History:
    """Each customer's purchase history before a moment, one row per customer.

    ``frame`` is indexed by customer id with: first_day, last_day, prev_day
    (the purchase day before the last; the last itself when there is none) as
    days since 1970;
    first_at and last_at (timestamps of the first and last purchase);
    days (purchase days), orders, monetary, first_value (value of the first
    purchase day); and the BG/NBD inputs x, t_x and T in days.
    """

    frame: pd.DataFrame
    as_of: datetime
    as_of_day: int


@dataclass(frozen=True)
class ShopModels:
    """The models fitted on one shop's history, or why the heuristic is used."""

    bgnbd: BetaGeoModel | None
    gammagamma: GammaGammaModel | None
    repeat_buyers: int
    reason: str

    @property
    def name(self) -> str:
        """Return "bgnbd" when the models were fitted, else "heuristic"."""
        return "bgnbd" if self.bgnbd is not None else "heuristic"


@dataclass(frozen=True)
class Profiles:
    """A profile frame (``PROFILE_COLUMNS``) and how its figures were made."""

    frame: pd.DataFrame
    as_of: datetime
    models: ShopModels
    shop_gap_days: float
    win_back_value: float


def naive_utc(moment: datetime | pd.Timestamp) -> datetime:
    """Return a moment as a naive UTC datetime, the store's convention."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(UTC).tz_localize(None)
    return stamp.to_pydatetime()


def epoch_days(values: pd.Series | datetime) -> Any:
    """Return whole days since 1970 of timestamps (a Series) or of one moment."""
    if isinstance(values, datetime):
        return int((np.datetime64(values, "D") - _EPOCH).astype(np.int64))
    days = values.to_numpy(dtype="datetime64[us]").astype("datetime64[D]")
    return (days - _EPOCH).astype(np.int64)


def purchases(lines: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Return one row per purchase before ``as_of``: customer, time, day, value.

    Columns: order_id, customer_id, ordered_at, day (days since 1970), value.
    """
    _require_columns("order lines", lines, LINE_COLUMNS)
    as_of = naive_utc(as_of)

    # Guests cannot be profiled, later orders are not known yet, and only
    # placed lines are what the customer kept.
    keep = lines["customer_id"].notna() & (lines["ordered_at"] < as_of)
    if "status" in lines.columns:
        keep &= lines["status"].eq("placed")
    kept = lines.loc[keep, ["order_id", "customer_id", "ordered_at"]]
    value = lines.loc[keep, "quantity"].to_numpy(np.float64) * lines.loc[
        keep, "unit_price"
    ].to_numpy(np.float64)

    orders = (
        kept.assign(value=value)
        .groupby("order_id", sort=False)
        .agg(
            customer_id=("customer_id", "first"),
            ordered_at=("ordered_at", "min"),
            value=("value", "sum"),
        )
    )
    orders = orders[orders["value"] > 0].reset_index()
    orders["customer_id"] = _tidy_ids(orders["customer_id"])
    orders["day"] = epoch_days(orders["ordered_at"])
    return orders


def customer_history(lines: pd.DataFrame, as_of: datetime) -> History:
    """Summarise each customer's purchases before ``as_of``."""
    as_of = naive_utc(as_of)
    as_of_day = int(epoch_days(as_of))
    bought = purchases(lines, as_of)
    if bought.empty:
        return History(_empty_history(bought["customer_id"].dtype), as_of, as_of_day)

    # One row per purchase day, sorted so each customer's days are contiguous.
    days = (
        bought.groupby(["customer_id", "day"], sort=True)
        .agg(
            value=("value", "sum"),
            orders=("value", "size"),
            first_at=("ordered_at", "min"),
            last_at=("ordered_at", "max"),
        )
        .reset_index()
    )
    customer = days["customer_id"].to_numpy()
    day = days["day"].to_numpy(np.int64)
    starts = np.r_[0, np.flatnonzero(customer[1:] != customer[:-1]) + 1]
    ends = np.r_[starts[1:], len(customer)] - 1

    # Per customer from the first and last of its rows.
    count = (ends - starts + 1).astype(np.int64)
    frame = pd.DataFrame(
        {
            "first_day": day[starts],
            "last_day": day[ends],
            "prev_day": day[np.where(count > 1, ends - 1, ends)],
            "first_at": days["first_at"].to_numpy()[starts],
            "last_at": days["last_at"].to_numpy()[ends],
            "days": count,
            "orders": np.add.reduceat(days["orders"].to_numpy(np.int64), starts),
            "monetary": np.add.reduceat(days["value"].to_numpy(np.float64), starts),
            "first_value": days["value"].to_numpy(np.float64)[starts],
        },
        index=pd.Index(customer[starts], name="customer_id"),
    )
    frame["x"] = (count - 1).astype(np.float64)
    frame["t_x"] = (frame["last_day"] - frame["first_day"]).astype(np.float64)
    frame["T"] = (as_of_day - frame["first_day"]).astype(np.float64)
    return History(frame, as_of, as_of_day)


def repeat_spend(history: pd.DataFrame) -> FloatArray:
    """Return the mean value of each customer's repeat purchase days (0 if none)."""
    x = history["x"].to_numpy(np.float64)
    repeat_total = history["monetary"].to_numpy() - history["first_value"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        spend = np.where(x > 0, repeat_total / x, 0.0)
    return np.asarray(spend, dtype=np.float64)


def fit_shop_models(history: pd.DataFrame, config: InsightConfig) -> ShopModels:
    """Fit BG/NBD and Gamma-Gamma, or say why the shop gets the heuristic instead.

    A fit that fails on a shop above the small-data threshold is an error, so
    that no profile silently carries figures from a model that did not fit,
    unless ``fit_failure`` asks for the heuristic (the reason says so).
    """
    repeat = int((history["x"] > 0).sum())
    if repeat < config.min_repeat_buyers:
        return ShopModels(
            None,
            None,
            repeat,
            f"{repeat} repeat buyers, fewer than the {config.min_repeat_buyers} "
            "a stable fit needs: gap heuristic",
        )

    try:
        bgnbd, gammagamma = _fit(history)
    except FitError as err:
        if config.fit_failure == "error":
            raise FitError(
                f"{err} (fit_failure = heuristic in [insight] uses the gap "
                "heuristic instead)"
            ) from err
        return ShopModels(None, None, repeat, f"{err}: gap heuristic instead")
    return ShopModels(
        bgnbd,
        gammagamma,
        repeat,
        f"BG/NBD and Gamma-Gamma fitted on {len(history):,} customers "
        f"({repeat:,} repeat buyers)",
    )


def _fit(history: pd.DataFrame) -> tuple[BetaGeoModel, GammaGammaModel]:
    """Fit both models, refusing a spend model whose mean is infinite."""
    x = history["x"].to_numpy(np.float64)
    bgnbd = BetaGeoModel().fit(x, history["t_x"], history["T"])
    gammagamma = GammaGammaModel().fit(x, repeat_spend(history))
    q = gammagamma.params["q"]
    if q <= 1:
        raise FitError(
            f"Gamma-Gamma fit gives q = {q:.3g} <= 1, so expected spend is "
            "infinite: spend per purchase varies too much between customers"
        )
    return bgnbd, gammagamma


def shop_gap_days(history: pd.DataFrame, config: InsightConfig) -> float:
    """Return the shop's typical gap between purchase days: the median mean gap."""
    repeat = history["x"] > 0
    if not repeat.any():
        return float(config.default_gap_days)
    gaps = history.loc[repeat, "t_x"] / history.loc[repeat, "x"]
    return max(float(gaps.median()), 1.0)


def typical_gaps(
    history: pd.DataFrame, shop_gap: float, config: InsightConfig
) -> FloatArray:
    """Return each customer's usual gap: own repeats blended with the shop's gap.

    ``(span of own purchase days + w × shop gap) / (repeat days + w)`` with
    ``w = gap_prior_weight``: a one-time buyer gets the shop's gap, a frequent
    buyer mostly their own.
    """
    weight = config.gap_prior_weight
    span = history["t_x"].to_numpy(np.float64)
    repeats = history["x"].to_numpy(np.float64)
    return np.maximum((span + weight * shop_gap) / (repeats + weight), 1.0)


def heuristic_p_alive(
    recency_days: FloatArray, gaps: FloatArray, config: InsightConfig
) -> FloatArray:
    """Return exp(-days since last purchase / (scale × usual gap)) per customer."""
    scale = config.heuristic_gap_scale * gaps
    return np.asarray(np.exp(-recency_days / scale), dtype=np.float64)


def build_profiles(
    lines: pd.DataFrame,
    events: pd.DataFrame | None,
    products: pd.DataFrame | None,
    as_of: datetime,
    config: InsightConfig | None = None,
) -> Profiles:
    """Compute every customer's profile from what was known before ``as_of``."""
    config = config or InsightConfig()
    history = customer_history(lines, as_of)
    frame = history.frame
    models = fit_shop_models(frame, config)
    shop_gap = shop_gap_days(frame, config)
    if frame.empty:
        empty = pd.DataFrame({name: [] for name in PROFILE_COLUMNS})
        return Profiles(empty, history.as_of, models, shop_gap, 0.0)

    # Recency, frequency and money, then their scores and segments.
    profile = _rfm(history)
    profile["segment"] = segment_of(
        profile["r_score"].to_numpy(),
        profile["f_score"].to_numpy(),
        profile["m_score"].to_numpy(),
        profile["frequency"].to_numpy(),
    )

    # Churn risk, value and the next order, from the models or the heuristic.
    gaps = typical_gaps(frame, shop_gap, config)
    profile["typical_gap_days"] = gaps
    _add_predictions(profile, frame, history.as_of_day, models, gaps, config)

    # The stage needs churn risk and the win-back value bar.
    win_back = float(np.quantile(profile["monetary"], config.win_back_value_quantile))
    stage, rule = _stages(profile, frame, win_back, config)
    profile["stage"], profile["stage_rule"] = stage, rule

    found = affinities(lines, events, products, history, config)
    profile["affinities"] = pd.Series(found, index=profile.index, dtype=object)
    profile = profile.reset_index()[list(PROFILE_COLUMNS)]
    return Profiles(profile, history.as_of, models, shop_gap, win_back)


def _rfm(history: History) -> pd.DataFrame:
    """Return the recency, frequency and monetary figures with their scores."""
    frame = history.frame
    recency = (history.as_of_day - frame["last_day"]).astype(np.int64)
    profile = pd.DataFrame(
        {
            "as_of": history.as_of,
            "first_order_at": frame["first_at"],
            "last_order_at": frame["last_at"],
            "recency_days": recency,
            "frequency": frame["days"].astype(np.int64),
            "orders": frame["orders"].astype(np.int64),
            "monetary": frame["monetary"].astype(np.float64),
            "avg_order_value": frame["monetary"] / frame["orders"],
            "tenure_days": frame["T"].astype(np.int64),
        },
        index=frame.index,
    )
    # Fewer days since the last purchase is better, so recency scores negated.
    profile["r_score"] = rfm_score(np.asarray(-recency, dtype=np.float64))
    profile["f_score"] = rfm_score(frame["days"].to_numpy(np.float64))
    profile["m_score"] = rfm_score(frame["monetary"].to_numpy(np.float64))
    return profile


def rfm_score(values: FloatArray) -> IntArray:
    """Score values 1 to 5 by the share of customers strictly below (ties share)."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    below = np.searchsorted(np.sort(values), values, side="left")
    return (1 + np.floor(5 * below / len(values))).astype(np.int64)


def segment_of(
    r: IntArray, f: IntArray, m: IntArray, purchase_days: IntArray
) -> npt.NDArray[np.object_]:
    """Map RFM scores to named segments by ``SEGMENT_RULES``, first match wins."""
    fm = (np.asarray(f) + np.asarray(m) + 1) // 2
    r = np.asarray(r)
    conditions = [
        (r >= 4) & (fm >= 4),
        (r == 3) & (fm >= 4),
        (r >= 4) & (np.asarray(purchase_days) == 1),
        r >= 3,
        (r == 1) & (fm >= 4),
        (r <= 2) & (fm >= 3),
        r == 2,
        r == 1,
    ]
    return np.asarray(
        np.select(conditions, _SEGMENT_ORDER, default="lost"), dtype=object
    )


def churn_band(risk: FloatArray, config: InsightConfig) -> npt.NDArray[np.object_]:
    """Return "low", "medium" or "high" for each churn risk."""
    bands = np.full(len(risk), "low", dtype=object)
    bands[risk >= config.churn_medium_from] = "medium"
    bands[risk >= config.churn_high_from] = "high"
    return bands


def _add_predictions(
    profile: pd.DataFrame,
    history: pd.DataFrame,
    as_of_day: int,
    models: ShopModels,
    gaps: FloatArray,
    config: InsightConfig,
) -> None:
    """Add P(alive), churn risk and band, CLV and the next order to the profiles."""
    recency = profile["recency_days"].to_numpy(np.float64)
    x, t_x, T = (history[c].to_numpy(np.float64) for c in ("x", "t_x", "T"))
    p_alive = heuristic_p_alive(recency, gaps, config)
    model_used = np.full(len(profile), "heuristic", dtype=object)

    if models.bgnbd is not None and models.gammagamma is not None:
        repeat = x > 0
        p_alive[repeat] = models.bgnbd.p_alive(x[repeat], t_x[repeat], T[repeat])
        model_used[repeat] = "bgnbd"
        clv, wait = _model_value(models.bgnbd, models.gammagamma, history, config)
    else:
        clv, wait = _heuristic_value(profile, p_alive, gaps, config)

    _require_finite("P(alive)", p_alive)
    _require_finite("customer lifetime value", clv)
    profile["model_used"] = model_used
    profile["p_alive"] = p_alive
    profile["churn_risk"] = 1.0 - p_alive
    profile["churn_band"] = churn_band(1.0 - p_alive, config)
    profile["clv"] = clv
    profile["expected_next_order_at"] = _next_order_times(as_of_day, wait, config)


def _model_value(
    bgnbd: BetaGeoModel,
    gammagamma: GammaGammaModel,
    history: pd.DataFrame,
    config: InsightConfig,
) -> tuple[FloatArray, FloatArray]:
    """Return CLV and days until the expected next purchase from the fitted models."""
    x, t_x, T = (history[c].to_numpy(np.float64) for c in ("x", "t_x", "T"))
    spend = repeat_spend(history)

    def value(x: FloatArray, t_x: FloatArray, T: FloatArray, m: FloatArray) -> Any:
        return gammagamma.customer_lifetime_value(
            bgnbd,
            x,
            t_x,
            T,
            m,
            time=config.clv_months,
            freq="D",
            discount_rate=config.monthly_discount_rate,
        )

    # Many customers share the same history, so each distinct one is computed once.
    clv = on_distinct(value, x, t_x, T, spend)
    try:
        wait = on_distinct(bgnbd.expected_time_to_next_purchase, x, t_x, T)
    except FloatingPointError as err:
        raise FitError(f"BG/NBD next purchase times: {err}") from err
    return clv, wait


def _heuristic_value(
    profile: pd.DataFrame, p_alive: FloatArray, gaps: FloatArray, config: InsightConfig
) -> tuple[FloatArray, FloatArray]:
    """Return CLV and days to the next purchase from the gap heuristic.

    An alive customer buys once per usual gap at their own value per purchase
    day; expected purchases are P(alive) times that, so the next purchase is
    expected after gap / P(alive) days.
    """
    per_day = (profile["monetary"] / profile["frequency"]).to_numpy(np.float64)
    months = np.arange(1, config.clv_months + 1, dtype=np.float64)
    discount = float(np.sum((1.0 + config.monthly_discount_rate) ** -months))
    clv = p_alive * (MONTH_DAYS / gaps) * per_day * discount
    with np.errstate(divide="ignore"):
        wait = np.where(p_alive > 0, gaps / p_alive, np.inf)
    return np.asarray(clv, dtype=np.float64), np.asarray(wait, dtype=np.float64)


def _next_order_times(
    as_of_day: int, wait: FloatArray, config: InsightConfig
) -> npt.NDArray[np.datetime64]:
    """Turn days until the next purchase into dates, NaT beyond the horizon."""
    within = np.isfinite(wait) & (wait <= config.next_order_max_days)
    start = np.datetime64(int(as_of_day), "D").astype("datetime64[us]")
    offset = np.where(within, np.round(wait * 86_400), 0).astype("timedelta64[s]")
    times = (start + offset).astype("datetime64[us]")
    times[~within] = np.datetime64("NaT")
    return np.asarray(times, dtype="datetime64[us]")


def _stages(
    profile: pd.DataFrame,
    history: pd.DataFrame,
    win_back: float,
    config: InsightConfig,
) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Return each customer's lifecycle stage and the rule that decided it."""
    risk = profile["churn_risk"].to_numpy(np.float64)
    recency = profile["recency_days"].to_numpy(np.int64)
    tenure = profile["tenure_days"].to_numpy(np.int64)
    money = profile["monetary"].to_numpy(np.float64)
    last_gap = (history["last_day"] - history["prev_day"]).to_numpy(np.int64)

    # First match wins: a recent first purchase makes a customer new whatever
    # the models say; a churned or at-risk customer outranks a recent return.
    is_new = tenure < config.new_days
    churned = risk >= config.churned_from
    high = risk >= config.churn_high_from
    at_risk = high & (money >= win_back)
    back = (last_gap >= config.reactivation_gap_days) & (
        recency < config.reactivated_days
    )
    names = ("new", "churned", "at_risk", "reactivated")
    stage = np.select([is_new, churned, at_risk, back], names, default="active")

    rules = [
        _stage_rule(s, r, rec, ten, m, gap, win_back, config)
        for s, r, rec, ten, m, gap in zip(
            stage.tolist(),
            risk.tolist(),
            recency.tolist(),
            tenure.tolist(),
            money.tolist(),
            last_gap.tolist(),
            strict=True,
        )
    ]
    return np.asarray(stage, dtype=object), rules


def _stage_rule(
    stage: str,
    risk: float,
    recency: int,
    tenure: int,
    money: float,
    gap: int,
    win_back: float,
    config: InsightConfig,
) -> str:
    """Say in one line why a customer is in a stage."""
    if stage == "new":
        return f"first purchase {tenure} days ago (< {config.new_days})"
    if stage == "churned":
        return (
            f"churn risk {risk:.2f} >= {config.churned_from:.2f}; "
            f"last purchase {recency} days ago"
        )
    if stage == "at_risk":
        return (
            f"churn risk {risk:.2f} >= {config.churn_high_from:.2f} and spend "
            f"{money:.2f} >= {win_back:.2f} (win-back value)"
        )
    if stage == "reactivated":
        return (
            f"bought again {recency} days ago (< {config.reactivated_days}) "
            f"after {gap} days without a purchase "
            f"(>= {config.reactivation_gap_days})"
        )
    if risk >= config.churn_high_from:
        return (
            f"churn risk {risk:.2f} is high but spend {money:.2f} < "
            f"{win_back:.2f}, below the win-back value"
        )
    return f"churn risk {risk:.2f} < {config.churn_high_from:.2f}"


def affinities(
    lines: pd.DataFrame,
    events: pd.DataFrame | None,
    products: pd.DataFrame | None,
    history: History,
    config: InsightConfig,
) -> list[dict[str, dict[str, float]]]:
    """Return each profiled customer's top categories, brands and price bands.

    Bought lines, add-to-carts and views count with their configured weights;
    each dimension's shares sum to 1 over what the customer touched there.
    Products' price bands are the catalog's price tertiles (price paid where
    the catalog has none).
    """
    customers = history.frame.index
    result: list[dict[str, dict[str, float]]] = [{} for _ in range(len(customers))]
    if products is None or products.empty:
        return result
    attributes = product_attributes(products, lines, history.as_of)
    row, product, weight = _signals(lines, events, history, attributes.index, config)

    for dimension in AFFINITY_DIMENSIONS:
        codes, names = pd.factorize(attributes[dimension], use_na_sentinel=True)
        label = codes[product]
        known = label >= 0
        signals = (row[known], label[known], weight[known])
        _add_top_shares(result, dimension, *signals, names, config)
    return result


def product_attributes(
    products: pd.DataFrame, lines: pd.DataFrame, as_of: datetime
) -> pd.DataFrame:
    """Return category, brand and price band per product id."""
    _require_columns("products", products, ("id",))
    frame = products.set_index("id")
    attributes = pd.DataFrame(index=frame.index)
    for name in ("category", "brand"):
        values = frame[name] if name in frame.columns else pd.Series(index=frame.index)
        attributes[name] = values.where(values.notna() & (values != ""), None)

    # The catalog price where known, else the median price paid before as_of.
    price = pd.Series(np.nan, index=frame.index)
    if "price" in frame.columns:
        price = pd.to_numeric(frame["price"], errors="coerce").astype(np.float64)
    before = lines["ordered_at"] < as_of
    paid = pd.Series(
        lines.loc[before, "unit_price"].to_numpy(np.float64),
        index=lines.loc[before, "product_id"].to_numpy(),
    )
    price = price.fillna(paid.groupby(level=0).median().reindex(frame.index))
    attributes["price_band"] = price_bands(np.asarray(price, dtype=np.float64))
    return attributes


def price_bands(prices: FloatArray) -> npt.NDArray[np.object_]:
    """Put prices into budget, mid and premium by the tertiles of known prices."""
    bands = np.full(len(prices), None, dtype=object)
    known = np.isfinite(prices)
    if not known.any():
        return bands
    low, high = np.quantile(prices[known], [1 / 3, 2 / 3])
    budget, mid, premium = PRICE_BANDS
    bands[known] = mid
    bands[known & (prices < low)] = budget
    bands[known & (prices > high)] = premium
    return bands


def _signals(
    lines: pd.DataFrame,
    events: pd.DataFrame | None,
    history: History,
    catalog: pd.Index,
    config: InsightConfig,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Return weighted signals before as_of as (profile row, catalog row, weight)."""
    as_of = history.as_of
    keep = lines["customer_id"].notna() & (lines["ordered_at"] < as_of)
    if "status" in lines.columns:
        keep &= lines["status"].eq("placed")
    customers = [_tidy_ids(lines.loc[keep, "customer_id"])]
    products = [lines.loc[keep, "product_id"]]
    weights = [np.full(int(keep.sum()), config.affinity_purchase_weight)]

    if events is not None and not events.empty:
        by_type = {
            "view": config.affinity_view_weight,
            "add_to_cart": config.affinity_cart_weight,
        }
        weight = events["event_type"].map(by_type)
        seen = (
            weight.notna()
            & events["product_id"].notna()
            & (events["occurred_at"] < as_of)
        )
        customers.append(_tidy_ids(events.loc[seen, "customer_id"]))
        products.append(_tidy_ids(events.loc[seen, "product_id"]))
        weights.append(weight[seen].to_numpy(np.float64))

    # Positions in the profile frame and the catalog; strangers are dropped.
    known = history.frame.index
    row = np.concatenate([known.get_indexer(pd.Index(c)) for c in customers])
    product = np.concatenate([catalog.get_indexer(pd.Index(p)) for p in products])
    weight_all = np.concatenate(weights)
    usable = (row >= 0) & (product >= 0) & (weight_all > 0)
    return (
        row[usable].astype(np.int64),
        product[usable].astype(np.int64),
        weight_all[usable],
    )


def _add_top_shares(
    result: list[dict[str, dict[str, float]]],
    dimension: str,
    row: IntArray,
    label: IntArray,
    weight: FloatArray,
    names: Any,
    config: InsightConfig,
) -> None:
    """Put each customer's top labels of one dimension, with shares, in ``result``."""
    if len(row) == 0:
        return
    # A sparse customer × label matrix adds up repeated signals without a sort.
    rows, count = len(result), len(names)
    matrix = sparse.coo_matrix((weight, (row, label)), shape=(rows, count)).tocsr()
    matrix.sum_duplicates()
    starts = matrix.indptr
    owner = np.repeat(np.arange(rows), np.diff(starts))
    total = np.asarray(matrix.sum(axis=1)).ravel()
    milli = np.round(matrix.data / total[owner] * 1000).astype(np.int64)

    # Within each customer: highest share first, ties by name.
    text = np.asarray([str(name) for name in names], dtype=object)
    by_name = np.argsort(np.argsort(text, kind="stable"))
    key = (owner * 1001 + (1000 - milli)) * count + by_name[matrix.indices]
    order = np.argsort(key, kind="stable")
    kept = order[np.arange(len(order)) - starts[owner] < config.affinity_top]

    # Customers stay grouped after the sort, so each one is a slice.
    shown = text[matrix.indices[kept]].tolist()
    shares = (milli[kept] / 1000).tolist()
    counts = np.bincount(owner[kept], minlength=rows)
    present = np.flatnonzero(counts)
    ends = np.cumsum(counts[present])
    for customer, begin, end in zip(
        present.tolist(), (ends - counts[present]).tolist(), ends.tolist(), strict=True
    ):
        result[customer][dimension] = dict(
            zip(shown[begin:end], shares[begin:end], strict=True)
        )


def on_distinct(func: Callable[..., Any], *columns: FloatArray) -> FloatArray:
    """Apply ``func`` to each distinct row of ``columns`` once and spread it back."""
    if len(columns[0]) == 0:
        return np.zeros(0, dtype=np.float64)
    keys = pd.DataFrame({str(i): c for i, c in enumerate(columns)})
    codes = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    first = np.unique(codes, return_index=True)[1]
    distinct = [np.asarray(column[first], dtype=np.float64) for column in columns]
    values = np.asarray(func(*distinct), dtype=np.float64)
    return np.asarray(values[codes], dtype=np.float64)


def segment_summary(profiles: pd.DataFrame, by: str = "segment") -> pd.DataFrame:
    """Return customers, revenue and CLV per segment (or stage), with shares."""
    names: Sequence[str] = SEGMENTS if by == "segment" else STAGES
    grouped = profiles.groupby(by)
    summary = pd.DataFrame(
        {
            "customers": grouped.size(),
            "revenue": grouped["monetary"].sum(),
            "clv": grouped["clv"].sum(),
        }
    ).reindex(list(names), fill_value=0)
    summary.index.name = by
    for column in ("customers", "revenue", "clv"):
        total = float(summary[column].sum())
        summary[f"{column}_share"] = summary[column] / total if total > 0 else 0.0
    summary["customers"] = summary["customers"].astype(np.int64)
    return summary


def _require_columns(what: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Refuse a frame that lacks columns this module reads."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"{what} have no column(s) {absent}")


def _require_finite(what: str, values: FloatArray) -> None:
    """Refuse to hand on figures that are NaN or infinite."""
    bad = ~np.isfinite(values)
    if bad.any():
        raise FitError(
            f"{what} is not a finite number for {int(bad.sum()):,} customers"
        )


def _tidy_ids(ids: pd.Series) -> pd.Series:
    """Return ids with float-typed whole numbers (guests made them float) as ints."""
    if pd.api.types.is_float_dtype(ids):
        values = ids.to_numpy(np.float64)
        if len(values) == 0 or np.all(values == np.floor(values)):
            return ids.astype(np.int64)
    return ids


def _empty_history(id_dtype: Any) -> pd.DataFrame:
    """Return a history with no customers and the usual columns."""
    columns = ("first_day", "last_day", "prev_day", "days", "orders")
    frame = pd.DataFrame({c: pd.Series([], dtype=np.int64) for c in columns})
    for name in ("first_at", "last_at"):
        frame[name] = pd.Series([], dtype="datetime64[us]")
    for name in ("monetary", "first_value", "x", "t_x", "T"):
        frame[name] = pd.Series([], dtype=np.float64)
    return frame.set_axis(pd.Index([], dtype=id_dtype, name="customer_id"))
