"""A local double of the Klaviyo endpoints nudge uses, answering as the API does.

Covered: bulk event jobs (202, no body; every event kept once per profile,
metric and ``unique_id``), bulk subscription jobs (202), templates (list with
``links.next`` cursors, filter ``equals(name,"…")``, create 201, update 200) and
metrics (list with cursors), and events (``GET /api/events`` with ``filter`` on
``metric_id`` and ``datetime``/``timestamp``, ``sort``, ``page[size]``,
``page[cursor]`` in ``links.next``, and ``include`` of metric and profile); every
accepted bulk event is listed there too, and tests add engagement with
`add_event`. Errors are JSON:API ``errors`` arrays with
``source.pointer``; a wrong key gets 401; with ``enforce_limits`` each endpoint's
documented windows answer 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

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
    "events": "events",
}
MAX_EVENT_PAGE = 1_000
_FILTER_TERM = re.compile(r"([a-z-]+)\((\w+),\s*(.+)\)\Z", re.DOTALL)


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
        # What GET /api/events lists: every accepted bulk event and every
        # event a test added, as stored resources with their metric's name.
        self.stream: list[dict[str, Any]] = []
        self.profile_ids: dict[str, str] = {}
        self.event_page_size = 200
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
        self.add_route("GET", r"/api/events/?", self._list_events)

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

    def add_metric(self, name: str) -> str:
        """Make a metric known (as its first event would); return its id."""
        with self._state:
            return self.metrics.setdefault(name, new_id("M"))

    def add_event(
        self,
        metric: str,
        when: datetime | None,
        *,
        email: str | None = None,
        external_id: str | None = None,
        properties: dict[str, Any] | None = None,
        event_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> str:
        """Record an event as Klaviyo would list it; return its id.

        ``attributes`` replace the resource's own (a malformed event for a test).
        """
        profile: dict[str, Any] = {"email": email, "external_id": external_id}
        with self._state:
            metric_id = self.metrics.setdefault(metric, new_id("M"))
            key = _profile_key(profile)
            self.profiles.setdefault(key, {}).update(
                {k: v for k, v in profile.items() if v is not None}
            )
            resource = self._event_resource(
                metric_id, key, properties or {}, when, event_id
            )
            if attributes is not None:
                resource["attributes"] = attributes
            self.stream.append(resource)
        return str(resource["id"])

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
                    properties = dict(record.properties)
                    if unique:
                        properties["$event_id"] = unique
                    self.stream.append(
                        self._event_resource(
                            self.metrics[metric],
                            key,
                            properties,
                            _when(record.time),
                            None,
                        )
                    )
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

    # -------------------------------------------------------------- event reads

    def _event_resource(
        self,
        metric_id: str,
        profile_key: str,
        properties: dict[str, Any],
        when: datetime | None,
        event_id: str | None,
    ) -> dict[str, Any]:
        ident = event_id or new_id("E")
        profile_id = self.profile_ids.setdefault(profile_key, new_id("P"))
        return {
            "type": "event",
            "id": ident,
            "attributes": {
                "timestamp": int(when.timestamp()) if when else None,
                "event_properties": properties,
                "datetime": when.isoformat(timespec="seconds") if when else None,
                "uuid": str(uuid.uuid4()),
            },
            "relationships": {
                "profile": {
                    "data": {"type": "profile", "id": profile_id},
                    "links": self._links(f"events/{ident}/relationships/profile"),
                },
                "metric": {
                    "data": {"type": "metric", "id": metric_id},
                    "links": self._links(f"events/{ident}/relationships/metric"),
                },
            },
            "links": {"self": f"{self.url}/api/events/{ident}/"},
        }

    def _links(self, path: str) -> dict[str, str]:
        return {
            "self": f"{self.url}/api/{path}/",
            "related": f"{self.url}/api/{path.replace('relationships/', '')}/",
        }

    def _list_events(self, request: Request, match: re.Match[str]) -> Response:
        try:
            size = int(request.param("page[size]") or self.event_page_size)
            start = int((request.param("page[cursor]") or "c0").lstrip("c"))
        except ValueError:
            return errors(
                400, error(400, "invalid", "Invalid input.", "Invalid page parameter.")
            )
        if not 1 <= size <= MAX_EVENT_PAGE:
            return errors(
                400,
                error(
                    400,
                    "invalid",
                    "Invalid input.",
                    f"page[size] must be between 1 and {MAX_EVENT_PAGE}.",
                    None,
                ),
            )
        try:
            wanted = _event_filter(request.param("filter"))
        except ValueError as err:
            return errors(400, error(400, "invalid", "Invalid filter.", str(err)))
        sort = request.param("sort") or "datetime"
        if sort.lstrip("-") not in ("datetime", "timestamp"):
            return errors(
                400, error(400, "invalid", "Invalid input.", f"Cannot sort by {sort}.")
            )
        with self._state:
            found = [e for e in self.stream if wanted(e)]
        found.sort(key=_event_time, reverse=sort.startswith("-"))
        page = found[start : start + size]

        links = {"self": f"{self.url}/api/events/"}
        if start + size < len(found):
            query = {k: v[0] for k, v in request.query.items() if v}
            query["page[cursor]"] = f"c{start + size}"
            links["next"] = f"{self.url}/api/events/?{urlencode(query)}"
        body: dict[str, Any] = {"data": page, "links": links}
        include = {
            part.strip()
            for value in request.query.get("include", [])
            for part in value.split(",")
        }
        if include:
            body["included"] = self._included(page, include, request)
        return Response(200, body, content_type=JSONAPI)

    def _included(
        self, page: list[dict[str, Any]], include: set[str], request: Request
    ) -> list[dict[str, Any]]:
        names = {metric_id: name for name, metric_id in self.metrics.items()}
        profiles = {pid: key for key, pid in self.profile_ids.items()}
        fields = request.param("fields[profile]")
        shown = fields.split(",") if fields else None
        included: dict[tuple[str, str], dict[str, Any]] = {}
        for event in page:
            relations = event.get("relationships") or {}
            metric_id = relations["metric"]["data"]["id"]
            if "metric" in include and metric_id in names:
                included[("metric", metric_id)] = {
                    "type": "metric",
                    "id": metric_id,
                    "attributes": {"name": names[metric_id]},
                    "links": {"self": f"{self.url}/api/metrics/{metric_id}/"},
                }
            profile_id = relations["profile"]["data"]["id"]
            if "profile" in include and profile_id in profiles:
                stored = self.profiles.get(profiles[profile_id], {})
                keys = shown or ["email", "external_id", "first_name"]
                included[("profile", profile_id)] = {
                    "type": "profile",
                    "id": profile_id,
                    "attributes": {k: stored.get(k) for k in keys},
                    "links": {"self": f"{self.url}/api/profiles/{profile_id}/"},
                }
        return list(included.values())

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


def _when(text: str | None) -> datetime:
    """Parse an ISO 8601 time, naive meaning UTC; now when there is none."""
    if not text:
        return datetime.now(UTC)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _event_time(resource: dict[str, Any]) -> float:
    """Return an event's time in seconds (0 when it has none readable)."""
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        return 0.0
    try:
        return _when(attributes["datetime"]).timestamp()
    except (KeyError, TypeError, ValueError):
        stamp = attributes.get("timestamp")
        return float(stamp) if isinstance(stamp, int | float) else 0.0


def _split_terms(text: str) -> list[str]:
    """Split a filter at its top-level commas (not inside parentheses or quotes)."""
    terms, depth, quote_char, start = [], 0, "", 0
    for n, char in enumerate(text):
        if quote_char:
            quote_char = "" if char == quote_char else quote_char
        elif char in "\"'":
            quote_char = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:n].strip())
            start = n + 1
    terms.append(text[start:].strip())
    return [t for t in terms if t]


def _event_filter(expression: str | None) -> Any:
    """Return a predicate over event resources for a Klaviyo filter expression."""
    if not expression:
        return lambda event: True
    checks = [_event_term(term) for term in _split_terms(expression)]
    return lambda event: all(check(event) for check in checks)


def _event_term(term: str) -> Any:
    if term.startswith("and(") and term.endswith(")"):
        return _event_filter(term[4:-1])
    found = _FILTER_TERM.match(term)
    if found is None:
        raise ValueError(f"Invalid filter term: {term}")
    operator, field, raw = found.groups()
    value = raw.strip().strip("\"'")
    if field == "metric_id" and operator == "equals":
        return lambda event: event["relationships"]["metric"]["data"]["id"] == value
    if field == "profile_id" and operator == "equals":
        return lambda event: event["relationships"]["profile"]["data"]["id"] == value
    compare = {
        "greater-than": lambda a, b: a > b,
        "greater-or-equal": lambda a, b: a >= b,
        "less-than": lambda a, b: a < b,
        "less-or-equal": lambda a, b: a <= b,
    }.get(operator)
    if compare is None or field not in ("datetime", "timestamp"):
        raise ValueError(f"'{operator}' is not a valid operator for '{field}'")
    try:
        bound = _when(value).timestamp() if field == "datetime" else float(value)
    except ValueError as err:
        raise ValueError(f"Invalid {field} value: {value}") from err

    def check(event: dict[str, Any]) -> bool:
        return bool(compare(_event_time(event), bound))

    return check


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
