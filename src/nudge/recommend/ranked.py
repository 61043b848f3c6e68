"""Ranked candidates for a batch of customers, kept flat for vectorized work.

A batch of customers is numbered by *slot* (its position in the batch). Every
candidate is one entry of parallel arrays: the slot, the product column, its
score, the reason code, the evidence behind the reason (a product column, or
-1) and the strategy that proposed it. Entries are ordered by slot, then by
score from best to worst.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
SmallArray = npt.NDArray[np.int16]


def group_starts(groups: IntArray) -> IntArray:
    """Return where each run of equal values starts in a grouped array."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(([0], np.flatnonzero(groups[1:] != groups[:-1]) + 1))


def rank_in_group(groups: IntArray) -> IntArray:
    """Return each entry's position within its run of equal group values."""
    starts = group_starts(groups)
    lengths = np.diff(np.append(starts, len(groups)))
    return np.arange(len(groups)) - np.repeat(starts, lengths)


def stable_order(keys: IntArray) -> IntArray:
    """Return the order that sorts non-negative integer keys, ties kept in place.

    Each key is packed with its position into one int64 and the packed
    values sorted (numpy's vectorised sort of values is several times faster
    than a stable argsort); keys too large to pack fall back to argsort.
    """
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    bits = int(len(keys) - 1).bit_length()
    if int(keys.max()).bit_length() + bits > 62 or int(keys.min()) < 0:
        return np.argsort(keys, kind="stable").astype(np.int64)
    packed = (keys.astype(np.int64) << bits) | np.arange(len(keys), dtype=np.int64)
    packed.sort()
    return np.asarray(packed & ((1 << bits) - 1), dtype=np.int64)


def slot_score_order(slots: IntArray, scores: FloatArray) -> IntArray:
    """Return the order that sorts entries by slot, then by score, best first.

    Each score's distance from the best (scaled into 0..1) is cut to as many
    bits as fit beside the slot and the entry's position in one int64, and
    the packed values are sorted: several times faster than a two-key
    lexsort. Scores closer than about 1e-9 of their range tie, and ties keep
    their order.
    """
    if len(slots) == 0:
        return np.zeros(0, dtype=np.int64)
    high, low = float(scores.max()), float(scores.min())
    span = high - low
    distance = (high - scores) / span if span > 0 else np.zeros(len(scores))
    position_bits = int(len(slots) - 1).bit_length()
    slot_bits = int(slots.max()).bit_length()
    # At most a float64's 52 bits of mantissa, so the steps never round past
    # their field.
    distance_bits = min(62 - position_bits - slot_bits, 52)
    if distance_bits < 30 or not np.isfinite(span) or int(slots.min()) < 0:
        return np.argsort(2.0 * slots + distance, kind="stable").astype(np.int64)
    steps = np.asarray(distance * ((1 << distance_bits) - 1), dtype=np.int64)
    packed = (slots.astype(np.int64) << (distance_bits + position_bits)) | (
        steps << position_bits
    )
    packed |= np.arange(len(slots), dtype=np.int64)
    packed.sort()
    return np.asarray(packed & ((1 << position_bits) - 1), dtype=np.int64)


def dense_top(scores: FloatArray, m: int) -> tuple[IntArray, FloatArray]:
    """Return the columns and values of each row's m best finite scores.

    Rows with fewer finite scores are padded with column -1 and -inf.
    """
    rows, columns = scores.shape
    m = min(m, columns)
    if m == 0 or rows == 0:
        return np.zeros((rows, 0), np.int64), np.zeros((rows, 0))
    if m < columns:
        part = np.argpartition(-scores, m - 1, axis=1)[:, :m]
    else:
        part = np.tile(np.arange(columns), (rows, 1))
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    items = np.take_along_axis(part, order, axis=1).astype(np.int64)
    values = np.take_along_axis(values, order, axis=1)
    items[~np.isfinite(values)] = -1
    return items, values


@dataclass(frozen=True)
class Ranked:
    """Flat candidates of a batch, ordered by slot then by score."""

    slot: IntArray
    item: IntArray
    score: FloatArray
    reason: SmallArray
    evidence: IntArray
    source: SmallArray

    def __len__(self) -> int:
        return len(self.slot)

    @classmethod
    def empty(cls) -> Ranked:
        """Return a batch without any candidate."""
        ints = np.zeros(0, dtype=np.int64)
        small = np.zeros(0, dtype=np.int16)
        return cls(ints, ints, np.zeros(0), small, ints, small)

    @classmethod
    def build(
        cls,
        slot: IntArray,
        item: IntArray,
        score: FloatArray,
        reason: int | SmallArray,
        *,
        evidence: IntArray | None = None,
        source: int = 0,
    ) -> Ranked:
        """Build from unordered entries, dropping invalid items, best first."""
        slot = np.asarray(slot, dtype=np.int64).ravel()
        item = np.asarray(item, dtype=np.int64).ravel()
        score = np.asarray(score, dtype=np.float64).ravel()
        size = len(slot)
        reasons = np.broadcast_to(np.asarray(reason, dtype=np.int16), (size,)).ravel()
        evidence = (
            np.full(size, -1, dtype=np.int64)
            if evidence is None
            else np.asarray(evidence, dtype=np.int64).ravel()
        )
        keep = (item >= 0) & np.isfinite(score)
        if not keep.all():
            slot, item, score = slot[keep], item[keep], score[keep]
            reasons, evidence = reasons[keep], evidence[keep]
        order = slot_score_order(slot, score)
        return cls(
            slot[order],
            item[order],
            score[order],
            np.ascontiguousarray(reasons[order]),
            evidence[order],
            np.full(len(order), source, dtype=np.int16),
        )

    @classmethod
    def presorted(
        cls,
        slot: IntArray,
        item: IntArray,
        score: FloatArray,
        reason: int | SmallArray,
        *,
        source: int = 0,
    ) -> Ranked:
        """Build from entries already ranked by slot then score; drop invalid ones."""
        slot = np.asarray(slot, dtype=np.int64).ravel()
        item = np.asarray(item, dtype=np.int64).ravel()
        score = np.asarray(score, dtype=np.float64).ravel()
        keep = (item >= 0) & np.isfinite(score)
        reasons = np.broadcast_to(np.asarray(reason, dtype=np.int16), slot.shape)
        count = int(keep.sum())
        return cls(
            slot[keep],
            item[keep],
            score[keep],
            np.ascontiguousarray(reasons.ravel()[keep]),
            np.full(count, -1, dtype=np.int64),
            np.full(count, source, dtype=np.int16),
        )

    @classmethod
    def from_dense(
        cls,
        slots: IntArray,
        items: IntArray,
        scores: FloatArray,
        reason: int | SmallArray,
        *,
        evidence: IntArray | None = None,
        source: int = 0,
    ) -> Ranked:
        """Build from per-slot 2-D arrays (one row per slot in ``slots``)."""
        width = items.shape[1] if items.ndim == 2 else 0
        repeated = np.repeat(np.asarray(slots, dtype=np.int64), width)
        reasons: int | SmallArray = (
            reason if isinstance(reason, int) else np.asarray(reason).ravel()
        )
        sorted_rows = width < 2 or bool(np.all(scores[:, :-1] >= scores[:, 1:]))
        if sorted_rows and evidence is None and bool(np.all(np.diff(slots) >= 0)):
            return cls.presorted(repeated, items, scores, reasons, source=source)
        return cls.build(
            repeated, items, scores, reasons, evidence=evidence, source=source
        )

    def take(self, positions: IntArray | BoolArray) -> Ranked:
        """Return the entries at the given positions (or mask), in that order."""
        return Ranked(
            self.slot[positions],
            self.item[positions],
            self.score[positions],
            self.reason[positions],
            self.evidence[positions],
            self.source[positions],
        )

    def with_source(self, source: int) -> Ranked:
        """Return the same entries credited to another strategy number."""
        return replace(self, source=np.full(len(self), source, dtype=np.int16))

    def resorted(self) -> Ranked:
        """Return the entries ordered by slot, then by score from best to worst."""
        return self.take(slot_score_order(self.slot, self.score))

    def top(self, m: int) -> Ranked:
        """Return each slot's m best entries (entries are kept in ranked order)."""
        return self.take(rank_in_group(self.slot) < m)

    def counts(self, slots: int) -> IntArray:
        """Return how many entries each of the first ``slots`` slots holds."""
        return np.bincount(self.slot, minlength=slots)[:slots].astype(np.int64)

    @staticmethod
    def join(parts: list[Ranked]) -> Ranked:
        """Put several sets of entries end to end, without re-ranking them."""
        parts = [part for part in parts if len(part)]
        if not parts:
            return Ranked.empty()
        if len(parts) == 1:
            return parts[0]
        return Ranked(
            np.concatenate([p.slot for p in parts]),
            np.concatenate([p.item for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.reason for p in parts]),
            np.concatenate([p.evidence for p in parts]),
            np.concatenate([p.source for p in parts]),
        )

    @staticmethod
    def concat(parts: list[Ranked]) -> Ranked:
        """Join several sets of entries and re-rank them."""
        return Ranked.join(parts).resorted()

    def unique(self) -> Ranked:
        """Keep the best entry of each (slot, item) pair, in ranked order."""
        if not len(self):
            return self
        keys = self.slot * (int(self.item.max()) + 1) + self.item
        order = stable_order(keys)
        ordered = keys[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        return self.take(np.sort(order[first]))
