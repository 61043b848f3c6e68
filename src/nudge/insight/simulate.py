"""Draw synthetic customers from the BG/NBD and Gamma-Gamma models."""

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd


def simulate_customers(
    n: int,
    bgnbd_params: Mapping[str, float],
    gammagamma_params: Mapping[str, float] | None = None,
    *,
    max_T: float = 365.0,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Return ``n`` customers with frequency, recency, T and, optionally, spend.

    Each customer's T is uniform on (0, max_T]. ``monetary_value`` is added when
    ``gammagamma_params`` is given and is 0 for customers without repeat purchases.
    """
    r, alpha, a, b = (bgnbd_params[k] for k in ("r", "alpha", "a", "b"))
    rate = rng.gamma(r, 1.0 / alpha, n)
    dropout = rng.beta(a, b, n)
    T = max_T * (1.0 - rng.random(n))

    # A customer who never left would make Poisson(rate * T) repeat purchases;
    # leaving happens right after purchase k with k ~ Geometric(dropout).
    if_alive = rng.poisson(rate * T)
    frequency = np.minimum(if_alive, rng.geometric(dropout))

    # Given N purchase times uniform on (0, T], the x-th of them is T times a
    # Beta(x, N - x + 1) draw.
    recency = np.zeros(n)
    repeat = frequency > 0
    order = rng.beta(frequency[repeat], if_alive[repeat] - frequency[repeat] + 1)
    recency[repeat] = T[repeat] * order

    customers = pd.DataFrame({"frequency": frequency, "recency": recency, "T": T})
    if gammagamma_params is not None:
        customers["monetary_value"] = _mean_spend(frequency, gammagamma_params, rng)
    return customers


def _mean_spend(
    frequency: npt.NDArray[np.int64],
    params: Mapping[str, float],
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """Draw each customer's mean spend over their repeat purchases."""
    p, q, v = (params[k] for k in ("p", "q", "v"))
    scale_rate = rng.gamma(q, 1.0 / v, len(frequency))

    # The mean of x Gamma(p, nu) purchases is Gamma(p * x, nu * x).
    spend = np.zeros(len(frequency))
    repeat = frequency > 0
    x = frequency[repeat]
    spend[repeat] = rng.gamma(p * x, 1.0 / (scale_rate[repeat] * x))
    return spend
