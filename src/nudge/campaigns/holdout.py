"""Stable assignments: holdout groups and variants from a hash of campaign and customer.

Each customer gets a number in [0, 1) from BLAKE2b over the campaign's name,
a purpose ("holdout" or "variant") and the customer's id as the shop knows it.
The same campaign and customer always give the same number, on any machine
and in any run, so a customer in a campaign's control group stays there, a
customer keeps the subject variant they saw, and a customer's discount code
is the same in a preview and in the send. Renaming a campaign draws anew.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from hashlib import blake2b

import numpy as np
import numpy.typing as npt

_SCALE = float(2**64)


def unit_numbers(
    campaign: str, purpose: str, keys: Iterable[object]
) -> npt.NDArray[np.float64]:
    """Return a uniform number in [0, 1) per key, stable for campaign and purpose."""
    salt = f"{campaign}\x1f{purpose}\x1f".encode()
    prefix = blake2b(salt, digest_size=8)
    numbers = []
    for key in keys:
        digest = prefix.copy()
        digest.update(str(key).encode())
        numbers.append(int.from_bytes(digest.digest(), "big") / _SCALE)
    return np.asarray(numbers, dtype=np.float64)


def in_holdout(
    campaign: str, keys: Iterable[object], share: float
) -> npt.NDArray[np.bool_]:
    """Tell which customers belong to a campaign's control group."""
    numbers = unit_numbers(campaign, "holdout", keys)
    held: npt.NDArray[np.bool_] = numbers < share
    return held


def variants(
    campaign: str,
    keys: Sequence[object],
    names: Sequence[str],
    weights: Sequence[float],
) -> npt.NDArray[np.object_]:
    """Assign each customer a variant name in proportion to the weights."""
    if len(names) == 1:
        return np.full(len(keys), names[0], dtype=object)
    numbers = unit_numbers(campaign, "variant", keys)
    edges = np.cumsum(np.asarray(weights, dtype=np.float64))
    edges /= edges[-1]
    picked = np.searchsorted(edges, numbers, side="right")
    return np.asarray(names, dtype=object)[np.minimum(picked, len(names) - 1)]


def offer_code(prefix: str, campaign: str, key: object) -> str:
    """Return a customer's own discount code: the prefix and 8 stable characters."""
    text = f"{campaign}\x1foffer\x1f{key}".encode()
    digest = blake2b(text, digest_size=5).digest()
    return f"{prefix}-{base64.b32encode(digest).decode()}"
