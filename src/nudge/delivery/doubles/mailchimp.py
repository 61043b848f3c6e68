"""A local double of the Mailchimp Marketing API endpoints nudge uses.

Covered: audiences (get), merge fields (list with ``offset``/``count``, create),
members (``PUT`` upsert honouring ``status_if_new``), member tags (204), static
segments (list, create), batch operations (``POST /batches`` runs the operations
through the same routes; status goes ``pending`` → ``started`` → ``finished``; the
results are a ``.tar.gz`` of JSON arrays at ``response_body_url``), and campaigns
(create, content, get, list, send and schedule answering 204), and what
feedback reads: a campaign's e-mail activity (``since``) and unsubscribes, and
the members of an audience by status (``since_last_changed``,
``unsubscribed_since``), each paged by ``offset``/``count``; tests add activity
with `add_activity`, `unsubscribe` and `clean`. Errors are
``application/problem+json`` as Mailchimp writes them; a wrong key gets 401; over
10 requests at once get 429.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nudge.delivery.doubles.server import DoubleServer, Request, Response, new_id

PROBLEM = "application/problem+json; charset=utf-8"
MAX_MERGE_TEXT = 255
MAX_CONNECTIONS = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DEFAULT_FIELDS = ("FNAME", "LNAME", "ADDRESS", "PHONE")


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """Return an error response in Mailchimp's problem+json shape."""
    body = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": new_id(),
        **extra,
    }
    return Response(status, body, content_type=PROBLEM)


def _missing() -> Response:
    return problem(
        404, "Resource Not Found", "The requested resource could not be found."
    )


@dataclass
class Operation:
    """One operation of a batch, as the double ran it."""

    batch: str
    method: str
    path: str
    operation_id: str | None
    body: str | None
    status: int


class MailchimpDouble(DoubleServer):
    """Mailchimp's Marketing API for audiences, members, batches and campaigns."""

    name = "mailchimp"

    def __init__(
        self,
        *,
        api_key: str = "0123456789abcdef-us6",
        list_id: str = "a1b2c3d4e5",
        polls_until_finished: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.api_key = api_key
        self.polls_until_finished = polls_until_finished
        self.lists: dict[str, dict[str, Any]] = {}
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.operations: list[Operation] = []
        self.rejected: dict[str, str] = {}
        self.sends: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        # Reports: campaign id → subscriber hash → that member's activity, and
        # campaign id → its unsubscribes.
        self.activity: dict[str, dict[str, dict[str, Any]]] = {}
        self.unsubscribes: dict[str, list[dict[str, Any]]] = {}
        self._state = threading.RLock()
        self.add_list(list_id)

        api = "/3.0"
        member = api + r"/lists/(?P<list>[^/]+)/members/(?P<hash>[0-9a-f]{32})"
        campaign = api + r"/campaigns/(?P<id>[^/]+)"
        self.add_route("GET", api + r"/lists/(?P<list>[^/]+)", self._get_list)
        self.add_route(
            "GET", api + r"/lists/(?P<list>[^/]+)/merge-fields", self._merge_fields
        )
        self.add_route(
            "POST", api + r"/lists/(?P<list>[^/]+)/merge-fields", self._add_field
        )
        self.add_route("PUT", member, self._put_member)
        self.add_route("POST", member + "/tags", self._tag_member)
        self.add_route("GET", api + r"/lists/(?P<list>[^/]+)/segments", self._segments)
        self.add_route(
            "POST", api + r"/lists/(?P<list>[^/]+)/segments", self._add_segment
        )
        self.add_route("POST", api + r"/batches", self._start_batch)
        self.add_route("GET", api + r"/batches/(?P<id>[^/]+)", self._batch_status)
        self.add_route("GET", r"/_batch-results/(?P<id>[^/]+)\.tar\.gz", self._archive)
        self.add_route("GET", api + r"/campaigns", self._list_campaigns)
        self.add_route("POST", api + r"/campaigns", self._create_campaign)
        self.add_route("GET", campaign, self._get_campaign)
        self.add_route("PUT", campaign + "/content", self._set_content)
        self.add_route("POST", campaign + "/actions/send", self._send)
        self.add_route("POST", campaign + "/actions/schedule", self._schedule)
        report = api + r"/reports/(?P<id>[^/]+)"
        self.add_route("GET", report + "/email-activity", self._email_activity)
        self.add_route("GET", report + "/unsubscribed", self._unsubscribed)
        self.add_route(
            "GET", api + r"/lists/(?P<list>[^/]+)/members", self._list_members
        )

    # -------------------------------------------------------------- controls

    def add_list(self, list_id: str, name: str = "Nudge test audience") -> None:
        """Create an audience with Mailchimp's default merge fields."""
        with self._state:
            self.lists[list_id] = {
                "id": list_id,
                "name": name,
                "merge_fields": [
                    {
                        "merge_id": n,
                        "tag": tag,
                        "name": tag.title(),
                        "type": "text",
                        "list_id": list_id,
                    }
                    for n, tag in enumerate(DEFAULT_FIELDS, start=1)
                ],
                "members": {},
                "segments": {},
            }

    def delete_list(self, list_id: str) -> None:
        """Delete an audience: every later request about it gets a 404."""
        with self._state:
            self.lists.pop(list_id, None)

    def reject_address(self, email: str, detail: str | None = None) -> None:
        """Make Mailchimp refuse a member's address as fake or invalid."""
        self.rejected[email.lower()] = detail or (
            f"{email} looks fake or invalid, please enter a real email address."
        )

    def revoke_key(self) -> None:
        """Expire the API key: every later request gets a 401."""
        self.api_key = "revoked-" + new_id()

    def add_campaign(self, list_id: str, title: str = "nudge test") -> str:
        """Create a sent regular campaign to an audience; return its id."""
        campaign_id = new_id()
        campaign: dict[str, Any] = {
            "id": campaign_id,
            "web_id": len(self.campaigns) + 1,
            "type": "regular",
            "status": "sent",
            "create_time": _stamp(),
            "send_time": _stamp(),
            "recipients": {"list_id": list_id},
            "settings": {"title": title},
            "content": None,
        }
        with self._state:
            self.campaigns[campaign_id] = campaign
        return campaign_id

    def add_activity(
        self,
        campaign_id: str,
        email: str,
        action: str,
        when: datetime,
        *,
        kind: str | None = None,
        url: str | None = None,
        ip: str | None = None,
    ) -> dict[str, Any]:
        """Record an open, click or bounce of a member in a campaign's report."""
        campaign = self.campaigns[campaign_id]
        entry: dict[str, Any] = {"action": action, "timestamp": _iso(when)}
        if kind is not None:
            entry["type"] = kind
        if url is not None:
            entry["url"] = url
        if ip is not None:
            entry["ip"] = ip
        with self._state:
            member = self.activity.setdefault(campaign_id, {}).setdefault(
                subscriber_hash(email),
                {
                    "campaign_id": campaign_id,
                    "list_id": campaign["recipients"]["list_id"],
                    "list_is_active": True,
                    "email_id": subscriber_hash(email),
                    "email_address": email,
                    "activity": [],
                },
            )
            member["activity"].append(entry)
        return entry

    def unsubscribe(
        self,
        list_id: str,
        email: str,
        when: datetime,
        *,
        campaign_id: str | None = None,
        reason: str = "N/A (Unsubscribed by the member)",
    ) -> None:
        """Unsubscribe a member, from a campaign's link when one is named."""
        member = self._member_for(list_id, email)
        with self._state:
            member.update(
                status="unsubscribed",
                last_changed=_iso(when),
                unsubscribe_reason=reason,
            )
            if campaign_id is not None:
                self.unsubscribes.setdefault(campaign_id, []).append(
                    {
                        "email_id": member["id"],
                        "email_address": email,
                        "merge_fields": dict(member["merge_fields"]),
                        "vip": False,
                        "timestamp": _iso(when),
                        "reason": reason,
                        "campaign_id": campaign_id,
                        "list_id": list_id,
                        "list_is_active": True,
                    }
                )

    def clean(self, list_id: str, email: str, when: datetime) -> None:
        """Mark a member cleaned, as Mailchimp does after hard bounces."""
        member = self._member_for(list_id, email)
        with self._state:
            member.update(status="cleaned", last_changed=_iso(when))

    def _member_for(self, list_id: str, email: str) -> dict[str, Any]:
        with self._state:
            members = self.lists[list_id]["members"]
            member: dict[str, Any] = members.setdefault(
                subscriber_hash(email),
                {
                    "id": subscriber_hash(email),
                    "email_address": email,
                    "unique_email_id": new_id(),
                    "status": "subscribed",
                    "merge_fields": {},
                    "tags": [],
                    "list_id": list_id,
                },
            )
            return member

    def members(self, list_id: str) -> dict[str, dict[str, Any]]:
        """Return an audience's members by subscriber hash."""
        with self._state:
            return dict(self.lists[list_id]["members"])

    # -------------------------------------------------------------- hooks

    def authorize(self, request: Request) -> Response | None:
        """Refuse a request without the API key as its Basic password."""
        if request.path.startswith("/_batch-results/"):
            return None
        header = request.headers.get("authorization", "")
        try:
            _, _, key = base64.b64decode(header.removeprefix("Basic ")).partition(b":")
        except ValueError:
            key = b""
        if key.decode(errors="replace") != self.api_key:
            return problem(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the "
                "wrong datacenter.",
            )
        return None

    def dispatch(self, request: Request) -> Response:
        """Answer a request, refusing it when too many are in flight."""
        with self._state:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            over = self.in_flight > MAX_CONNECTIONS
        try:
            if over:
                return problem(
                    429,
                    "Too Many Requests",
                    f"You have exceeded the limit of {MAX_CONNECTIONS} "
                    "simultaneous connections.",
                )
            return super().dispatch(request)
        finally:
            with self._state:
                self.in_flight -= 1

    def not_found(self, request: Request) -> Response:
        """Answer an unknown path as Mailchimp does."""
        return _missing()

    # -------------------------------------------------------------- lists

    def _audience(self, match: re.Match[str]) -> dict[str, Any] | None:
        return self.lists.get(match["list"])

    def _get_list(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        return Response(200, {"id": audience["id"], "name": audience["name"]})

    def _merge_fields(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        fields = audience["merge_fields"]
        return Response(
            200,
            {
                "merge_fields": _page(request, fields),
                "list_id": audience["id"],
                "total_items": len(fields),
            },
        )

    def _add_field(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        spec = request.json() or {}
        tag = str(spec.get("tag") or spec.get("name", "")[:10]).upper()
        with self._state:
            if any(f["tag"] == tag for f in audience["merge_fields"]):
                return problem(
                    400,
                    "Invalid Resource",
                    f'A Merge Field with the tag "{tag}" already exists for this list.',
                )
            if len(tag) > 10:
                return problem(
                    400, "Invalid Resource", "The merge tag is over 10 characters."
                )
            field = {
                "merge_id": len(audience["merge_fields"]) + 1,
                "tag": tag,
                "name": spec.get("name"),
                "type": spec.get("type"),
                "public": spec.get("public", False),
                "list_id": audience["id"],
            }
            audience["merge_fields"].append(field)
        return Response(200, field)

    def _put_member(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        body = request.json() or {}
        email = str(body.get("email_address") or "")
        if email.lower() in self.rejected or not _EMAIL.match(email):
            detail = self.rejected.get(
                email.lower(),
                f"{email} looks fake or invalid, please enter a real email address.",
            )
            return problem(400, "Invalid Resource", detail)
        known = {f["tag"] for f in audience["merge_fields"]}
        values = body.get("merge_fields") or {}
        errors = [
            {"field": tag, "message": "is not a merge field of this audience"}
            for tag in values
            if tag not in known
        ] + [
            {"field": tag, "message": f"is over {MAX_MERGE_TEXT} characters"}
            for tag, value in values.items()
            if isinstance(value, str) and len(value) > MAX_MERGE_TEXT
        ]
        if errors:
            return problem(
                400,
                "Invalid Resource",
                "Your merge fields were invalid.",
                errors=errors,
            )
        with self._state:
            members = audience["members"]
            member = members.get(match["hash"])
            if member is None:
                status = body.get("status") or body.get("status_if_new")
                member = members[match["hash"]] = {
                    "id": match["hash"],
                    "email_address": email,
                    "unique_email_id": new_id(),
                    "status": status,
                    "merge_fields": {},
                    "tags": [],
                    "list_id": audience["id"],
                }
            elif body.get("status"):
                member["status"] = body["status"]
            member["merge_fields"].update(values)
            return Response(200, member)

    def _tag_member(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        with self._state:
            member = audience["members"].get(match["hash"])
            if member is None:
                return _missing()
            for tag in (request.json() or {}).get("tags", []):
                segment = self._static_segment(audience, tag["name"])
                if tag.get("status") == "active":
                    segment["members"].add(match["hash"])
                    if tag["name"] not in member["tags"]:
                        member["tags"].append(tag["name"])
                else:
                    segment["members"].discard(match["hash"])
        return Response(204)

    def _static_segment(self, audience: dict[str, Any], name: str) -> dict[str, Any]:
        segments: dict[int, dict[str, Any]] = audience["segments"]
        for segment in segments.values():
            if segment["name"] == name:
                return segment
        segment_id = 10_000 + len(audience["segments"])
        segment = {"id": segment_id, "name": name, "type": "static", "members": set()}
        audience["segments"][segment_id] = segment
        return segment

    def _segment_view(self, segment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": segment["id"],
            "name": segment["name"],
            "type": segment["type"],
            "member_count": len(segment["members"]),
        }

    def _segments(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        kind = request.param("type")
        with self._state:
            found = [
                self._segment_view(s)
                for s in audience["segments"].values()
                if kind is None or s["type"] == kind
            ]
        return Response(
            200,
            {
                "segments": _page(request, found),
                "list_id": audience["id"],
                "total_items": len(found),
            },
        )

    def _add_segment(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        body = request.json() or {}
        with self._state:
            segment = self._static_segment(audience, str(body.get("name")))
            return Response(200, self._segment_view(segment))

    # -------------------------------------------------------------- batches

    def _start_batch(self, request: Request, match: re.Match[str]) -> Response:
        body = request.json() or {}
        operations = body.get("operations")
        if not isinstance(operations, list):
            return problem(400, "Invalid Resource", "operations must be an array.")
        batch_id = new_id()
        results = [self._run(batch_id, op) for op in operations]
        errored = sum(1 for r in results if r["status_code"] >= 400)
        batch = {
            "id": batch_id,
            "status": "pending",
            "total_operations": len(operations),
            "finished_operations": 0,
            "errored_operations": 0,
            "submitted_at": _stamp(),
            "completed_at": "",
            "response_body_url": "",
            "_results": results,
            "_errored": errored,
            "_polls": 0,
        }
        with self._state:
            self.batches[batch_id] = batch
        return Response(200, _public(batch))

    def _run(self, batch_id: str, op: dict[str, Any]) -> dict[str, Any]:
        method = str(op.get("method", "")).upper()
        path = "/3.0" + str(op.get("path", ""))
        body = op.get("body")
        handler = self._handler(method, path)
        if handler is None:
            response = _missing()
        else:
            fake = Request(
                method=method,
                path=path,
                query={},
                headers={},
                body=str(body or "").encode(),
                at=self.clock(),
            )
            route, found = handler
            response = route(fake, found)
        with self._state:
            self.operations.append(
                Operation(
                    batch_id,
                    method,
                    path,
                    op.get("operation_id"),
                    body,
                    response.status,
                )
            )
        return {
            "status_code": response.status,
            "operation_id": op.get("operation_id"),
            "response": response.payload().decode()
            if response.body is not None
            else "",
        }

    def _handler(
        self, method: str, path: str
    ) -> tuple[Callable[[Request, re.Match[str]], Response], re.Match[str]] | None:
        for route_method, regex, _, handler in self._routes:
            if route_method == method:
                found = regex.match(path)
                if found is not None:
                    return handler, found
        return None

    def _batch_status(self, request: Request, match: re.Match[str]) -> Response:
        with self._state:
            batch = self.batches.get(match["id"])
            if batch is None:
                return _missing()
            batch["_polls"] += 1
            if batch["_polls"] > self.polls_until_finished:
                batch.update(
                    status="finished",
                    finished_operations=batch["total_operations"],
                    errored_operations=batch["_errored"],
                    completed_at=_stamp(),
                    response_body_url=f"{self.url}/_batch-results/{batch['id']}.tar.gz",
                )
            else:
                batch["status"] = "started"
            return Response(200, _public(batch))

    def _archive(self, request: Request, match: re.Match[str]) -> Response:
        with self._state:
            batch = self.batches.get(match["id"])
        if batch is None:
            return _missing()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            data = json.dumps(batch["_results"]).encode()
            info = tarfile.TarInfo(f"{batch['id']}/{batch['id']}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return Response(200, buffer.getvalue(), content_type="application/x-gzip")

    # -------------------------------------------------------------- campaigns

    def _list_campaigns(self, request: Request, match: re.Match[str]) -> Response:
        list_id = request.param("list_id")
        with self._state:
            found = [
                c
                for c in self.campaigns.values()
                if list_id is None or c["recipients"]["list_id"] == list_id
            ]
        return Response(
            200, {"campaigns": _page(request, found), "total_items": len(found)}
        )

    def _create_campaign(self, request: Request, match: re.Match[str]) -> Response:
        body = request.json() or {}
        recipients = body.get("recipients") or {}
        audience = self.lists.get(str(recipients.get("list_id")))
        if audience is None:
            return problem(400, "Invalid Resource", "The list_id is not valid.")
        campaign = {
            "id": new_id(),
            "web_id": len(self.campaigns) + 1,
            "type": body.get("type", "regular"),
            "status": "save",
            "create_time": _stamp(),
            "recipients": recipients,
            "settings": body.get("settings") or {},
            "content": None,
        }
        with self._state:
            self.campaigns[campaign["id"]] = campaign
        return Response(200, _public(campaign))

    def _get_campaign(self, request: Request, match: re.Match[str]) -> Response:
        campaign = self.campaigns.get(match["id"])
        if campaign is None:
            return _missing()
        return Response(200, _public(campaign))

    def _set_content(self, request: Request, match: re.Match[str]) -> Response:
        campaign = self.campaigns.get(match["id"])
        if campaign is None:
            return _missing()
        if campaign["status"] != "save":
            return problem(
                400, "Bad Request", "Cannot update the content of a sent campaign."
            )
        campaign["content"] = request.json() or {}
        return Response(200, {"html": campaign["content"].get("html", "")})

    def _ready(self, campaign: dict[str, Any]) -> Response | None:
        if campaign["status"] != "save":
            return problem(
                400,
                "Bad Request",
                f"This campaign cannot be sent: its status is {campaign['status']}.",
            )
        if not (campaign["content"] or {}).get("html"):
            return problem(
                400, "Bad Request", "Your Campaign is not ready to send: no content."
            )
        return None

    def _send(self, request: Request, match: re.Match[str]) -> Response:
        with self._state:
            campaign = self.campaigns.get(match["id"])
            if campaign is None:
                return _missing()
            refused = self._ready(campaign)
            if refused is not None:
                return refused
            campaign["status"] = "sent"
            campaign["send_time"] = _stamp()
            self.sends.append(campaign["id"])
        return Response(204)

    def _schedule(self, request: Request, match: re.Match[str]) -> Response:
        with self._state:
            campaign = self.campaigns.get(match["id"])
            if campaign is None:
                return _missing()
            refused = self._ready(campaign)
            if refused is not None:
                return refused
            campaign["status"] = "schedule"
            campaign["send_time"] = (request.json() or {}).get("schedule_time")
        return Response(204)

    # -------------------------------------------------------------- reports

    def _email_activity(self, request: Request, match: re.Match[str]) -> Response:
        if match["id"] not in self.campaigns:
            return _missing()
        try:
            since = _parse(request.param("since"))
        except ValueError:
            return problem(
                400, "Invalid Resource", "The since parameter is not a valid time."
            )
        with self._state:
            members = list(self.activity.get(match["id"], {}).values())
            found = []
            for member in members:
                activity = [
                    a
                    for a in member["activity"]
                    if since is None or _later(a["timestamp"], since)
                ]
                if activity:
                    found.append({**member, "activity": activity})
        return Response(
            200,
            {
                "emails": _page(request, found),
                "campaign_id": match["id"],
                "total_items": len(found),
            },
        )

    def _unsubscribed(self, request: Request, match: re.Match[str]) -> Response:
        if match["id"] not in self.campaigns:
            return _missing()
        with self._state:
            found = list(self.unsubscribes.get(match["id"], []))
        return Response(
            200,
            {
                "unsubscribes": _page(request, found),
                "campaign_id": match["id"],
                "total_items": len(found),
            },
        )

    def _list_members(self, request: Request, match: re.Match[str]) -> Response:
        audience = self._audience(match)
        if audience is None:
            return _missing()
        status = request.param("status")
        try:
            changed = _parse(request.param("since_last_changed"))
            unsubscribed = _parse(request.param("unsubscribed_since"))
        except ValueError:
            return problem(400, "Invalid Resource", "A time parameter is not valid.")
        if unsubscribed is not None and status != "unsubscribed":
            return problem(
                400,
                "Invalid Resource",
                "unsubscribed_since can only be used with status unsubscribed.",
            )
        after = changed or unsubscribed
        with self._state:
            found = [
                dict(m)
                for m in audience["members"].values()
                if (status is None or m.get("status") == status)
                and (after is None or _later(m.get("last_changed"), after))
            ]
        return Response(
            200,
            {
                "members": _page(request, found),
                "list_id": audience["id"],
                "total_items": len(found),
            },
        )


def subscriber_hash(email: str) -> str:
    """Return Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def _iso(when: datetime) -> str:
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _later(text: str | None, after: datetime) -> bool:
    try:
        when = _parse(text)
    except ValueError:
        return False
    return when is not None and when > after


def _page(request: Request, entries: list[Any]) -> list[Any]:
    offset = int(request.param("offset") or 0)
    count = int(request.param("count") or 10)
    return entries[offset : offset + count]


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
