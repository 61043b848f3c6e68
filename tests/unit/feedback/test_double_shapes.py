"""The doubles' feedback answers have the shapes of the real APIs' published specs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import requests

from nudge.delivery.doubles import KlaviyoDouble, MailchimpDouble
from tests.unit.delivery.conftest import KLAVIYO_SPEC, MAILCHIMP_SPEC, needs_spec

from .conftest import LIST

WHEN = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@cache
def _spec(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def problems(spec: Path, template: str, media: str, body: Any) -> list[str]:
    """Return how an answer breaks the spec's 200 schema of a GET."""
    from openapi_schema_validator import OAS30Validator, OAS31Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4, DRAFT202012

    document = _spec(spec)
    modern = str(document["openapi"]).startswith("3.1")
    resource = Resource.from_contents(
        document, default_specification=DRAFT202012 if modern else DRAFT4
    )
    registry = Registry().with_resource("urn:spec", resource)
    path = template.replace("~", "~0").replace("/", "~1")
    kind = media.replace("/", "~1")
    ref = f"urn:spec#/paths/{path}/get/responses/200/content/{kind}/schema"
    validator = (OAS31Validator if modern else OAS30Validator)(
        {"$ref": ref}, registry=registry
    )
    return [
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(body)
    ]


@needs_spec(KLAVIYO_SPEC)
def test_klaviyo_events_and_metrics_match_the_spec(klaviyo: KlaviyoDouble) -> None:
    klaviyo.add_event(
        "Opened Email", WHEN, email="ann@example.com", external_id="1", properties={}
    )
    klaviyo.add_event("Clicked Email", WHEN, email="bob@example.com")
    headers = {
        "Authorization": f"Klaviyo-API-Key {klaviyo.api_key}",
        "revision": "2026-07-15",
    }

    events = requests.get(
        f"{klaviyo.url}/api/events/",
        params={"include": "metric,profile", "page[size]": "1", "sort": "-datetime"},
        headers=headers,
        timeout=5,
    ).json()
    metrics = requests.get(f"{klaviyo.url}/api/metrics/", headers=headers, timeout=5)

    media = "application/vnd.api+json"
    assert problems(KLAVIYO_SPEC, "/api/events", media, events) == []
    assert problems(KLAVIYO_SPEC, "/api/metrics", media, metrics.json()) == []
    assert events["links"]["next"].startswith(f"{klaviyo.url}/api/events/?")
    [event] = events["data"]
    assert event["attributes"]["datetime"] == "2026-11-29T12:00:00+00:00"
    assert {entry["type"] for entry in events["included"]} == {"metric", "profile"}


@needs_spec(MAILCHIMP_SPEC)
def test_mailchimp_reports_and_members_match_the_spec(
    mailchimp: MailchimpDouble,
) -> None:
    campaign = mailchimp.add_campaign(LIST)
    mailchimp.add_activity(campaign, "ann@example.com", "open", WHEN, ip="192.0.2.1")
    mailchimp.add_activity(campaign, "ann@example.com", "bounce", WHEN, kind="soft")
    mailchimp.unsubscribe(LIST, "bob@example.com", WHEN, campaign_id=campaign)
    auth = ("nudge", mailchimp.api_key)
    base = f"{mailchimp.url}/3.0"

    answers = {
        "/3.0/reports/{campaign_id}/email-activity": requests.get(
            f"{base}/reports/{campaign}/email-activity",
            params={"since": "2026-01-01T00:00:00+00:00"},
            auth=auth,
            timeout=5,
        ).json(),
        "/3.0/reports/{campaign_id}/unsubscribed": requests.get(
            f"{base}/reports/{campaign}/unsubscribed", auth=auth, timeout=5
        ).json(),
        "/3.0/lists/{list_id}/members": requests.get(
            f"{base}/lists/{LIST}/members",
            params={"status": "unsubscribed"},
            auth=auth,
            timeout=5,
        ).json(),
    }

    for template, body in answers.items():
        assert problems(MAILCHIMP_SPEC, template, "application/json", body) == []
    activity = answers["/3.0/reports/{campaign_id}/email-activity"]
    assert [a["action"] for a in activity["emails"][0]["activity"]] == [
        "open",
        "bounce",
    ]
    assert answers["/3.0/lists/{list_id}/members"]["total_items"] == 1
