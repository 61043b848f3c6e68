"""The one engagement event every ESP's payload becomes, and what a pull counts.

An ESP module turns each payload into an `Engagement` (or a counted reason to
skip it); `nudge.feedback.store.save` links it to its ledger row, stores it
once and applies suppressions. A `PullReport` collects the counts of a pull,
a webhook or a tracked link.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nudge.errors import NudgeError
from nudge.store.feedback_models import (
    BOUNCE_HARD,
    BOUNCE_SOFT,
    CLICK,
    EVENT_KINDS,
    OPEN,
    RECEIVED,
    SPAM_COMPLAINT,
    SUPPRESSING,
    TRIGGERED,
    UNKNOWN,
    UNSUBSCRIBE,
)

__all__ = [
    "BOUNCE_HARD",
    "BOUNCE_SOFT",
    "CLICK",
    "EVENT_KINDS",
    "OPEN",
    "RECEIVED",
    "SPAM_COMPLAINT",
    "SUPPRESSING",
    "TRIGGERED",
    "UNKNOWN",
    "UNSUBSCRIBE",
    "Engagement",
    "FeedbackError",
    "PullReport",
    "digest",
    "parse_time",
    "send_key_in_url",
    "utc_naive",
    "utcnow",
]


class FeedbackError(NudgeError):
    """Feedback could not be read, or a tracked link could not be recorded."""


@dataclass(slots=True)
class Engagement:
    """One engagement event, normalized, before it is linked and stored.

    ``send_key`` is the send id found in the payload or a link; ``esp_job_id``
    and ``esp_profile_id`` are the ESP's ids (a Mailchimp campaign and member)
    used when there is none; ``customer_ref`` is the shop's customer id the
    ESP carries (Klaviyo's ``external_id``, which nudge sets to it as the
    shop's own integration does), trusted only without an e-mail address.
    """

    esp: str
    kind: str
    esp_event_id: str
    occurred_at: datetime
    raw: dict[str, Any]
    send_key: str | None = None
    esp_job_id: str | None = None
    esp_profile_id: str | None = None
    customer_ref: str | None = None
    email: str | None = None
    url: str | None = None
    machine_open: bool = False
    # May this event be linked to the customer's latest earlier send of the
    # same ESP when nothing else names its send (Klaviyo flow e-mails)?
    nearest: bool = False


@dataclass
class PullReport:
    """What a pull (or a webhook, or a tracked link) read, stored and skipped."""

    esps: list[str] = field(default_factory=list)
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    # Stored with a caveat: unknown_send, unknown_customer, future_time, ...
    flagged: Counter[str] = field(default_factory=Counter)
    linked: int = 0
    unlinked: int = 0
    linked_by: Counter[str] = field(default_factory=Counter)
    machine_opens: int = 0
    suppressed: int = 0
    streams: dict[str, int] = field(default_factory=dict)
    missing_metrics: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """Tell whether every ESP and stream was read without failing."""
        return not self.failures

    @property
    def total_stored(self) -> int:
        """Return how many new events were stored."""
        return sum(self.stored.values())

    def skip(self, reason: str, count: int = 1) -> None:
        """Count payloads left out for a reason."""
        self.skipped[reason] += count

    def read(self, stream: str, count: int) -> None:
        """Count the payloads read from a stream."""
        self.streams[stream] = self.streams.get(stream, 0) + count

    def as_json(self) -> dict[str, Any]:
        """Return the report as plain JSON-ready data."""
        return {
            "esps": list(self.esps),
            "stored": {kind: self.stored.get(kind, 0) for kind in EVENT_KINDS},
            "total_stored": self.total_stored,
            "duplicates": self.duplicates,
            "skipped": dict(self.skipped),
            "flagged": dict(self.flagged),
            "linked": self.linked,
            "unlinked": self.unlinked,
            "linked_by": dict(self.linked_by),
            "machine_opens": self.machine_opens,
            "suppressed": self.suppressed,
            "streams": dict(self.streams),
            "missing_metrics": list(self.missing_metrics),
            "failures": dict(self.failures),
            "notes": list(self.notes),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "ok": self.ok,
        }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def utcnow() -> datetime:
    """Return the current time as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def utc_naive(when: datetime) -> datetime:
    """Return a time as naive UTC, the store's convention (naive means UTC)."""
    if when.tzinfo is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)


def parse_time(value: Any) -> datetime:
    """Parse an ISO 8601 text or a Unix time into naive UTC; raise ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a time: {value!r}")
    return utc_naive(datetime.fromisoformat(value.strip()))


def digest(*parts: object) -> str:
    """Return a stable event id for an ESP that gives none: a hash of its fields."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def send_key_in_url(url: Any) -> str | None:
    """Return the send id (``nudge_sid``) a tagged link carries, or None."""
    if not isinstance(url, str) or "nudge_sid" not in url:
        return None
    try:
        values = parse_qs(urlsplit(url).query).get("nudge_sid")
    except ValueError:
        return None
    return values[0] if values and values[0] else None
