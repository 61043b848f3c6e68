"""The Gamma-Gamma model of how much customers spend per purchase.

Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer
base analysis", Journal of Marketing Research 42(4).
"""

from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, gammaln

from nudge.insight._common import (
    MONTH_DAYS,
    FitError,
    FloatArray,
    ParametricModel,
    as_float_array,
    broadcast,
    check_counts,
    check_same_length,
    collapse_duplicates,
    fit_log_params,
    period_days,
    weighted_sum,
)
from nudge.insight.bgnbd import BetaGeoModel

PARAM_NAMES = ("p", "q", "v")
MIN_CUSTOMERS = 10


@dataclass(frozen=True)
class _Spenders:
    """Distinct (frequency, mean spend) rows with weights and fixed sums."""

    x: FloatArray
    total: FloatArray
    weight: FloatArray
    distinct_x: FloatArray
    weight_per_x: FloatArray
    x_log_total: float
    log_spend: float

    @classmethod
    def collapse(cls, x: FloatArray, spend: FloatArray) -> Self:
        """Merge identical customers and precompute the parameter-free sums."""
        (x, spend), weight = collapse_duplicates([x, spend])
        distinct_x, x_index = np.unique(x, return_inverse=True)
        weight_per_x = np.bincount(x_index, weights=weight).astype(np.float64)

        # x log(x m) and log m enter the likelihood only through weighted sums.
        total = x * spend
        x_log_total = weighted_sum(weight, x * np.log(total))
        log_spend = weighted_sum(weight, np.log(spend))
        return cls(x, total, weight, distinct_x, weight_per_x, x_log_total, log_spend)


class GammaGammaModel(ParametricModel):
    """Fit and query the Gamma-Gamma model of spend per repeat purchase.

    Only customers with repeat purchases and a positive mean spend inform the
    fit; the rest are skipped. ``penalizer`` adds ``penalizer * sum(params**2)``
    to the negative mean log-likelihood.
    """

    model_name = "Gamma-Gamma"
    param_names = PARAM_NAMES

    def fit(self, frequency: npt.ArrayLike, monetary_value: npt.ArrayLike) -> Self:
        """Fit the model by maximum likelihood and return it."""
        x, spend = _spend_arrays(frequency, monetary_value)
        check_same_length(frequency=x, monetary_value=spend)
        usable = (x > 0) & (spend > 0)
        if np.count_nonzero(usable) < MIN_CUSTOMERS:
            raise FitError(
                f"Gamma-Gamma needs at least {MIN_CUSTOMERS} customers with repeat "
                f"purchases and positive spend, got {np.count_nonzero(usable)}"
            )

        spenders = _Spenders.collapse(x[usable], spend[usable])
        total = float(spenders.weight.sum())

        def objective(params: FloatArray) -> tuple[float, FloatArray]:
            ll, gradient = _log_likelihood(params, spenders)
            return ll / total, gradient / total

        # With p = 1 and q = 2 the population mean spend p * v / (q - 1) equals
        # the sample mean when v does; the second start is a generic fallback.
        starts = [(1.0, 2.0, float(np.mean(spend[usable]))), (1.0, 1.0, 1.0)]
        params, mean_ll = fit_log_params(
            self.model_name, PARAM_NAMES, objective, starts, self.penalizer
        )
        self._params = params
        self.log_likelihood = mean_ll * total
        return self

    def conditional_expected_average_profit(
        self, frequency: npt.ArrayLike, monetary_value: npt.ArrayLike
    ) -> FloatArray:
        """Return each customer's expected spend per purchase given their history.

        It blends the population mean ``p * v / (q - 1)`` with the customer's own
        mean, weighting the latter more the more repeat purchases they made;
        customers with frequency 0 get the population mean.
        """
        p, q, v = self._fitted()
        x, spend = _spend_arrays(frequency, monetary_value)
        x, spend = broadcast(frequency=x, monetary_value=spend)

        denominator = p * x + q - 1
        if np.any(denominator <= 0):
            raise ValueError(
                f"expected spend is infinite for customers with frequency "
                f"<= {(1 - q) / p:.3g} because the fitted q = {q:.3g} is at most 1"
            )
        return np.asarray(p * (v + x * spend) / denominator, dtype=np.float64)

    def customer_lifetime_value(
        self,
        bgnbd_model: BetaGeoModel,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
        monetary_value: npt.ArrayLike,
        *,
        time: int = 12,
        freq: str = "D",
        discount_rate: float = 0.01,
    ) -> FloatArray:
        """Return the discounted expected spend of each customer over ``time`` months.

        A month is 30 days, converted to the unit named by ``freq``, which must be
        the unit ``bgnbd_model`` was fitted in. Month i contributes the expected
        purchases between the ends of months i - 1 and i, times the expected
        spend per purchase, divided by ``(1 + discount_rate) ** i``.
        """
        if isinstance(time, bool) or not isinstance(time, int | np.integer) or time < 1:
            raise ValueError(f"time must be a whole number of months >= 1, got {time}")
        if not (np.isfinite(discount_rate) and discount_rate >= 0):
            raise ValueError(f"discount_rate must be >= 0, got {discount_rate}")
        month = MONTH_DAYS / period_days(freq)

        spend_per_purchase = self.conditional_expected_average_profit(
            frequency, monetary_value
        )
        month_ends = month * np.arange(int(time) + 1, dtype=np.float64)
        cumulative = np.stack(
            [
                bgnbd_model.expected_purchases(end, frequency, recency, T)
                for end in month_ends
            ]
        )
        discount = (1.0 + discount_rate) ** -np.arange(
            1, int(time) + 1, dtype=np.float64
        )
        purchases_value = discount @ np.diff(cumulative, axis=0)
        return np.asarray(purchases_value * spend_per_purchase, dtype=np.float64)


def _spend_arrays(
    frequency: npt.ArrayLike, monetary_value: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Convert and check frequency and mean spend."""
    x = as_float_array("frequency", frequency)
    spend = as_float_array("monetary_value", monetary_value)
    check_counts("frequency", x)
    return x, spend


def _log_likelihood(
    params: FloatArray, spenders: _Spenders
) -> tuple[float, FloatArray]:
    """Return the weighted Gamma-Gamma log-likelihood and its gradient in (p, q, v).

    Spend per purchase is Gamma(p, nu) with nu ~ Gamma(q, v), so a customer's
    mean m over x purchases has density
    Γ(px + q) / (Γ(px) Γ(q)) · v^q · m^(px - 1) · x^px / (v + x m)^(px + q).
    """
    p, q, v = params
    s = spenders
    pxs = p * s.distinct_x
    by_x, by_row = s.weight_per_x, s.weight

    per_x = gammaln(pxs + q) - gammaln(pxs) - gammaln(q) + q * np.log(v)
    log_v_total = np.log(v + s.total)
    shape = p * s.x + q
    ll = (
        weighted_sum(by_x, per_x)
        + p * s.x_log_total
        - s.log_spend
        - weighted_sum(by_row, shape * log_v_total)
    )

    psi_pxq = digamma(pxs + q)
    d_p = (
        weighted_sum(by_x, s.distinct_x * (psi_pxq - digamma(pxs)))
        + s.x_log_total
        - weighted_sum(by_row, s.x * log_v_total)
    )
    d_q = weighted_sum(by_x, psi_pxq - digamma(q) + np.log(v)) - weighted_sum(
        by_row, log_v_total
    )
    d_v = weighted_sum(by_x, q / v) - weighted_sum(by_row, shape / (v + s.total))
    return ll, np.array([d_p, d_q, d_v], dtype=np.float64)
