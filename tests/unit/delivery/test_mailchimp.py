"""Mailchimp through the real SDK against the local double: contract, faults, spec."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from nudge.delivery import Adapter, CampaignSend, Outgoing, RetryPolicy
from nudge.delivery.doubles import MAILCHIMP_FALSE_ALARMS, ApiSpec, MailchimpDouble
from nudge.delivery.esp.mailchimp import MailchimpAdapter, merge_field_specs
from nudge.delivery.limits import LIMITS, Limiter
from nudge.delivery.setup import esp_html, setup_mailchimp
from nudge.render import Renderer, ShopInfo
from nudge.render.model import Esp
from nudge.settings import Settings

from .conftest import MAILCHIMP_SPEC, MessageFactory, needs_spec
from .contract import AdapterContract

LIST = "a1b2c3d4e5"
SHOP = ShopInfo("Demo Shop", "https://demo-shop.example", "1 Example Street")


def adapter_for(double: MailchimpDouble, **options: Any) -> MailchimpAdapter:
    """Return an adapter pointed at the double, polling and sleeping at once."""
    options.setdefault("limiter", Limiter(LIMITS["mailchimp"]))
    options.setdefault("sleep", lambda seconds: None)
    options.setdefault("timeout", 2.0)
    options.setdefault("list_id", LIST)
    adapter = MailchimpAdapter(double.api_key, base_url=double.url, **options)
    adapter.ensure_merge_fields()
    return adapter


class MailchimpBackend:
    esp: Esp = "mailchimp"

    def __init__(self, double: MailchimpDouble) -> None:
        self.double = double

    def adapter(self, **options: Any) -> Adapter:
        return adapter_for(self.double, **options)

    def held(self) -> list[str]:
        members = self.double.members(LIST).values()
        return [str(m["merge_fields"]["SENDID"]) for m in members]

    def refuse(self, message: Outgoing) -> Outgoing:
        self.double.reject_address(message.email)
        return message

    def oversize(self, message: Outgoing) -> Outgoing:
        item = dataclasses.replace(message.items[0], title="t" * 300)
        return dataclasses.replace(message, items=(item, *message.items[1:]))

    def settings(self, base: Settings) -> tuple[Settings, dict[str, Any]]:
        configured = base.model_copy(
            update={
                "mailchimp_base_url": self.double.url,
                "mailchimp_api_key": SecretStr(self.double.api_key),
            }
        )
        adapter_for(self.double)  # the audience needs nudge's merge fields
        return configured, {"list_id": LIST, "sleep": lambda seconds: None}


class TestMailchimpContract(AdapterContract):
    @pytest.fixture
    def backend(self, mailchimp: MailchimpDouble) -> MailchimpBackend:
        return MailchimpBackend(mailchimp)


def campaign(renderer: Renderer, **changes: Any) -> CampaignSend:
    """Return the variant "a" campaign of run1 with the translated winback HTML."""
    html = esp_html(renderer, "winback", "a", "mailchimp", SHOP)
    return dataclasses.replace(
        CampaignSend("run1", "winback", "a", html, "", reply_to="shop@example.com"),
        **changes,
    )


def test_members_carry_the_products_and_the_run_tag(
    mailchimp: MailchimpDouble, messages: MessageFactory
) -> None:
    [message] = messages("mailchimp", 1)
    [result] = adapter_for(mailchimp).deliver([message])

    member = mailchimp.members(LIST)[str(result.esp_id)]
    assert member["status"] == "subscribed"
    assert member["tags"] == ["nudge-run1-a"]
    fields = member["merge_fields"]
    assert fields["SUBJECT"] == message.message.subject
    assert fields["P1_TITLE"] == message.items[0].title
    assert "nudge_sid=" in fields["P1_URL"] and fields["P1_PRICE"] == "£12.50"
    assert fields["P4_TITLE"] == ""  # three products: the fourth slot is cleared
    assert fields["OFFERCODE"] == "WELCOME10"
    ops = [o.operation_id for o in mailchimp.operations]
    assert ops == [f"{message.send_id}:member", f"{message.send_id}:tag"]


def test_an_unsubscribed_member_stays_unsubscribed(
    mailchimp: MailchimpDouble, messages: MessageFactory
) -> None:
    [message] = messages("mailchimp", 1)
    adapter = adapter_for(mailchimp)
    [result] = adapter.deliver([message])
    mailchimp.lists[LIST]["members"][result.esp_id]["status"] = "unsubscribed"
    adapter.deliver([dataclasses.replace(message, send_id="again")])

    assert mailchimp.members(LIST)[str(result.esp_id)]["status"] == "unsubscribed"


def test_one_campaign_per_variant_is_sent_once_after_a_status_check(
    mailchimp: MailchimpDouble, messages: MessageFactory, renderer: Renderer
) -> None:
    adapter = adapter_for(mailchimp)
    adapter.deliver(messages("mailchimp", 3))
    [sent] = adapter.send_campaigns([campaign(renderer)])
    [again] = adapter.send_campaigns([campaign(renderer)])

    assert sent.status == "sent" and again.status == "already_sent"
    assert sent.esp_id == again.esp_id and mailchimp.sends == [sent.esp_id]
    created = mailchimp.campaigns[str(sent.esp_id)]
    assert created["settings"]["subject_line"] == "*|SUBJECT|*"
    segment = created["recipients"]["segment_opts"]["saved_segment_id"]
    assert mailchimp.lists[LIST]["segments"][segment]["name"] == "nudge-run1-a"
    assert "*|P1_TITLE|*" in created["content"]["html"]
    # The status was read before every send; the second run only read it.
    gets = [r for r in mailchimp.recorded("GET") if r.path.endswith(str(sent.esp_id))]
    assert len(gets) == 2
    assert len(mailchimp.recorded("POST", "/actions/send")) == 1


def test_a_lost_create_answer_finds_the_campaign_instead_of_making_another(
    mailchimp: MailchimpDouble, messages: MessageFactory, renderer: Renderer
) -> None:
    adapter = adapter_for(mailchimp, timeout=0.3)
    adapter.deliver(messages("mailchimp", 2))
    mailchimp.fail("POST /3.0/campaigns$", delay=0.6)  # processed, answered too late
    [result] = adapter.send_campaigns([campaign(renderer)])

    assert result.status == "sent"
    assert len(mailchimp.campaigns) == 1


def test_a_scheduled_campaign_is_scheduled_not_sent(
    mailchimp: MailchimpDouble, messages: MessageFactory, renderer: Renderer
) -> None:
    adapter = adapter_for(mailchimp)
    adapter.deliver(messages("mailchimp", 2))
    when = datetime(2026, 5, 1, 9, 15, tzinfo=UTC)
    [result] = adapter.send_campaigns([campaign(renderer, schedule_at=when)])

    assert result.status == "scheduled" and mailchimp.sends == []
    assert mailchimp.campaigns[str(result.esp_id)]["status"] == "schedule"


def test_a_deleted_audience_fails_every_message_readably(
    mailchimp: MailchimpDouble, messages: MessageFactory
) -> None:
    during = adapter_for(mailchimp)
    during.deliver(messages("mailchimp", 1, prefix="before"))
    mailchimp.delete_list(LIST)
    later = MailchimpAdapter(
        mailchimp.api_key, list_id=LIST, base_url=mailchimp.url, sleep=lambda s: None
    )

    for adapter in (during, later):
        results = adapter.deliver(messages("mailchimp", 3))
        assert all(r.status == "failed" and r.permanent for r in results)
        assert "mailchimp HTTP 404: audience a1b2c3d4e5 not found" in (
            results[0].error or ""
        )


def test_an_expired_key_fails_every_message(
    mailchimp: MailchimpDouble, messages: MessageFactory
) -> None:
    adapter = adapter_for(mailchimp)
    mailchimp.revoke_key()
    results = MailchimpAdapter(
        "0123456789abcdef-us6", list_id=LIST, base_url=mailchimp.url
    ).deliver(messages("mailchimp", 2))

    assert adapter is not None
    assert all(r.status == "failed" and r.permanent for r in results)
    assert "HTTP 401: the API key was refused" in (results[0].error or "")


def test_an_empty_5xx_is_caught_and_retried(
    mailchimp: MailchimpDouble, messages: MessageFactory
) -> None:
    # The SDK returns a 5xx with an empty body instead of raising it.
    adapter = adapter_for(mailchimp)
    mailchimp.fail("POST /3.0/batches", status=503, body=None, times=2)
    results = adapter.deliver(messages("mailchimp", 2))

    assert all(r.ok and r.attempts == 3 for r in results)


def test_garbage_is_retried_then_fails_readably(
    mailchimp: MailchimpDouble, messages: MessageFactory
) -> None:
    adapter = adapter_for(mailchimp, retry=RetryPolicy(attempts=2))
    mailchimp.fail("POST /3.0/batches", garbage=True, times=5)
    results = adapter.deliver(messages("mailchimp", 2))

    assert all(r.status == "failed" and not r.permanent for r in results)
    assert "not JSON" in (results[0].error or "")


def test_a_batch_is_polled_until_finished(
    messages: MessageFactory,
) -> None:
    sleeps: list[float] = []
    with MailchimpDouble(polls_until_finished=3) as double:
        assert isinstance(double, MailchimpDouble)
        adapter = adapter_for(double, sleep=sleeps.append, poll_interval=0.5)
        results = adapter.deliver(messages("mailchimp", 2))

    assert all(r.ok for r in results)
    assert sleeps == [0.5, 0.5, 0.5]


def test_merge_fields_are_created_once_reading_every_page(
    mailchimp: MailchimpDouble,
) -> None:
    adapter = adapter_for(mailchimp, slots=6)  # creates them
    report = setup_mailchimp(adapter)

    assert report.created == []
    assert len(report.unchanged) == len(merge_field_specs(6)) == 36
    pages = mailchimp.recorded("GET", "/merge-fields$")
    assert [r.param("offset") for r in pages[-1:]] == ["0"]
    assert all(len(spec["tag"]) <= 10 for spec in merge_field_specs(6))


def test_merge_fields_are_paged(mailchimp: MailchimpDouble) -> None:
    for n in range(120):
        mailchimp.lists[LIST]["merge_fields"].append(
            {"merge_id": 100 + n, "tag": f"X{n}"}
        )
    adapter = adapter_for(mailchimp)

    offsets = [r.param("offset") for r in mailchimp.recorded("GET", "/merge-fields$")]
    assert offsets == ["0", "100"]
    assert adapter.ensure_merge_fields()[0] == []


@needs_spec(MAILCHIMP_SPEC)
def test_every_request_and_operation_body_fits_mailchimps_openapi_spec(
    mailchimp: MailchimpDouble, messages: MessageFactory, renderer: Renderer
) -> None:
    adapter = adapter_for(mailchimp)
    batch = messages("mailchimp", 3)
    batch[1] = dataclasses.replace(batch[1], offer=None, first_name=None, items=())
    adapter.deliver(batch)
    adapter.send_campaigns([campaign(renderer)])
    adapter.send_campaigns(
        [campaign(renderer, variant="b", schedule_at=datetime(2026, 5, 1, tzinfo=UTC))]
    )

    spec = ApiSpec(MAILCHIMP_SPEC, false_alarms=MAILCHIMP_FALSE_ALARMS)
    sent = [(r.method, r.path, r.json()) for r in mailchimp.requests if r.body]
    operations = [
        (o.method, o.path, json.loads(o.body)) for o in mailchimp.operations if o.body
    ]
    assert {m for m, _, _ in sent} == {"POST", "PUT"}
    assert len(operations) == 6
    assert spec.check_all(sent + operations) == []
    assert spec.ignored == []  # nudge sends neither known false alarm


@needs_spec(MAILCHIMP_SPEC)
def test_the_known_false_alarms_are_recognised_and_nothing_else() -> None:
    spec = ApiSpec(MAILCHIMP_SPEC, false_alarms=MAILCHIMP_FALSE_ALARMS)
    member = f"/3.0/lists/{LIST}/members/0123456789abcdef0123456789abcdef"
    both = {"email_address": "a@example.com", "status": "subscribed"}
    both["status_if_new"] = "subscribed"

    assert spec.problems("PUT", member, both) == []
    assert spec.problems("PATCH", member, {"status": "archived"}) == []
    assert [name for name, _ in spec.ignored] == list(MAILCHIMP_FALSE_ALARMS)

    wrong = spec.problems("PATCH", member, {"status": "deleted"})
    assert [p.where for p in wrong] == ["/status"]
    missing = spec.problems("PUT", member, {"status": "subscribed"})
    assert missing and missing[0].where == "/"
    assert spec.problems("POST", "/3.0/batches", {"operations": [{"path": "/x"}]})
