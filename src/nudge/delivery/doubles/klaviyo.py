"""A local double of the Klaviyo endpoints nudge uses, answering as the API does.

Covered: bulk event jobs (202, no body; every event kept once per profile,
metric and ``unique_id``), bulk subscription jobs (202), templates (list with
``links.next`` cursors, filter ``equals(name,"…")``, create 201, update 200) and
metrics (list with cursors). Errors are JSON:API ``errors`` arrays with
``source.pointer``; a wrong key gets 401; with ``enforce_limits`` each endpoint's
documented windows answer 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from nudge.delivery.doubles.server import DoubleServer, Request, Response, new_id
from nudge.delivery.limits import LIMITS, Rate

JSONAPI = "application/vnd.api+json"
MAX_BODY = 5 * 1024 * 1024
MAX_STRING = 100 * 1024
MAX_EVENTS = 1_000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Route name → the LIMITS key it counts against.
_LIMITED = {
    "event-bulk-create-jobs": "event-bulk-create-jobs",
    "profile-subscription-bulk-create-jobs": "profile-subscription-bulk-create-jobs",
    "templates": "templates",
    "metrics": "metrics",
}


def error(
    status: int, code: str, title: str, detail: str, pointer: str | None = None
) -> dict[str, Any]:
    """Return one JSON:API error object as Klaviyo writes them."""
    entry: dict[str, Any] = {
        "id": new_id(),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
    }
    if pointer is not None:
        entry["source"] = {"pointer": pointer}
    return entry


def errors(status: int, *entries: dict[str, Any], **headers: str) -> Response:
    """Return a JSON:API error response."""
    return Response(status, {"errors": list(entries)}, dict(headers), JSONAPI)


@dataclass
class Event:
    """One event Klaviyo accepted."""

    profile: dict[str, Any]
    metric: str
    unique_id: str | None
    properties: dict[str, Any]
    time: str | None
    job: str


class KlaviyoDouble(DoubleServer):
    """Klaviyo's API for events, subscriptions, templates and metrics."""

    name = "klaviyo"

    def __init__(
        self,
        *,
        api_key: str = "pk_test_nudge",
        enforce_limits: bool = False,
        page_size: int = 10,
        max_body: int = MAX_BODY,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.api_key = api_key
        self.enforce_limits = enforce_limits
        self.page_size = page_size
        self.max_body = max_body
        self.events: dict[tuple[str, str, str], Event] = {}
        self.event_log: list[Event] = []
        self.duplicates = 0
        self.profiles: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, str] = {}
        self.rejected: dict[str, str] = {}
        self.throttled = 0
        self._state = threading.Lock()
        self._windows: dict[str, deque[float]] = defaultdict(deque)

        self.add_route("POST", r"/api/event-bulk-create-jobs/?", self._bulk_events)
        self.add_route(
            "POST",
            r"/api/profile-subscription-bulk-create-jobs/?",
            self._bulk_subscribe,
        )
        self.add_route("GET", r"/api/templates/?", self._list_templates)
        self.add_route("POST", r"/api/templates/?", self._create_template)
        self.add_route(
            "PATCH", r"/api/templates/(?P<id>[^/]+)/?", self._update_template
        )
        self.add_route("GET", r"/api/metrics/?", self._list_metrics)

    # -------------------------------------------------------------- controls

    def reject_address(self, email: str, detail: str = "Invalid email address") -> None:
        """Make every later request naming this address fail with a 400."""
        self.rejected[email.lower()] = detail

    def revoke_key(self) -> None:
        """Expire the API key: every later request gets a 401."""
        self.api_key = "revoked-" + new_id()

    def preload(self, endpoint: str, times: list[float]) -> None:
        """Count requests as made at these times, as if from another client."""
        with self._state:
            self._windows[endpoint].extend(sorted(times))

    def accepted_ids(self) -> list[str]:
        """Return the unique ids of the events kept, once each."""
        with self._state:
            return [key[2] for key in self.events]

    # -------------------------------------------------------------- hooks

    def authorize(self, request: Request) -> Response | None:
        """Refuse a request without the right private key or a revision."""
        if request.headers.get("authorization") != f"Klaviyo-API-Key {self.api_key}":
            return errors(
                401,
                error(
                    401,
                    "not_authenticated",
                    "Authentication credentials were not provided.",
                    "Missing or invalid private key.",
                    "/data/",
                ),
            )
        if not request.headers.get("revision"):
            return errors(
                400,
                error(
                    400,
                    "invalid",
                    "Invalid input.",
                    "A revision header is required.",
                ),
            )
        return None

    def admit(self, request: Request, route: str) -> Response | None:
        """Answer 429 with Retry-After once an endpoint's window is full."""
        if not self.enforce_limits:
            return None
        key = next((v for k, v in _LIMITED.items() if k in route), None)
        if key is None:
            return None
        rate: Rate = LIMITS["klaviyo"][key]
        longest = max(w.seconds for w in rate.windows)
        with self._state:
            now = self.clock()
            times = self._windows[key]
            while times and times[0] <= now - longest:
                times.popleft()
            for window in rate.windows:
                recent = [t for t in times if t > now - window.seconds]
                if len(recent) >= window.limit:
                    wait = recent[-window.limit] + window.seconds - now
                    self.throttled += 1
                    seconds = max(1, math.ceil(wait))
                    return errors(
                        429,
                        error(
                            429,
                            "throttled",
                            "Request was throttled.",
                            f"Request was throttled. Expected available in "
                            f"{seconds} second{'s' if seconds > 1 else ''}.",
                        ),
                        **{"Retry-After": str(seconds)},
                    )
            times.append(now)
        return None

    def not_found(self, request: Request) -> Response:
        """Answer an unknown path as Klaviyo does."""
        return errors(
            404, error(404, "not_found", "Not found.", f"No route {request.path}.")
        )

    # -------------------------------------------------------------- events

    def _bulk_events(self, request: Request, match: re.Match[str]) -> Response:
        if len(request.body) > self.max_body:
            return errors(
                413,
                error(
                    413,
                    "request_too_large",
                    "Request body too large.",
                    f"The payload is {len(request.body)} bytes; at most "
                    f"{self.max_body} are allowed.",
                ),
            )
        try:
            body = request.json()
            entries = body["data"]["attributes"]["events-bulk-create"]["data"]
        except (ValueError, KeyError, TypeError):
            return errors(
                400, error(400, "invalid", "Invalid input.", "Malformed JSON:API body.")
            )
        total = sum(len(e["attributes"]["events"]["data"]) for e in entries)
        if total > MAX_EVENTS:
            return errors(
                400,
                error(
                    400,
                    "invalid",
                    "Invalid input.",
                    f"At most {MAX_EVENTS} events are allowed per request.",
                    "/data/attributes/events-bulk-create/data",
                ),
            )

        # Klaviyo checks the whole job first and processes none of it on error.
        problems = []
        base = "/data/attributes/events-bulk-create/data"
        for n, entry in enumerate(entries):
            attributes = entry["attributes"]["profile"]["data"]["attributes"]
            email = attributes.get("email")
            if email is not None:
                reason = self.rejected.get(email.lower())
                if reason is None and not _EMAIL.match(email):
                    reason = "Invalid email address"
                if reason is not None:
                    pointer = f"{base}/{n}/attributes/profile/data/attributes/email"
                    problems.append(
                        error(400, "invalid", "Invalid input.", reason, pointer)
                    )
            for m, event in enumerate(entry["attributes"]["events"]["data"]):
                long = _long_string(event["attributes"].get("properties", {}))
                if long is not None:
                    pointer = (
                        f"{base}/{n}/attributes/events/data/{m}/attributes/properties"
                    )
                    problems.append(
                        error(
                            400,
                            "invalid",
                            "Invalid input.",
                            f"A string in the event properties is larger than "
                            f"100 KB ({long} bytes).",
                            pointer,
                        )
                    )
        if problems:
            return errors(400, *problems)

        job = new_id("job_")
        with self._state:
            for entry in entries:
                profile = dict(entry["attributes"]["profile"]["data"]["attributes"])
                key = _profile_key(profile)
                self.profiles.setdefault(key, {}).update(
                    {k: v for k, v in profile.items() if v is not None}
                )
                for event in entry["attributes"]["events"]["data"]:
                    attributes = event["attributes"]
                    metric = attributes["metric"]["data"]["attributes"]["name"]
                    self.metrics.setdefault(metric, new_id("M"))
                    unique = attributes.get("unique_id")
                    record = Event(
                        profile=profile,
                        metric=metric,
                        unique_id=unique,
                        properties=attributes.get("properties", {}),
                        time=attributes.get("time"),
                        job=job,
                    )
                    ident = (key, metric, unique or attributes.get("time") or job)
                    if ident in self.events:
                        self.duplicates += 1
                        continue
                    self.events[ident] = record
                    self.event_log.append(record)
        return Response(202, None, content_type=JSONAPI)

    def _bulk_subscribe(self, request: Request, match: re.Match[str]) -> Response:
        try:
            body = request.json()
            profiles = body["data"]["attributes"]["profiles"]["data"]
        except (ValueError, KeyError, TypeError):
            return errors(
                400, error(400, "invalid", "Invalid input.", "Malformed JSON:API body.")
            )
        if len(profiles) > 1_000:
            return errors(
                400,
                error(
                    400,
                    "invalid",
                    "Invalid input.",
                    "At most 1000 profiles are allowed.",
                    "/data/attributes/profiles/data",
                ),
            )
        base = "/data/attributes/profiles/data"
        problems = []
        for n, profile in enumerate(profiles):
            email = profile["attributes"].get("email") or ""
            reason = self.rejected.get(email.lower())
            if reason is None and not _EMAIL.match(email):
                reason = "Invalid email address"
            if reason is not None:
                pointer = f"{base}/{n}/attributes/email"
                problems.append(
                    error(400, "invalid", "Invalid input.", reason, pointer)
                )
        if problems:
            return errors(400, *problems)
        with self._state:
            for profile in profiles:
                attributes = profile["attributes"]
                self.subscriptions[attributes["email"].lower()] = attributes[
                    "subscriptions"
                ]
        return Response(202, None, content_type=JSONAPI)

    # -------------------------------------------------------------- templates

    def _template_resource(self, template: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "template",
            "id": template["id"],
            "attributes": {
                k: template[k]
                for k in ("name", "editor_type", "html", "text", "created", "updated")
            },
            "links": {"self": f"{self.url}/api/templates/{template['id']}/"},
        }

    def _list_templates(self, request: Request, match: re.Match[str]) -> Response:
        wanted = _equals_name(request.param("filter"))
        with self._state:
            found = [
                t
                for t in sorted(self.templates.values(), key=lambda t: t["created"])
                if wanted is None or t["name"] == wanted
            ]
        resources = [self._template_resource(t) for t in found]
        return self._page(request, "/api/templates/", resources)

    def _create_template(self, request: Request, match: re.Match[str]) -> Response:
        attributes = (request.json() or {}).get("data", {}).get("attributes", {})
        if not attributes.get("name") or not attributes.get("editor_type"):
            return errors(
                400,
                error(
                    400,
                    "invalid",
                    "Invalid input.",
                    "'name' and 'editor_type' are required.",
                    "/data/attributes",
                ),
            )
        now = _stamp()
        template = {
            "id": new_id("T"),
            "name": attributes["name"],
            "editor_type": attributes["editor_type"],
            "html": attributes.get("html"),
            "text": attributes.get("text"),
            "created": now,
            "updated": now,
        }
        with self._state:
            self.templates[template["id"]] = template
        return Response(
            201, {"data": self._template_resource(template)}, content_type=JSONAPI
        )

    def _update_template(self, request: Request, match: re.Match[str]) -> Response:
        template_id = match["id"]
        with self._state:
            template = self.templates.get(template_id)
            if template is None:
                return errors(
                    404,
                    error(
                        404,
                        "not_found",
                        "Not found.",
                        f"A template with id {template_id} does not exist.",
                    ),
                )
            attributes = (request.json() or {}).get("data", {}).get("attributes", {})
            for key in ("name", "html", "text"):
                if attributes.get(key) is not None:
                    template[key] = attributes[key]
            template["updated"] = _stamp()
        return Response(
            200, {"data": self._template_resource(template)}, content_type=JSONAPI
        )

    def _list_metrics(self, request: Request, match: re.Match[str]) -> Response:
        with self._state:
            resources = [
                {
                    "type": "metric",
                    "id": metric_id,
                    "attributes": {"name": name},
                    "links": {"self": f"{self.url}/api/metrics/{metric_id}/"},
                }
                for name, metric_id in self.metrics.items()
            ]
        return self._page(request, "/api/metrics/", resources)

    def _page(
        self, request: Request, path: str, resources: list[dict[str, Any]]
    ) -> Response:
        """Return one page of a collection, with a `links.next` cursor link."""
        size = int(request.param("page[size]") or self.page_size)
        start = int((request.param("page[cursor]") or "c0").lstrip("c"))
        page = resources[start : start + size]
        links = {"self": f"{self.url}{path}"}
        if start + size < len(resources):
            cursor = quote(f"c{start + size}")
            filters = request.param("filter")
            extra = f"&filter={quote(filters)}" if filters else ""
            links["next"] = f"{self.url}{path}?page%5Bcursor%5D={cursor}{extra}"
        return Response(200, {"data": page, "links": links}, content_type=JSONAPI)


def _profile_key(profile: dict[str, Any]) -> str:
    email = profile.get("email")
    if email:
        return f"email:{email.lower()}"
    return f"external:{profile.get('external_id')}"


def _long_string(value: Any) -> int | None:
    if isinstance(value, str):
        size = len(value.encode())
        return size if size > MAX_STRING else None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _long_string(item)
            if found is not None:
                return found
    return None


def _equals_name(expression: str | None) -> str | None:
    if not expression:
        return None
    found = re.fullmatch(r'equals\(name,\s*["\'](.*)["\']\)', expression)
    return found.group(1) if found else None


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
