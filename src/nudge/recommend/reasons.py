"""Reasons: a short machine code and a sentence a template can show.

Each code has a sentence with optional ``{evidence}`` (the product behind
the reason, e.g. the one the customer bought) and ``{category}`` (the
recommended product's own category). When the evidence or category is
unknown, the code's fallback sentence is used instead, so no sentence ever
shows an empty name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

# code: (sentence, sentence without evidence or category)
TEMPLATES: dict[str, tuple[str, str]] = {
    "best_seller": ("One of our best sellers", "One of our best sellers"),
    "best_seller_in_category": (
        "A best seller in {category}",
        "One of our best sellers",
    ),
    "trending": ("Popular this week", "Popular this week"),
    "trending_in_category": ("Popular in {category} this week", "Popular this week"),
    "bought_before": ("You bought this before", "You bought this before"),
    "due_again": (
        "Time to stock up again? You buy this regularly",
        "Time to stock up again? You buy this regularly",
    ),
    "bought_together": ("Often bought with {evidence}", "Often bought together"),
    "because_you_bought": (
        "Because you bought {evidence}",
        "Picked for you from your past orders",
    ),
    "similar_to": ("Similar to {evidence}", "Similar to things you like"),
    "new_in_category": (
        "New in {category}, a category you like",
        "New and picked for you",
    ),
    "new_like": ("New, and like {evidence}", "New and picked for you"),
    "new_for_you": ("New and picked for you", "New and picked for you"),
    "pinned": ("Featured", "Featured"),
}
CODES: tuple[str, ...] = tuple(TEMPLATES)
CODE = {code: number for number, code in enumerate(CODES)}

_SMALL_WORDS = frozenset({"a", "an", "and", "of", "the", "in", "on", "with", "for"})


def display_title(title: str | None) -> str | None:
    """Return a product title fit for a sentence (shouting titles calmed)."""
    if title is None or not str(title).strip():
        return None
    text = re.sub(r"\s+", " ", str(title).strip())
    if text.upper() != text:
        return text
    words = text.lower().split(" ")
    shown = [
        word if index and word in _SMALL_WORDS else word.capitalize()
        for index, word in enumerate(words)
    ]
    return " ".join(shown)


def sentences(
    codes: npt.NDArray[np.int16],
    evidence_titles: Sequence[str | None],
    categories: Sequence[str | None],
    templates: Mapping[str, tuple[str, str]] | None = None,
) -> list[str]:
    """Render one sentence per reason code, with its evidence and category."""
    table = {**TEMPLATES, **(templates or {})}
    rendered: list[str] = []
    for code, evidence, category in zip(
        codes.tolist(), evidence_titles, categories, strict=True
    ):
        full, fallback = table[CODES[code]]
        wants_evidence = "{evidence}" in full
        wants_category = "{category}" in full
        if (wants_evidence and not evidence) or (wants_category and not category):
            rendered.append(fallback)
        else:
            rendered.append(full.format(evidence=evidence, category=category))
    return rendered
