"""Klaviyo: one event per e-mail on a metric; a metric-triggered flow sends it.

Each message becomes an event (metric "Nudge Recommendation" by default) whose
properties carry the subject, preheader, products, offer and send id, with the
send id as ``unique_id`` so that Klaviyo keeps one event however often a request
is retried. Events go through the bulk job (1,000 a request). Profiles whose
consent nudge has not yet told Klaviyo are subscribed first with the time the
consent was given (``historical_import``), because Klaviyo's subscribe call also
lifts a suppression and must not undo an unsubscribe made in Klaviyo.

Known quirks of ``klaviyo-api`` 25.0.0 handled here: it needs aware datetimes
and plain floats (a ``Decimal`` crashes it), its own retries and urllib3's are
turned off so that the base adapter's apply, and its paging helper only reads
``https://`` links, so cursors are taken from ``links.next`` by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pydantic
import urllib3
from klaviyo_api import KlaviyoAPI
from openapi_client.api.events_api import EventsApi
from openapi_client.api_arg_options import USE_DICTIONARY_FOR_RESPONSE_DATA
from openapi_client.exceptions import ApiException
from openapi_client.rest import RESTClientObject

from nudge.delivery.base import (
    Accepted,
    Adapter,
    EspError,
    Outcome,
    Outgoing,
    Rejected,
)
from nudge.errors import ConfigError
from nudge.settings import Settings

METRIC = "Nudge Recommendation"
MAX_EVENTS = 1_000
MAX_REQUEST_BYTES = 4_500_000  # Klaviyo takes 5 MB; leave room for the envelope
MAX_STRING_BYTES = 100 * 1024
EVENTS = "event-bulk-create-jobs"
SUBSCRIBE = "profile-subscription-bulk-create-jobs"
Entry = tuple[Outgoing, dict[str, Any]]
_ENTRY = re.compile(r"^/data/attributes/(?:events-bulk-create|profiles)/data/(\d+)")


def properties(message: Outgoing) -> dict[str, Any]:
    """Return the event properties a Klaviyo template reads for one e-mail."""
    rendered = message.message
    return {
        "subject": rendered.subject,
        "preheader": rendered.preheader,
        "items": [item.as_dict() for item in message.items],
        "item_count": len(message.items),
        "offer": message.offer.as_dict() if message.offer else None,
        "send_id": message.send_id,
        "run_id": message.run_id,
        "campaign": message.campaign,
        "variant": message.variant,
    }


def _long_strings(value: Any, path: str = "") -> Iterator[tuple[str, int]]:
    if isinstance(value, str):
        size = len(value.encode())
        if size > MAX_STRING_BYTES:
            yield path or "value", size
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _long_strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _long_strings(item, f"{path}[{n}]")


def _text_length(message: Outgoing) -> int:
    rendered = message.message
    length = len(rendered.subject) + len(rendered.preheader) + len(message.send_id)
    for item in message.items:
        length += len(item.title) + len(item.url) + len(item.reason) + 120
        length += len(item.image_url or "") + len(item.price_display)
    if message.offer is not None:
        length += len(message.offer.code) + len(message.offer.description) + 120
    return length


def cursor(links: Mapping[str, Any] | None) -> str | None:
    """Return the page cursor of a collection's `links.next`, or None at the end."""
    following = (links or {}).get("next")
    if not following:
        return None
    values = parse_qs(urlsplit(following).query).get("page[cursor]")
    return values[0] if values else None


class KlaviyoAdapter(Adapter):
    """Post one event per message through Klaviyo's bulk event job."""

    name = "klaviyo"
    batch_size = MAX_EVENTS

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://a.klaviyo.com",
        metric: str = METRIC,
        list_id: str | None = None,
        timeout: float = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.metric = metric
        self.list_id = list_id
        self.timeout = float(timeout)
        self.client = client(api_key, base_url)
        self._events_api = EventsApi(self.client.api_client)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> KlaviyoAdapter:
        """Return an adapter for the configured key and base URL."""
        if settings.klaviyo_api_key is None:
            raise ConfigError(
                "a Klaviyo private API key is needed; set NUDGE_KLAVIYO_API_KEY",
                key="klaviyo_api_key",
            )
        options.setdefault("metric", settings.klaviyo_metric)
        return cls(
            settings.klaviyo_api_key.get_secret_value(),
            base_url=settings.klaviyo_base_url,
            **options,
        )

    # -------------------------------------------------------------- hooks

    def check(self, message: Outgoing) -> str | None:
        """Refuse an event with a string over Klaviyo's 100 KB limit."""
        # A string of 100 KB holds at least 25,600 characters: shorter texts
        # need no walk through the properties.
        if _text_length(message) < MAX_STRING_BYTES // 4:
            return None
        for path, size in _long_strings(properties(message)):
            return (
                f"message too large: event property {path} is {size / 1024:.0f} KB; "
                f"Klaviyo allows {MAX_STRING_BYTES // 1024} KB per string"
            )
        return None

    def send(self, chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        """Subscribe new consents, then post the chunk's events in bulk jobs."""
        outcomes: dict[str, Outcome] = {}
        subscribing = [m for m in chunk if m.push_consent]
        if subscribing:
            outcomes.update(self._subscribe(subscribing))
        ready = [(m, self._entry(m)) for m in chunk if m.send_id not in outcomes]
        for part in self._parts(ready):
            outcomes.update(self._post_events(part))
        return outcomes

    def translate(self, err: Exception) -> EspError:
        """Return the `EspError` for what the Klaviyo SDK or urllib3 raised."""
        if isinstance(err, ApiException):
            return _api_error(err)
        if isinstance(err, urllib3.exceptions.TimeoutError):
            return EspError(
                self.name, f"no answer within {self.timeout:g} s", kind="transient"
            )
        if isinstance(err, urllib3.exceptions.HTTPError):
            return EspError(self.name, f"connection failed: {err}", kind="transient")
        if isinstance(err, pydantic.ValidationError):
            return EspError(
                self.name,
                f"the SDK refused the request: {err.errors()[0]['msg']}",
                kind="payload",
            )
        if isinstance(err, ValueError):
            return EspError(
                self.name,
                f"answered with a body that is not JSON: {err}",
                kind="garbage",
            )
        return super().translate(err)

    # -------------------------------------------------------------- requests

    def _parts(self, entries: Sequence[Entry]) -> Iterator[list[Entry]]:
        # Up to 1,000 events, but under 5 MB: split where the payload would grow
        # past it (JSON in C takes some 20 µs an event, well spent here).
        part: list[Entry] = []
        size = 0
        for message, entry in entries:
            length = len(json.dumps(entry)) + 2
            if part and size + length > MAX_REQUEST_BYTES:
                yield part
                part, size = [], 0
            part.append((message, entry))
            size += length
        if part:
            yield part

    def _post_events(self, entries: Sequence[Entry]) -> dict[str, Outcome]:
        part = [message for message, _ in entries]
        body = {
            "data": {
                "type": "event-bulk-create-job",
                "attributes": {
                    "events-bulk-create": {"data": [entry for _, entry in entries]}
                },
            }
        }
        try:
            self.call(EVENTS, self._bulk_create_events, body)
        except EspError as err:
            # A 400 names the entries at fault: those are refused, the rest
            # go again without them. Without pointers the base splits.
            refused = _pointed(err, part)
            if not refused:
                raise
            return refused
        return {m.send_id: Accepted(m.send_id) for m in part}

    def _bulk_create_events(self, body: dict[str, Any]) -> None:
        # What `Events.bulk_create_events` does, less its pydantic models: they
        # cost half a millisecond per event, a quarter of the time budget, for
        # a check the contract tests make against Klaviyo's OpenAPI spec.
        # The body is plain JSON data already, so it is put in after the SDK
        # has built the request: its sanitizer would walk every value again.
        api_client = self.client.api_client
        method, url, headers, _, post = self._events_api._bulk_create_events_serialize(
            events_bulk_create_job=None,
            _request_auth=None,
            _content_type=None,
            _headers=None,
            _host_index=0,
        )
        response = api_client.call_api(
            method, url, headers, body, post, _request_timeout=self.timeout
        )
        response.read()
        api_client.response_deserialize(
            response_data=response,
            response_types_map={"202": None, "4XX": None, "5XX": None},
        )

    def _entry(self, message: Outgoing) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "email": message.email,
            "external_id": message.external_id or message.customer_id,
        }
        if message.first_name:
            profile["first_name"] = message.first_name
        return {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": {"type": "profile", "attributes": profile}},
                "events": {
                    "data": [
                        {
                            "type": "event",
                            "attributes": {
                                "properties": properties(message),
                                "time": datetime.now(UTC).isoformat(),
                                "metric": {
                                    "data": {
                                        "type": "metric",
                                        "attributes": {"name": self.metric},
                                    }
                                },
                                "unique_id": message.send_id,
                            },
                        }
                    ]
                },
            },
        }

    def _subscribe(self, messages: Sequence[Outgoing]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        pending = list(messages)
        # One pass to learn which addresses Klaviyo refuses, one without them.
        for _ in range(2):
            if not pending:
                break
            try:
                self.call(
                    SUBSCRIBE,
                    self.client.Profiles.bulk_subscribe_profiles,
                    self._subscription(pending),
                    _request_timeout=self.timeout,
                )
            except EspError as err:
                refused = _pointed(err, pending)
                if not refused:
                    raise
                outcomes.update(refused)
                pending = [m for m in pending if m.send_id not in refused]
                continue
            return outcomes
        return outcomes

    def _subscription(self, messages: Sequence[Outgoing]) -> dict[str, Any]:
        profiles = []
        for m in messages:
            consented = m.consented_at
            if consented is not None and consented.tzinfo is None:
                consented = consented.replace(tzinfo=UTC)
            marketing = {"consent": "SUBSCRIBED", "consented_at": consented}
            profiles.append(
                {
                    "type": "profile",
                    "attributes": {
                        "email": m.email,
                        "subscriptions": {"email": {"marketing": marketing}},
                    },
                }
            )
        data: dict[str, Any] = {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "custom_source": "nudge",
                "historical_import": True,
                "profiles": {"data": profiles},
            },
        }
        if self.list_id:
            data["relationships"] = {
                "list": {"data": {"type": "list", "id": self.list_id}}
            }
        return {"data": data}

    # -------------------------------------------------------------- templates

    def find_template(self, name: str) -> dict[str, Any] | None:
        """Return the template with a name, reading every page, or None."""
        page: str | None = None
        while True:
            answer = self.call(
                "templates",
                self.client.Templates.get_templates,
                filter=f'equals(name,"{name}")',
                page_cursor=page,
                _request_timeout=self.timeout,
            )
            document = _document(answer)
            for resource in document.get("data") or []:
                if resource.get("attributes", {}).get("name") == name:
                    return dict(resource)
            page = cursor(document.get("links"))
            if page is None:
                return None

    def save_template(
        self, name: str, html: str, text: str | None = None
    ) -> tuple[str, bool]:
        """Create or update an HTML template by name; return its id and if created."""
        found = self.find_template(name)
        if found is None:
            body = {
                "data": {
                    "type": "template",
                    "attributes": {
                        "name": name,
                        "editor_type": "CODE",
                        "html": html,
                        "text": text,
                    },
                }
            }
            answer = self.call(
                "templates",
                self.client.Templates.create_template,
                body,
                _request_timeout=self.timeout,
            )
            return str(_document(answer)["data"]["id"]), True
        body = {
            "data": {
                "type": "template",
                "id": found["id"],
                "attributes": {"html": html, "text": text},
            }
        }
        self.call(
            "templates",
            self.client.Templates.update_template,
            found["id"],
            body,
            _request_timeout=self.timeout,
        )
        return str(found["id"]), False

    def metric_exists(self, name: str) -> bool:
        """Tell whether Klaviyo knows a metric yet (it appears with its first event)."""
        page: str | None = None
        while True:
            answer = self.call(
                "metrics",
                self.client.Metrics.get_metrics,
                page_cursor=page,
                _request_timeout=self.timeout,
            )
            document = _document(answer)
            for resource in document.get("data") or []:
                if resource.get("attributes", {}).get("name") == name:
                    return True
            page = cursor(document.get("links"))
            if page is None:
                return False


def client(api_key: str, base_url: str) -> KlaviyoAPI:
    """Return the SDK client for a key and base URL, with its own retries off."""
    sdk = KlaviyoAPI(
        api_key,
        max_retries=0,
        test_host=base_url.rstrip("/"),
        options={USE_DICTIONARY_FOR_RESPONSE_DATA: True},
    )
    # urllib3 would retry reads of a GET three times behind the base adapter's
    # back; the REST client is built with the configuration, so build it again.
    sdk.configuration.retries = False
    sdk.api_client.rest_client = RESTClientObject(sdk.configuration)
    return sdk


def _document(answer: Any) -> dict[str, Any]:
    if isinstance(answer, dict):
        return answer
    to_dict = getattr(answer, "to_dict", None)
    if callable(to_dict):
        result: dict[str, Any] = to_dict()
        return result
    raise EspError("klaviyo", f"answered with {type(answer).__name__}", kind="garbage")


def _api_error(err: ApiException) -> EspError:
    status = int(err.status or 0)
    headers = err.headers or {}
    retry_after = _seconds(headers.get("Retry-After"))
    body = err.body or ""
    try:
        payload = json.loads(body) if body else None
        entries = payload.get("errors") if isinstance(payload, dict) else None
    except ValueError:
        payload, entries = None, None
    if entries:
        detail = "; ".join(
            str(e.get("detail") or e.get("title") or e.get("code")) for e in entries[:3]
        )
    elif body or status >= 400:
        # The SDK leaves `body` empty when the bytes are not even UTF-8.
        shown = repr(body[:80]) if body else "unreadable bytes"
        detail = f"{err.reason}: answered with a body that is not JSON:API: {shown}"
    else:
        detail = str(err.reason or "no detail given")
    if status == 401:
        detail = f"the API key was refused ({detail})"
    failure = EspError.from_status("klaviyo", status, detail, retry_after=retry_after)
    failure.payload = payload
    return failure


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _pointed(err: EspError, part: Sequence[Outgoing]) -> dict[str, Outcome]:
    """Return a refusal for each entry a 400's error pointers name."""
    if err.kind != "payload" or not isinstance(err.payload, dict):
        return {}
    refused: dict[str, Outcome] = {}
    for entry in err.payload.get("errors") or []:
        pointer = (entry.get("source") or {}).get("pointer") or ""
        found = _ENTRY.match(pointer)
        if found is None or int(found.group(1)) >= len(part):
            return {}
        message = part[int(found.group(1))]
        reason = str(entry.get("detail") or entry.get("title"))
        refused[message.send_id] = Rejected(f"HTTP {err.status}: {reason}")
    return refused
