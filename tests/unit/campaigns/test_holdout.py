"""Stable holdout, variant and offer-code assignments."""

from __future__ import annotations

from hashlib import blake2b

import numpy as np

from nudge.campaigns.holdout import in_holdout, offer_code, unit_numbers, variants

KEYS = [f"C{i:05d}" for i in range(20_000)]


def test_numbers_are_fixed_for_campaign_purpose_and_customer() -> None:
    # Fixed values: a change here would move customers between groups.
    first = unit_numbers("winback", "holdout", ["C00001", "C00002"])
    assert first.round(6).tolist() == [0.813922, 0.381034]
    digest = blake2b(b"winback\x1fholdout\x1fC00001", digest_size=8).digest()
    assert first[0] == int.from_bytes(digest, "big") / 2**64
    assert unit_numbers("winback", "holdout", ["C00001"])[0] == first[0]


def test_the_holdout_is_stable_across_runs_and_orders() -> None:
    once = in_holdout("winback", KEYS, 0.1)
    again = in_holdout("winback", list(reversed(KEYS)), 0.1)[::-1]

    assert (once == again).all()
    assert 0.09 < once.mean() < 0.11


def test_campaigns_draw_independent_holdouts() -> None:
    a = in_holdout("winback", KEYS, 0.1)
    b = in_holdout("new_arrivals", KEYS, 0.1)

    both = (a & b).mean()
    assert 0.005 < both < 0.015


def test_a_larger_share_keeps_the_earlier_members() -> None:
    small = in_holdout("winback", KEYS, 0.05)
    large = in_holdout("winback", KEYS, 0.2)

    assert (large[small]).all()


def test_variants_follow_the_weights_and_stay_put() -> None:
    picked = variants("winback", KEYS, ["a", "b"], [3, 1])

    assert 0.72 < float(np.mean(picked == "a")) < 0.78
    assert (picked == variants("winback", KEYS, ["a", "b"], [3, 1])).all()
    assert set(variants("winback", KEYS[:10], ["only"], [1])) == {"only"}


def test_offer_codes_are_per_customer_and_stable() -> None:
    code = offer_code("COMEBACK", "winback", "C00001")

    assert code == offer_code("COMEBACK", "winback", "C00001")
    assert code != offer_code("COMEBACK", "winback", "C00002")
    assert code.startswith("COMEBACK-") and len(code) == len("COMEBACK-") + 8
