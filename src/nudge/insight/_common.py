"""Shared plumbing for the customer models: errors, input checks and fitting."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import minimize

from nudge.errors import NudgeError

FloatArray = npt.NDArray[np.float64]

# An objective takes parameters on their natural scale and returns the weighted
# mean log-likelihood with its gradient.
Objective = Callable[[FloatArray], tuple[float, FloatArray]]

# Log-parameters stay within [-LOG_BOUND, LOG_BOUND]; a fit that ends on this
# edge has drifted towards zero or infinity, which means the data cannot pin it.
LOG_BOUND = 12.0
_EDGE_MARGIN = 1e-6

# L-BFGS-B sometimes reports a failed line search at an optimum it cannot improve
# on in floating point; a gradient this small is accepted as converged anyway.
_ACCEPTED_GRADIENT = 1e-4

MONTH_DAYS = 30.0
PERIOD_DAYS = {"D": 1.0, "W": 7.0}


class FitError(NudgeError, ValueError):
    """Raised when a model cannot be fitted to the data it was given."""


class ParametricModel:
    """Hold the penalizer and fitted parameters shared by every customer model."""

    model_name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]

    def __init__(self, penalizer: float = 0.0) -> None:
        if not (np.isfinite(penalizer) and penalizer >= 0):
            raise ValueError(f"penalizer must be zero or positive, got {penalizer}")
        self.penalizer = penalizer
        self.log_likelihood: float | None = None
        self._params: FloatArray | None = None

    def __repr__(self) -> str:
        if self._params is None:
            return f"{type(self).__name__}(penalizer={self.penalizer}, unfitted)"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"{type(self).__name__}({shown})"

    @classmethod
    def from_params(cls, params: Mapping[str, float], penalizer: float = 0.0) -> Self:
        """Return a fitted model with the given parameters, e.g. ones saved earlier."""
        model = cls(penalizer)
        model._params = checked_params(cls.model_name, cls.param_names, params)
        return model

    @property
    def params(self) -> dict[str, float]:
        """Return the fitted parameters by name."""
        return dict(zip(self.param_names, map(float, self._fitted()), strict=True))

    def _fitted(self) -> FloatArray:
        """Return the parameter vector, refusing if the model is not fitted."""
        if self._params is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        return self._params


def period_days(freq: str) -> float:
    """Return the length in days of one time unit named by ``freq``."""
    try:
        return PERIOD_DAYS[freq]
    except KeyError:
        raise ValueError(
            f"freq must be 'D' (days) or 'W' (weeks of 7 days), got {freq!r}"
        ) from None


def as_float_array(name: str, values: npt.ArrayLike) -> FloatArray:
    """Convert an array-like to a finite one-dimensional float array."""
    try:
        array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold numbers: {err}") from err

    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains missing or infinite values")
    return array


def checked_params(
    model: str, names: Sequence[str], params: Mapping[str, float]
) -> FloatArray:
    """Return saved parameters as a vector in ``names`` order, checking each one."""
    if set(params) != set(names):
        raise ValueError(
            f"{model} parameters must be {list(names)}, got {list(params)}"
        )
    vector = np.array([params[name] for name in names], dtype=np.float64)
    if not np.all(np.isfinite(vector) & (vector > 0)):
        raise ValueError(f"{model} parameters must be positive numbers, got {params}")
    return vector


def check_counts(name: str, values: FloatArray) -> None:
    """Reject counts that are negative or not whole numbers."""
    if np.any(values < 0):
        raise ValueError(f"{name} must not be negative")
    if np.any(values != np.floor(values)):
        raise ValueError(f"{name} must hold whole numbers of purchases")


def broadcast(**arrays: FloatArray) -> list[FloatArray]:
    """Broadcast named arrays to one shape, naming them if they do not fit."""
    try:
        return [np.asarray(a) for a in np.broadcast_arrays(*arrays.values())]
    except ValueError:
        shapes = ", ".join(f"{k}={len(v)}" for k, v in arrays.items())
        raise ValueError(f"inputs have mismatched lengths ({shapes})") from None


def check_same_length(**arrays: FloatArray) -> None:
    """Require every named array to have the same length."""
    if len({len(a) for a in arrays.values()}) > 1:
        shapes = ", ".join(f"{k}={len(v)}" for k, v in arrays.items())
        raise ValueError(f"inputs have mismatched lengths ({shapes})")


def weighted_sum(weight: FloatArray, values: FloatArray | float) -> float:
    """Return the sum of ``weight * values``."""
    # Not a BLAS dot product: OpenBLAS spreads long dots over threads, which
    # stalls badly when other processes keep the cores busy.
    return float(np.sum(weight * values))


def collapse_duplicates(
    columns: Sequence[FloatArray],
) -> tuple[list[FloatArray], FloatArray]:
    """Merge identical rows, returning the distinct rows and how often each occurs."""
    frame = pd.DataFrame({str(i): column for i, column in enumerate(columns)})
    counts = frame.groupby(list(frame.columns), sort=False).size()
    keys = counts.index.to_frame(index=False)
    distinct = [keys[name].to_numpy(dtype=np.float64) for name in frame.columns]
    return distinct, np.asarray(counts.to_numpy(), dtype=np.float64)


def fit_log_params(
    model: str,
    names: Sequence[str],
    objective: Objective,
    starts: Sequence[Sequence[float]],
    penalizer: float,
) -> tuple[FloatArray, float]:
    """Maximise a mean log-likelihood over log-parameters from each start in turn.

    Returns the fitted parameters on their natural scale and the mean
    log-likelihood there. The first start that converges wins; the L2 penalty
    ``penalizer * sum(params**2)`` is subtracted from the mean log-likelihood.
    """

    def penalized(log_params: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(log_params)
        mean_ll, gradient = objective(params)
        value = -mean_ll + penalizer * float(np.sum(params**2))
        # Chain rule: d/d(log θ) = θ · d/dθ.
        return value, (2.0 * penalizer * params - gradient) * params

    reasons = []
    for start in starts:
        result = minimize(
            penalized,
            np.log(np.asarray(start, dtype=np.float64)),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-LOG_BOUND, LOG_BOUND)] * len(names),
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        reason = _rejection(result, names)
        if reason is None:
            params = np.exp(np.asarray(result.x, dtype=np.float64))
            return params, objective(params)[0]
        reasons.append(reason)

    raise FitError(f"{model} fit failed: {'; '.join(reasons)}")


def _rejection(result: Any, names: Sequence[str]) -> str | None:
    """Say why an optimiser result is unusable, or return None if it is sound."""
    log_params = np.asarray(result.x, dtype=np.float64)
    gradient = np.asarray(result.jac, dtype=np.float64)
    value = float(result.fun)

    if not (np.all(np.isfinite(log_params)) and np.isfinite(value)):
        return "the likelihood became non-finite"
    if not result.success and np.max(np.abs(gradient)) > _ACCEPTED_GRADIENT:
        return f"the optimiser did not converge ({result.message})"

    at_edge = np.abs(log_params) > LOG_BOUND - _EDGE_MARGIN
    if np.any(at_edge):
        drifted = ", ".join(
            name for name, edge in zip(names, at_edge, strict=True) if edge
        )
        return (
            f"{drifted} ran to the edge of its range, so the data do not identify "
            "the model (too few customers or too little variation)"
        )
    return None
