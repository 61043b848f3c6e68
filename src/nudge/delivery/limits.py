"""Each ESP's documented rate limits, and a limiter that keeps a client under them.

Klaviyo states its limits as windows ("burst 10/s, steady 150/m": at most 10
requests in any second and 150 in any minute, per endpoint); Mailchimp caps
concurrent connections at 10. A token bucket sized to the steady rate either
wastes the burst or exceeds a window at the start of a run, so the limiter keeps
the send times of the last requests of each endpoint and waits until every window
has room: the exact shape of the documented limits, with a small margin for the
time a request takes to reach the ESP.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], None]

ANY = "*"


@dataclass(frozen=True, slots=True)
class Window:
    """At most `limit` requests in any `seconds` long stretch of time."""

    limit: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Rate:
    """The documented limits of one endpoint (or of every endpoint, as `*`)."""

    windows: tuple[Window, ...] = ()
    concurrency: int | None = None


def burst_steady(burst_per_s: int, steady_per_min: int) -> Rate:
    """Return Klaviyo's usual pair of limits: a one-second and a one-minute window."""
    return Rate((Window(burst_per_s, 1.0), Window(steady_per_min, 60.0)))


# Klaviyo: per account and endpoint, from each endpoint's reference page (and the
# OpenAPI spec's descriptions). Mailchimp: 10 simultaneous connections per key.
LIMITS: dict[str, dict[str, Rate]] = {
    "klaviyo": {
        "event-bulk-create-jobs": burst_steady(10, 150),
        "events": burst_steady(350, 3_500),
        "profile-subscription-bulk-create-jobs": burst_steady(75, 750),
        "templates": burst_steady(75, 750),
        "metrics": burst_steady(10, 150),
    },
    "mailchimp": {ANY: Rate(concurrency=10)},
    "smtp": {},
    "outbox": {},
}


class Limiter:
    """Keep requests to one ESP inside its rate windows and connection cap.

    `acquire(endpoint)` waits until a request may start; `slot(endpoint)` holds
    one of the endpoint's concurrent connections. Thread-safe; one limiter is
    shared by every adapter of an ESP in a process (see `shared`).
    """

    def __init__(
        self,
        rates: Mapping[str, Rate],
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        margin: float = 0.05,
    ) -> None:
        self.rates = dict(rates)
        self.clock = clock
        self.sleep = sleep
        self.margin = margin
        self.waited = 0.0
        self._lock = threading.Lock()
        self._sent: dict[str, deque[float]] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def rate(self, endpoint: str) -> Rate:
        """Return the limits that apply to an endpoint."""
        return self.rates.get(endpoint) or self.rates.get(ANY) or Rate()

    def delay(self, endpoint: str) -> float:
        """Return how long a request to the endpoint would have to wait now."""
        with self._lock:
            return self._delay(endpoint, self.rate(endpoint), self.clock())

    def _delay(self, endpoint: str, rate: Rate, now: float) -> float:
        sent = self._sent.get(endpoint)
        if not sent:
            return 0.0
        wait = 0.0
        for window in rate.windows:
            # The request `limit` places back must have left the window.
            if len(sent) >= window.limit:
                ready = sent[-window.limit] + window.seconds + self.margin
                wait = max(wait, ready - now)
        return wait

    def acquire(self, endpoint: str) -> float:
        """Wait until a request to the endpoint fits every window; return the wait."""
        rate = self.rate(endpoint)
        if not rate.windows:
            return 0.0
        longest = max(w.limit for w in rate.windows)
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                wait = self._delay(endpoint, rate, now)
                if wait <= 0:
                    sent = self._sent.get(endpoint)
                    if sent is None:
                        sent = self._sent[endpoint] = deque(maxlen=longest)
                    sent.append(now)
                    self.waited += waited
                    return waited
            self.sleep(wait)
            waited += wait

    def record(self, endpoint: str, when: float) -> None:
        """Count a request made at `when` (by another process, or before a restart)."""
        rate = self.rate(endpoint)
        if not rate.windows:
            return
        with self._lock:
            sent = self._sent.get(endpoint)
            if sent is None:
                longest = max(w.limit for w in rate.windows)
                sent = self._sent[endpoint] = deque(maxlen=longest)
            sent.append(when)

    @contextmanager
    def slot(self, endpoint: str = ANY) -> Iterator[None]:
        """Hold one of the ESP's concurrent connections while the block runs."""
        rate = self.rate(endpoint)
        if rate.concurrency is None:
            yield
            return
        key = endpoint if endpoint in self.rates else ANY
        with self._lock:
            semaphore = self._slots.get(key)
            if semaphore is None:
                semaphore = self._slots[key] = threading.BoundedSemaphore(
                    rate.concurrency
                )
        with semaphore:
            yield


_SHARED: dict[str, Limiter] = {}
_SHARED_LOCK = threading.Lock()


def shared(esp: str) -> Limiter:
    """Return the process-wide limiter of an ESP, made on first use."""
    with _SHARED_LOCK:
        limiter = _SHARED.get(esp)
        if limiter is None:
            limiter = _SHARED[esp] = Limiter(LIMITS.get(esp, {}))
        return limiter
