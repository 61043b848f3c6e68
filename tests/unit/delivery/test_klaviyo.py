"""Klaviyo through the real SDK against the local double: contract, faults, spec."""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import pytest
from pydantic import SecretStr

from nudge.delivery import Adapter, ItemData, Outgoing, RetryPolicy
from nudge.delivery.doubles import ApiSpec, KlaviyoDouble
from nudge.delivery.esp.klaviyo import KlaviyoAdapter
from nudge.delivery.limits import LIMITS, Limiter
from nudge.render import Renderer, ShopInfo
from nudge.render.model import Esp
from nudge.settings import Settings

from .conftest import KLAVIYO_SPEC, FakeClock, MessageFactory, needs_spec
from .contract import AdapterContract

EVENTS = "POST /api/event-bulk-create-jobs"


def adapter_for(double: KlaviyoDouble, **options: Any) -> KlaviyoAdapter:
    """Return an adapter pointed at the double, sleeping without waiting."""
    options.setdefault("limiter", Limiter(LIMITS["klaviyo"]))
    options.setdefault("sleep", lambda seconds: None)
    options.setdefault("timeout", 2.0)
    return KlaviyoAdapter(double.api_key, base_url=double.url, **options)


class KlaviyoBackend:
    esp: Esp = "klaviyo"

    def __init__(self, double: KlaviyoDouble) -> None:
        self.double = double

    def adapter(self, **options: Any) -> Adapter:
        return adapter_for(self.double, **options)

    def held(self) -> list[str]:
        return [str(event.unique_id) for event in self.double.event_log]

    def refuse(self, message: Outgoing) -> Outgoing:
        self.double.reject_address(message.email)
        return message

    def oversize(self, message: Outgoing) -> Outgoing:
        item = dataclasses.replace(message.items[0], reason="y" * 120_000)
        return dataclasses.replace(message, items=(item, *message.items[1:]))

    def settings(self, base: Settings) -> tuple[Settings, dict[str, Any]]:
        configured = base.model_copy(
            update={
                "klaviyo_base_url": self.double.url,
                "klaviyo_api_key": SecretStr(self.double.api_key),
            }
        )
        return configured, {"sleep": lambda seconds: None}


class TestKlaviyoContract(AdapterContract):
    @pytest.fixture
    def backend(self, klaviyo: KlaviyoDouble) -> KlaviyoBackend:
        return KlaviyoBackend(klaviyo)


def test_an_event_carries_what_the_template_reads(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    [message] = messages("klaviyo", 1)
    adapter_for(klaviyo, metric="Nudge Test").deliver([message])

    [event] = klaviyo.event_log
    assert event.metric == "Nudge Test" and event.unique_id == message.send_id
    assert event.profile == {
        "email": message.email,
        "external_id": message.customer_id,
        "first_name": "Ada",
    }
    properties = event.properties
    assert properties["subject"] == message.message.subject
    assert properties["send_id"] == message.send_id
    first = properties["items"][0]
    assert first["url"].startswith("https://demo-shop.example/")
    assert "nudge_sid=" + message.send_id in first["url"]
    assert isinstance(first["price"], float) and first["price_display"] == "£12.50"
    assert properties["offer"]["code"] == "WELCOME10"
    assert event.time is not None and event.time.endswith("+00:00")


def test_consent_is_pushed_with_when_it_was_given(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    batch = messages("klaviyo", 3, push_consent=True)
    batch[2] = dataclasses.replace(batch[2], push_consent=False)
    adapter_for(klaviyo, list_id="LIST1").deliver(batch)

    assert set(klaviyo.subscriptions) == {batch[0].email, batch[1].email}
    marketing = klaviyo.subscriptions[batch[0].email]["email"]["marketing"]
    assert marketing["consent"] == "SUBSCRIBED"
    assert marketing["consented_at"] == "2025-06-01T12:00:00+00:00"
    [job] = klaviyo.recorded("POST", "subscription")
    assert job.json()["data"]["relationships"]["list"]["data"]["id"] == "LIST1"


def test_a_refused_address_in_the_subscription_fails_alone(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    batch = messages("klaviyo", 3, push_consent=True)
    klaviyo.reject_address(batch[1].email, "This address is suppressed")
    results = adapter_for(klaviyo).deliver(batch)

    assert [r.ok for r in results] == [True, False, True]
    assert "This address is suppressed" in (results[1].error or "")
    assert len(klaviyo.event_log) == 2


def test_429_waits_for_retry_after(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    klaviyo.fail(
        EVENTS,
        status=429,
        headers={"Retry-After": "3"},
        body={
            "errors": [{"id": "x", "code": "throttled", "title": "t", "detail": "d"}]
        },
    )
    sleeps: list[float] = []
    results = adapter_for(klaviyo, sleep=sleeps.append).deliver(messages("klaviyo", 3))

    assert all(r.ok and r.attempts == 2 for r in results)
    assert sleeps == [3.0]
    assert len(klaviyo.event_log) == 3


def test_5xx_backs_off_exponentially_with_jitter(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    klaviyo.fail(EVENTS, status=503, times=3, body={"errors": []})
    sleeps: list[float] = []
    adapter = adapter_for(
        klaviyo,
        sleep=sleeps.append,
        rng=random.Random(7),
        retry=RetryPolicy(initial=0.5, jitter=0.25),
    )
    results = adapter.deliver(messages("klaviyo", 2))

    assert all(r.ok and r.attempts == 4 for r in results)
    assert [round(s - s % 0.25, 2) for s in sleeps] == [0.5, 1.0, 2.0]
    assert all(
        0 <= s - base < 0.25 for s, base in zip(sleeps, (0.5, 1, 2), strict=True)
    )


def test_a_timeout_is_retried_and_klaviyo_keeps_one_event(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    # The first request is answered too late but still processed, as a real
    # server may: the retry's events carry the same unique ids.
    klaviyo.fail(EVENTS, delay=1.0)
    batch = messages("klaviyo", 4)
    results = adapter_for(klaviyo, timeout=0.3).deliver(batch)

    deadline = time.monotonic() + 5
    while klaviyo.duplicates < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(r.ok and r.attempts == 2 for r in results)
    assert sorted(klaviyo.accepted_ids()) == [m.send_id for m in batch]
    assert klaviyo.duplicates == 4


def test_a_retried_batch_never_makes_a_second_event(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    batch = messages("klaviyo", 5)
    adapter_for(klaviyo).deliver(batch)
    adapter_for(klaviyo).deliver(batch)

    assert len(klaviyo.event_log) == 5 and klaviyo.duplicates == 5
    assert len(klaviyo.recorded("POST", "event-bulk")) == 2


def test_garbage_answers_are_retried_then_fail_readably(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    klaviyo.fail(EVENTS, garbage=True, status=502, times=10)
    results = adapter_for(klaviyo, retry=RetryPolicy(attempts=3)).deliver(
        messages("klaviyo", 2)
    )

    assert all(r.status == "failed" and not r.permanent for r in results)
    assert results[0].attempts == 3
    assert "klaviyo HTTP 502" in (results[0].error or "")
    assert "not JSON:API" in (results[0].error or "")


def test_an_expired_key_fails_every_message_without_retrying(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    adapter = adapter_for(klaviyo)
    klaviyo.revoke_key()
    results = adapter.deliver(messages("klaviyo", 3))

    assert all(r.status == "failed" and r.permanent for r in results)
    assert "klaviyo HTTP 401: the API key was refused" in (results[0].error or "")
    assert len(klaviyo.requests) == 1


def test_a_400_without_pointers_is_split_to_find_the_culprit(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    klaviyo.fail(
        EVENTS,
        status=400,
        body={"errors": [{"id": "x", "code": "invalid", "title": "t", "detail": "?"}]},
    )
    results = adapter_for(klaviyo).deliver(messages("klaviyo", 4))

    assert all(r.ok for r in results)
    assert [
        len(r.json()["data"]["attributes"]["events-bulk-create"]["data"])
        for r in klaviyo.recorded("POST", "event-bulk")
    ] == [4, 2, 2]


def test_the_limiter_keeps_under_klaviyos_windows(
    messages: MessageFactory, clock: FakeClock
) -> None:
    batch = messages("klaviyo", 12)
    with KlaviyoDouble(enforce_limits=True, clock=clock) as double:
        assert isinstance(double, KlaviyoDouble)
        limiter = Limiter(LIMITS["klaviyo"], clock=clock, sleep=clock.sleep)
        adapter = adapter_for(double, limiter=limiter, sleep=clock.sleep, batch_size=1)
        results = adapter.deliver(batch)

    assert all(r.ok for r in results)
    assert double.throttled == 0
    assert limiter.waited >= 0.2  # the 11th and 12th request waited for the window


def test_without_a_limiter_429s_are_honoured(
    messages: MessageFactory, clock: FakeClock
) -> None:
    batch = messages("klaviyo", 12)
    with KlaviyoDouble(enforce_limits=True, clock=clock) as double:
        assert isinstance(double, KlaviyoDouble)
        adapter = adapter_for(
            double, limiter=Limiter({}), sleep=clock.sleep, batch_size=1
        )
        results = adapter.deliver(batch)

    assert all(r.ok for r in results)
    assert double.throttled >= 1
    assert 1.0 in clock.sleeps  # Retry-After: 1
    assert sorted(double.accepted_ids()) == [m.send_id for m in batch]


def test_oversized_requests_are_split_under_5_mb(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    [message] = messages("klaviyo", 1)
    item = dataclasses.replace(message.items[0], reason="r" * 90_000)
    big = dataclasses.replace(message, items=(item,) * 6)
    batch = [dataclasses.replace(big, send_id=f"big{n}") for n in range(12)]
    results = adapter_for(klaviyo).deliver(batch)

    assert all(r.ok for r in results)
    sizes = [len(r.body) for r in klaviyo.recorded("POST", "event-bulk")]
    assert len(sizes) >= 2 and max(sizes) < 5 * 1024 * 1024
    assert sum(sizes) > 5 * 1024 * 1024  # one request would have been too big


def test_templates_are_created_then_updated_and_metrics_paged(
    klaviyo: KlaviyoDouble, renderer: Renderer
) -> None:
    from nudge.delivery.setup import setup_klaviyo

    for n in range(23):
        klaviyo.metrics[f"Other metric {n}"] = f"M{n}"
    klaviyo.metrics["Nudge Recommendation"] = "MNUDGE"
    shop = ShopInfo("Demo Shop", "https://demo-shop.example", "1 Example Street")
    adapter = adapter_for(klaviyo)

    first = setup_klaviyo(adapter, renderer, shop, [("winback", "a"), ("winback", "b")])
    second = setup_klaviyo(adapter, renderer, shop, [("winback", "a")])

    assert len(first.created) == 2 and not first.updated
    assert len(second.updated) == 1 and not second.created
    assert len(klaviyo.templates) == 2
    html = next(iter(klaviyo.templates.values()))["html"]
    assert "{% for item in event.items %}" in html and "{{ item.title }}" in html
    assert "{% unsubscribe_url %}" in html
    assert any("Metric" in step for step in first.steps)
    assert len(klaviyo.recorded("GET", "/api/metrics")) == 6  # 3 pages, twice


@needs_spec(KLAVIYO_SPEC)
def test_every_request_body_fits_klaviyos_openapi_spec(
    klaviyo: KlaviyoDouble, messages: MessageFactory, renderer: Renderer
) -> None:
    from nudge.delivery.setup import setup_klaviyo

    batch = messages("klaviyo", 4, push_consent=True)
    no_offer = dataclasses.replace(batch[1], offer=None, first_name=None, items=())
    adapter = adapter_for(klaviyo, list_id="LIST1")
    adapter.deliver([batch[0], no_offer, *batch[2:]])
    shop = ShopInfo("Demo Shop", "https://demo-shop.example", "1 Example Street")
    setup_klaviyo(adapter, renderer, shop, [("winback", "a")])
    setup_klaviyo(adapter, renderer, shop, [("winback", "a")])

    spec = ApiSpec(KLAVIYO_SPEC)
    sent = [(r.method, r.path, r.json()) for r in klaviyo.requests]
    assert {m for m, _, _ in sent} == {"POST", "GET", "PATCH"}
    assert spec.check_all(sent) == []


@needs_spec(KLAVIYO_SPEC)
def test_the_klaviyo_check_honours_nullable_and_catches_mistakes(
    klaviyo: KlaviyoDouble, messages: MessageFactory
) -> None:
    adapter_for(klaviyo).deliver(messages("klaviyo", 1))
    [request] = klaviyo.recorded("POST", "event-bulk")
    body = request.json()
    event = body["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]
    spec = ApiSpec(KLAVIYO_SPEC)
    path = "/api/event-bulk-create-jobs"

    event["events"]["data"][0]["attributes"]["time"] = None  # nullable: fine
    assert spec.problems("POST", path, body) == []
    event["events"]["data"][0]["attributes"]["time"] = 5
    del event["events"]["data"][0]["attributes"]["metric"]
    found = {p.message for p in spec.problems("POST", path, body)}
    assert found == {"5 is not of type 'string'", "'metric' is a required property"}


def test_prices_reach_klaviyo_as_plain_floats(messages: MessageFactory) -> None:
    [message] = messages("klaviyo", 1)
    assert all(
        isinstance(i, ItemData) and type(i.price) is float for i in message.items
    )
