"""The shared send flow: screening, chunks, retries, splitting, the limiter."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from nudge.delivery import (
    Accepted,
    Adapter,
    EspError,
    Outgoing,
    Rate,
    Rejected,
    RetryPolicy,
    UnsupportedFeature,
    Window,
)
from nudge.delivery.base import CampaignSend, Outcome
from nudge.delivery.limits import ANY, LIMITS, Limiter

from .conftest import FakeClock, MessageFactory

Script = Callable[[Sequence[Outgoing]], Mapping[str, Outcome]]


class Scripted(Adapter):
    """An adapter whose ESP is a list of answers, one per request."""

    name = "scripted"
    batch_size = 4

    def __init__(self, *answers: Script | EspError, **options: Any) -> None:
        options.setdefault("limiter", Limiter({}))
        super().__init__(**options)
        self.answers = list(answers)
        self.requests: list[list[str]] = []

    def send(self, chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        return self.call("send", self._answer, chunk)

    def _answer(self, chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        self.requests.append([m.send_id for m in chunk])
        answer = self.answers.pop(0) if self.answers else accept
        if isinstance(answer, EspError):
            raise answer
        return answer(chunk)


def accept(chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
    return {m.send_id: Accepted(f"esp-{m.send_id}") for m in chunk}


def fail(status: int, **options: Any) -> EspError:
    return EspError.from_status("scripted", status, f"status {status}", **options)


def test_batches_are_cut_into_the_adapters_chunks(messages: MessageFactory) -> None:
    adapter = Scripted()
    results = adapter.deliver(messages("outbox", 10))

    assert [len(r) for r in adapter.requests] == [4, 4, 2]
    assert all(r.ok and r.esp_id == f"esp-{r.send_id}" for r in results)


def test_retry_after_is_waited_exactly(messages: MessageFactory) -> None:
    sleeps: list[float] = []
    adapter = Scripted(fail(429, retry_after=7), sleep=sleeps.append)
    results = adapter.deliver(messages("outbox", 2))

    assert sleeps == [7] and all(r.ok and r.attempts == 2 for r in results)


def test_a_retry_after_past_the_policy_fails_now_for_a_later_run(
    messages: MessageFactory,
) -> None:
    sleeps: list[float] = []
    adapter = Scripted(
        fail(429, retry_after=600), sleep=sleeps.append, retry=RetryPolicy()
    )
    results = adapter.deliver(messages("outbox", 2))

    assert sleeps == [] and all(not r.ok and not r.permanent for r in results)


def test_5xx_backoff_doubles_with_bounded_jitter(messages: MessageFactory) -> None:
    sleeps: list[float] = []
    adapter = Scripted(
        fail(500),
        fail(502),
        fail(503),
        sleep=sleeps.append,
        rng=random.Random(1),
        retry=RetryPolicy(initial=1, jitter=0.5, max_wait=3),
    )
    results = adapter.deliver(messages("outbox", 1))

    assert results[0].ok and results[0].attempts == 4
    for slept, base in zip(sleeps, (1, 2, 3), strict=True):
        assert base <= slept < base + 0.5


def test_attempts_run_out_as_a_transient_failure(messages: MessageFactory) -> None:
    adapter = Scripted(
        *[fail(503)] * 9, retry=RetryPolicy(attempts=3), sleep=lambda s: None
    )
    results = adapter.deliver(messages("outbox", 2))

    assert all(r.status == "failed" and not r.permanent for r in results)
    assert (
        results[0].attempts == 3 and results[0].error == "scripted HTTP 503: status 503"
    )


@pytest.mark.parametrize("status", [401, 403, 404])
def test_permanent_request_errors_are_not_retried(
    status: int, messages: MessageFactory
) -> None:
    adapter = Scripted(fail(status))
    results = adapter.deliver(messages("outbox", 3))

    assert len(adapter.requests) == 1
    assert all(r.permanent and f"HTTP {status}" in (r.error or "") for r in results)


def test_a_payload_error_is_split_until_the_bad_message_is_alone(
    messages: MessageFactory,
) -> None:
    batch = messages("outbox", 4)
    bad = batch[2].send_id

    def refuse_bad(chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        if any(m.send_id == bad for m in chunk):
            raise fail(422)
        return accept(chunk)

    adapter = Scripted(*[refuse_bad] * 5)
    results = adapter.deliver(batch)

    assert [r.ok for r in results] == [True, True, False, True]
    assert results[2].permanent and "422" in (results[2].error or "")
    assert adapter.requests == [
        [m.send_id for m in batch],
        [m.send_id for m in batch[:2]],
        [m.send_id for m in batch[2:]],
        [bad],
        [batch[3].send_id],
    ]


def test_messages_left_unsettled_go_again_without_the_refused(
    messages: MessageFactory,
) -> None:
    batch = messages("outbox", 3)

    def refuse_first(chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        return {chunk[0].send_id: Rejected("bad address")}

    adapter = Scripted(refuse_first)
    results = adapter.deliver(batch)

    assert [r.status for r in results] == ["failed", "accepted", "accepted"]
    assert results[0].error == "scripted: bad address"
    assert results[1].attempts == 2
    assert adapter.requests[1] == [batch[1].send_id, batch[2].send_id]


def test_an_esp_that_never_answers_for_a_message_is_not_asked_forever(
    messages: MessageFactory,
) -> None:
    adapter = Scripted(*[lambda chunk: {}] * 10, retry=RetryPolicy(max_resends=2))
    [result] = adapter.deliver(messages("outbox", 1))

    assert result.status == "failed" and "gave no answer" in (result.error or "")
    assert len(adapter.requests) == 3


def test_campaign_sends_are_loud_where_an_esp_has_none() -> None:
    adapter = Scripted()
    campaign = CampaignSend("run1", "winback", "a", "<p>", "subject")

    assert adapter.send_campaigns([campaign]) == []
    with pytest.raises(UnsupportedFeature, match="scripted does not support"):
        adapter.send_campaign(campaign)


# ----------------------------------------------------------------- limiter


def test_the_limiter_keeps_each_window(clock: FakeClock) -> None:
    limiter = Limiter(
        {"bulk": Rate((Window(10, 1.0), Window(150, 60.0)))},
        clock=clock,
        sleep=clock.sleep,
        margin=0.0,
    )
    starts = []
    for _ in range(160):
        limiter.acquire("bulk")
        starts.append(clock.now)

    for n, start in enumerate(starts):
        assert sum(1 for s in starts[: n + 1] if s > start - 1.0) <= 10
        assert sum(1 for s in starts[: n + 1] if s > start - 60.0) <= 150
    assert starts[149] - starts[0] < 15  # the burst is used, not wasted
    assert starts[150] - starts[0] >= 60


def test_endpoints_have_separate_windows_and_unknown_ones_none(
    clock: FakeClock,
) -> None:
    limiter = Limiter(LIMITS["klaviyo"], clock=clock, sleep=clock.sleep)
    for _ in range(10):
        limiter.acquire("event-bulk-create-jobs")
    assert limiter.delay("event-bulk-create-jobs") > 0.9
    assert limiter.delay("templates") == 0
    assert limiter.acquire("not-an-endpoint") == 0


def test_the_concurrency_cap_is_a_semaphore() -> None:
    limiter = Limiter({ANY: Rate(concurrency=2)})
    with limiter.slot("a"), limiter.slot("b"):
        semaphore = limiter._slots[ANY]
        assert not semaphore.acquire(blocking=False)
    assert semaphore.acquire(blocking=False)
