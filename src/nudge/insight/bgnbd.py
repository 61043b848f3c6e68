"""The BG/NBD model of how often customers buy and when they stop.

Fader, Hardie & Lee (2005), "Counting your customers the easy way: an
alternative to the Pareto/NBD model", Marketing Science 24(2).
"""

from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt
from scipy.optimize import elementwise
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1, log_expit

from nudge.insight._common import (
    FitError,
    FloatArray,
    ParametricModel,
    as_float_array,
    broadcast,
    check_counts,
    check_same_length,
    collapse_duplicates,
    fit_log_params,
    weighted_sum,
)

PARAM_NAMES = ("r", "alpha", "a", "b")
MIN_CUSTOMERS = 10


@dataclass(frozen=True)
class _Customers:
    """Distinct (frequency, recency, T) rows with weights, grouped by frequency."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    weight: FloatArray
    distinct_x: FloatArray
    x_index: npt.NDArray[np.intp]
    weight_per_x: FloatArray

    @classmethod
    def collapse(cls, x: FloatArray, t_x: FloatArray, T: FloatArray) -> Self:
        """Merge identical customers and index the distinct frequencies."""
        (x, t_x, T), weight = collapse_duplicates([x, t_x, T])
        distinct_x, x_index = np.unique(x, return_inverse=True)
        weight_per_x = np.bincount(x_index, weights=weight).astype(np.float64)
        return cls(x, t_x, T, weight, distinct_x, x_index, weight_per_x)


class BetaGeoModel(ParametricModel):
    """Fit and query the BG/NBD model on frequency, recency and T per customer.

    Time is in whatever unit ``recency`` and ``T`` were given in (days or weeks
    from ``summarize_transactions``); ``alpha`` and every horizon ``t`` share it.
    ``penalizer`` adds ``penalizer * sum(params**2)`` to the negative mean
    log-likelihood, shrinking the parameters towards zero.
    """

    model_name = "BG/NBD"
    param_names = PARAM_NAMES

    def fit(
        self, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike
    ) -> Self:
        """Fit the model by maximum likelihood and return it."""
        x, t_x, T_ = _customer_arrays(frequency, recency, T, same_length=True)
        if len(x) < MIN_CUSTOMERS:
            raise FitError(
                f"BG/NBD needs at least {MIN_CUSTOMERS} customers, got {len(x)}"
            )
        if not np.any(x > 0):
            raise FitError("BG/NBD cannot be fitted: no customer bought twice")

        customers = _Customers.collapse(x, t_x, T_)
        total = float(customers.weight.sum())

        def objective(params: FloatArray) -> tuple[float, FloatArray]:
            ll, gradient = _log_likelihood(params, customers)
            return ll / total, gradient / total

        # Purchase rates are about r / alpha, so alpha starts near the span of
        # observation; the second start is a generic fallback.
        scale = max(float(np.mean(T_)), 1e-3)
        starts = [(1.0, scale, 1.0, 1.0), (0.1, 1.0, 0.1, 0.1)]
        params, mean_ll = fit_log_params(
            self.model_name, PARAM_NAMES, objective, starts, self.penalizer
        )
        self._params = params
        self.log_likelihood = mean_ll * total
        return self

    def p_alive(
        self, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike
    ) -> FloatArray:
        """Return the probability that each customer is still active at T."""
        x, t_x, T_ = _customer_arrays(frequency, recency, T)
        return _p_alive(self._fitted(), x, t_x, T_)

    def expected_purchases(
        self,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
    ) -> FloatArray:
        """Return each customer's expected number of purchases in (T, T + t]."""
        horizon = _horizon(t)
        x, t_x, T_ = _customer_arrays(frequency, recency, T)
        horizon, x, t_x, T_ = broadcast(t=horizon, frequency=x, recency=t_x, T=T_)
        with np.errstate(divide="ignore"):
            log_t = np.log(horizon)
        return _expected_purchases(self._fitted(), log_t, x, t_x, T_)

    def expected_purchases_new(self, t: npt.ArrayLike) -> FloatArray:
        """Return the expected number of repeat purchases in t for a new customer."""
        horizon = _horizon(t)
        zero = np.zeros_like(horizon)
        with np.errstate(divide="ignore"):
            log_t = np.log(horizon)
        # A customer seen at time zero is alive and has no history, which turns
        # the conditional expectation into the unconditional one.
        return _expected_purchases(self._fitted(), log_t, zero, zero, zero)

    def expected_time_to_next_purchase(
        self, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike
    ) -> FloatArray:
        """Return the time after T at which each customer's expected count reaches 1.

        This is the horizon t solving ``expected_purchases(t, ...) == 1``, found
        per customer with a vectorised bracketing root finder; it folds the chance
        that the customer has already left into the answer. When ``a > 1`` the
        expected count levels off at ``(a + b + x - 1) / (a - 1) * p_alive``, and
        customers whose ceiling is at most 1 get ``inf``; otherwise customers who
        have probably left get very large times.
        """
        params = self._fitted()
        x, t_x, T_ = _customer_arrays(frequency, recency, T)
        _, alpha, a, b = params

        ceiling = np.full_like(x, np.inf)
        if a > 1:
            ceiling = (a + b + x - 1) / (a - 1) * _p_alive(params, x, t_x, T_)
        reachable = ceiling > 1
        result = np.full_like(x, np.inf)
        if not np.any(reachable):
            return result

        # Solving over log t keeps the search scale-free and t positive.
        def shortfall(log_t: FloatArray, *customer: FloatArray) -> FloatArray:
            return _expected_purchases(params, log_t, *customer) - 1.0

        customer = (x[reachable], t_x[reachable], T_[reachable])
        start = np.log(alpha + customer[2])
        bracket = elementwise.bracket_root(
            shortfall, start - 1, start + 1, args=customer
        )
        root = elementwise.find_root(shortfall, bracket.bracket, args=customer)
        if not (np.all(bracket.success) and np.all(root.success)):
            raise FloatingPointError(
                "could not solve for the next purchase time of "
                f"{int(np.sum(~(bracket.success & root.success)))} customers"
            )
        result[reachable] = np.exp(root.x)
        return result


def _customer_arrays(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,
    *,
    same_length: bool = False,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Convert, broadcast and check frequency, recency and T."""
    x = as_float_array("frequency", frequency)
    t_x = as_float_array("recency", recency)
    T_ = as_float_array("T", T)
    if same_length:
        check_same_length(frequency=x, recency=t_x, T=T_)
    x, t_x, T_ = broadcast(frequency=x, recency=t_x, T=T_)

    check_counts("frequency", x)
    if np.any(t_x < 0):
        raise ValueError("recency must not be negative")
    if np.any(t_x > T_):
        raise ValueError("recency must not exceed T (last purchase after the end)")
    if np.any((x == 0) & (t_x > 0)):
        raise ValueError("customers with frequency 0 must have recency 0")
    return x, t_x, T_


def _horizon(t: npt.ArrayLike) -> FloatArray:
    """Convert and check a prediction horizon."""
    horizon = as_float_array("t", t)
    if np.any(horizon < 0):
        raise ValueError("t must not be negative")
    return horizon


def _log_likelihood(
    params: FloatArray, customers: _Customers
) -> tuple[float, FloatArray]:
    """Return the weighted BG/NBD log-likelihood and its gradient in (r, alpha, a, b).

    Each customer's likelihood is the sum of "still alive at T" and "left right
    after the last purchase" terms, combined with logaddexp. Terms that depend
    only on the frequency are computed once per distinct frequency.
    """
    r, alpha, a, b = params
    c = customers
    xs = c.distinct_x
    repeat = xs > 0
    # b + x - 1 only enters for repeat buyers; 1.0 keeps the others finite.
    b_shift = np.where(repeat, b + xs - 1, 1.0)

    shared = gammaln(r + xs) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    log_alive_x = betaln(a, b + xs)
    log_dead_x = np.where(repeat, betaln(a + 1, b_shift), -np.inf)

    rx = r + c.x
    log_alpha_T = np.log(alpha + c.T)
    log_alpha_tx = np.log(alpha + c.t_x)
    log_alive = log_alive_x[c.x_index] - rx * log_alpha_T
    log_dead = log_dead_x[c.x_index] - rx * log_alpha_tx
    row_ll = np.logaddexp(log_alive, log_dead)
    dead_share = np.exp(log_dead - row_ll)
    alive_share = 1.0 - dead_share

    by_x, by_row = c.weight_per_x, c.weight
    ll = weighted_sum(by_x, shared) + weighted_sum(by_row, row_ll)

    # Gradients use digamma(z + 1) - digamma(z) = 1 / z to drop most terms.
    psi_ab = digamma(a + b)
    psi_abx = digamma(a + b + xs)
    d_r = weighted_sum(
        by_x, digamma(r + xs) - digamma(r) + np.log(alpha)
    ) - weighted_sum(by_row, alive_share * log_alpha_T + dead_share * log_alpha_tx)
    d_alpha = weighted_sum(by_x, r / alpha) - weighted_sum(
        by_row, rx * (alive_share / (alpha + c.T) + dead_share / (alpha + c.t_x))
    )
    d_a = weighted_sum(by_x, psi_ab - psi_abx) + weighted_sum(by_row, dead_share) / a
    d_b = weighted_sum(
        by_x, psi_ab - digamma(b) - psi_abx + digamma(b + xs)
    ) - weighted_sum(by_row, dead_share / b_shift[c.x_index])
    return ll, np.array([d_r, d_alpha, d_a, d_b], dtype=np.float64)


def _log_dead_odds(
    params: FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Return log(P(left) / P(alive)) per customer; -inf for one-time buyers."""
    r, alpha, a, b = params
    repeat = x > 0
    b_shift = np.where(repeat, b + x - 1, 1.0)
    odds = (
        np.log(a)
        - np.log(b_shift)
        + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    )
    return np.where(repeat, odds, -np.inf)


def _p_alive(
    params: FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Return the probability that each customer is still alive at T."""
    return np.asarray(expit(-_log_dead_odds(params, x, t_x, T)), dtype=np.float64)


def _expected_purchases(
    params: FloatArray,
    log_t: FloatArray,
    x: FloatArray,
    t_x: FloatArray,
    T: FloatArray,
) -> FloatArray:
    """Return E[purchases in (T, T + t] | x, t_x, T], taking t on the log scale.

    The paper's closed form uses 2F1(r + x, b + x; a + b + x - 1; z) with
    z = t / (alpha + T + t). Euler's transformation rewrites its product with
    (1 - z)^(r + x) as (1 - z)^(a - 1) * 2F1(a + b - 1 - r, a - 1; c; z), whose
    first two arguments do not grow with x, which keeps scipy's hyp2f1 accurate.
    """
    r, alpha, a, b = params
    c = a + b + x - 1

    # z and log(1 - z) from log t, so t = 0 and very large t stay exact.
    shifted = log_t - np.log(alpha + T)
    z = expit(shifted)
    log_one_minus_z = log_expit(-shifted)

    decay = (a - 1) * log_one_minus_z + np.log(hyp2f1(a + b - 1 - r, a - 1, c, z))
    expected_alive = c / (a - 1) * -np.expm1(decay)
    return np.asarray(expected_alive * _p_alive(params, x, t_x, T), dtype=np.float64)
