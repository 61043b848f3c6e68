"""Mailchimp: members carry the run's products in merge fields; a campaign sends.

For each chunk, one batch operation upserts every member (``PUT`` with
``status_if_new``, so an unsubscribed member stays unsubscribed) with this run's
merge fields, and tags it with the run and variant; the operation ids are the
send ids. After the run, `send_campaign` creates one regular campaign per
variant to that tag's segment (found again by title on a retry), gives it the
template's HTML with merge tags, checks its status and only then sends or
schedules it, so that no retry can send it twice.

Known quirks of ``mailchimp-marketing`` 3.0.80 handled here: a 5xx or 204 with
an empty body comes back as a ``requests.Response`` instead of raising, a body
that is not JSON comes back as text, errors put their JSON in ``.text`` (as a
string when the type is ``application/problem+json``), and the client replaces
the text ``server`` anywhere in the URL with the data centre.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import requests
from mailchimp_marketing import Client
from mailchimp_marketing.api_client import ApiClientError

from nudge.delivery.base import (
    Accepted,
    Adapter,
    CampaignResult,
    CampaignSend,
    EspError,
    Outcome,
    Outgoing,
    Rejected,
    run_tag,
)
from nudge.errors import ConfigError
from nudge.settings import Settings

SLOTS = 4
MAX_MERGE_TEXT = 255
PAGE = 100
ITEM_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("TITLE", "title", "text"),
    ("URL", "url", "url"),
    ("IMAGE", "image_url", "imageurl"),
    ("PRICE", "price_display", "text"),
    ("REASON", "reason", "text"),
)
RUN_FIELDS: tuple[tuple[str, str], ...] = (
    ("SUBJECT", "Nudge subject"),
    ("PREHEADER", "Nudge preheader"),
    ("SENDID", "Nudge send id"),
    ("OFFERCODE", "Nudge offer code"),
    ("OFFERDESC", "Nudge offer"),
    ("OFFEREXP", "Nudge offer expiry"),
)
SENT = frozenset({"sent", "sending", "schedule"})


def subscriber_hash(email: str) -> str:
    """Return Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def merge_field_specs(slots: int = SLOTS) -> list[dict[str, Any]]:
    """Return the merge fields a nudge template needs, as Mailchimp creates them."""
    specs = [
        {"tag": tag, "name": name, "type": "text", "public": False}
        for tag, name in RUN_FIELDS
    ]
    for n in range(1, slots + 1):
        for suffix, _, kind in ITEM_FIELDS:
            specs.append(
                {
                    "tag": f"P{n}_{suffix}",
                    "name": f"Nudge product {n} {suffix.lower()}",
                    "type": kind,
                    "public": False,
                }
            )
    return specs


def _safe(value: str) -> str:
    # A merge value that holds a merge tag would be expanded by Mailchimp.
    return value.replace("*|", "*&#124;")


def merge_fields(message: Outgoing, slots: int = SLOTS) -> dict[str, str]:
    """Return the merge fields of one member for one send (empty ones clear)."""
    offer = message.offer
    fields = {
        "FNAME": message.first_name or "",
        "SUBJECT": message.message.subject,
        "PREHEADER": message.message.preheader,
        "SENDID": message.send_id,
        "OFFERCODE": offer.code if offer else "",
        "OFFERDESC": offer.description if offer else "",
        "OFFEREXP": offer.expires_display if offer else "",
    }
    for n in range(1, slots + 1):
        item = message.items[n - 1] if n <= len(message.items) else None
        for suffix, attribute, _ in ITEM_FIELDS:
            value = getattr(item, attribute) if item is not None else ""
            fields[f"P{n}_{suffix}"] = value or ""
    return {k: _safe(v) for k, v in fields.items()}


class MailchimpAdapter(Adapter):
    """Upsert and tag members through batch operations; send campaigns per variant."""

    name = "mailchimp"
    batch_size = 500
    sends_campaigns = True

    def __init__(
        self,
        api_key: str,
        *,
        list_id: str,
        base_url: str | None = None,
        slots: int = SLOTS,
        timeout: float = 30.0,
        poll_interval: float = 2.0,
        poll_limit: float = 900.0,
        from_name: str = "",
        reply_to: str = "",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.list_id = list_id
        self.slots = slots
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.poll_limit = poll_limit
        self.from_name = from_name
        self.reply_to = reply_to
        self.client = client(api_key, base_url, timeout)
        self._list_checked = False

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> MailchimpAdapter:
        """Return an adapter for the configured key, base URL and audience."""
        if settings.mailchimp_api_key is None:
            raise ConfigError(
                "a Mailchimp API key is needed; set NUDGE_MAILCHIMP_API_KEY",
                key="mailchimp_api_key",
            )
        options.setdefault("list_id", settings.mailchimp_list_id)
        if not options.get("list_id"):
            raise ConfigError(
                "the Mailchimp audience (list id) to send to is not set; set "
                "[mailchimp] list_id or NUDGE_MAILCHIMP_LIST_ID",
                key="mailchimp_list_id",
            )
        options.setdefault("from_name", settings.shop_name)
        return cls(
            settings.mailchimp_api_key.get_secret_value(),
            base_url=settings.mailchimp_base_url,
            **options,
        )

    # -------------------------------------------------------------- hooks

    def check(self, message: Outgoing) -> str | None:
        """Refuse a member whose merge field would exceed Mailchimp's 255 characters."""
        for tag, value in merge_fields(message, self.slots).items():
            if len(value) > MAX_MERGE_TEXT:
                return (
                    f"message too large: merge field {tag} is {len(value)} "
                    f"characters; Mailchimp allows {MAX_MERGE_TEXT}"
                )
        return None

    def send(self, chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        """Upsert and tag the chunk's members in one batch; read each result."""
        self._check_list()
        operations = []
        for message in chunk:
            operations.extend(self._operations(message))
        batch = self._ask(self.client.batches.start, {"operations": operations})
        finished = self._wait_for(str(batch["id"]))
        results = self._results(finished)

        # Every member missing at once means the audience went away mid-run:
        # say so once, for all of them, rather than 404 per message.
        if results and all(r.get("status_code") == 404 for r in results.values()):
            self._list_checked = False
            self._check_list()
        return self._outcomes(chunk, results)

    def translate(self, err: Exception) -> EspError:
        """Return the `EspError` for what the Mailchimp SDK or requests raised."""
        if isinstance(err, ApiClientError):
            return _client_error(err, self.timeout)
        if isinstance(err, requests.Timeout):
            return EspError(
                self.name, f"no answer within {self.timeout:g} s", kind="transient"
            )
        if isinstance(err, requests.RequestException):
            return EspError(self.name, f"connection failed: {err}", kind="transient")
        return super().translate(err)

    # -------------------------------------------------------------- requests

    def _ask(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Make one SDK call through the limiter and retries; return its JSON."""
        return self.call("api", _answer, fn, *args, **kwargs)

    def _check_list(self) -> None:
        if self._list_checked:
            return
        try:
            self._ask(self.client.lists.get_list, self.list_id, fields=["id", "name"])
        except EspError as err:
            if err.kind == "missing":
                raise EspError(
                    self.name,
                    f"audience {self.list_id} not found (deleted, or another "
                    f"account's?)",
                    status=err.status,
                    kind="missing",
                ) from err
            raise
        self._list_checked = True

    def _operations(self, message: Outgoing) -> list[dict[str, Any]]:
        path = f"/lists/{self.list_id}/members/{subscriber_hash(message.email)}"
        member = {
            "email_address": message.email,
            "status_if_new": "subscribed",
            "merge_fields": merge_fields(message, self.slots),
        }
        tags = {
            "tags": [
                {"name": run_tag(message.run_id, message.variant), "status": "active"}
            ]
        }
        return [
            {
                "method": "PUT",
                "path": path,
                "operation_id": f"{message.send_id}:member",
                "body": json.dumps(member),
            },
            {
                "method": "POST",
                "path": f"{path}/tags",
                "operation_id": f"{message.send_id}:tag",
                "body": json.dumps(tags),
            },
        ]

    def _wait_for(self, batch_id: str) -> dict[str, Any]:
        waited = 0.0
        while True:
            status: dict[str, Any] = self._ask(self.client.batches.status, batch_id)
            if status.get("status") == "finished":
                return status
            if waited >= self.poll_limit:
                raise EspError(
                    self.name,
                    f"batch {batch_id} not finished after {waited:.0f} s",
                    kind="transient",
                )
            self.sleep(self.poll_interval)
            waited += self.poll_interval

    def _results(self, batch: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        url = batch.get("response_body_url")
        if not url:
            raise EspError(
                self.name, "finished batch has no results link", kind="garbage"
            )
        archive = self.call("batch-results", _download, str(url), self.timeout)
        results: dict[str, dict[str, Any]] = {}
        for entry in _read_archive(archive):
            results[str(entry.get("operation_id"))] = entry
        return results

    def _outcomes(
        self, chunk: Sequence[Outgoing], results: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for message in chunk:
            member = results.get(f"{message.send_id}:member")
            tag = results.get(f"{message.send_id}:tag")
            failed = next(
                (r for r in (member, tag) if r is not None and r["status_code"] >= 300),
                None,
            )
            if failed is not None:
                status = int(failed["status_code"])
                if status == 429 or status >= 500:
                    continue  # left out: sent again with the others left out
                detail = _detail(_loads(failed.get("response")))
                outcomes[message.send_id] = Rejected(f"HTTP {status}: {detail}")
            elif member is not None and tag is not None:
                answer = _loads(member.get("response"))
                esp_id = answer.get("id") if isinstance(answer, dict) else None
                outcomes[message.send_id] = Accepted(
                    str(esp_id or subscriber_hash(message.email))
                )
        return outcomes

    # -------------------------------------------------------------- campaigns

    def send_campaign(self, campaign: CampaignSend) -> CampaignResult:
        """Create (or find) a variant's campaign, check its status, then send it."""
        self._check_list()
        segment = self._segment_id(campaign.tag)
        found = self._ask(self._find_or_create, campaign, segment)
        campaign_id = str(found["id"])

        # The status decides: a campaign that is sent, sending or scheduled is
        # never touched again, so a retried run cannot send it twice.
        state = self._ask(self.client.campaigns.get, campaign_id, fields=["status"])
        if state.get("status") in SENT:
            return CampaignResult(
                campaign.run_id, campaign.variant, "already_sent", esp_id=campaign_id
            )

        content: dict[str, Any] = {"html": campaign.html}
        if campaign.plain_text:
            content["plain_text"] = campaign.plain_text
        self._ask(self.client.campaigns.set_content, campaign_id, content)
        if campaign.schedule_at is not None:
            when = campaign.schedule_at.isoformat()
            self._ask(
                self.client.campaigns.schedule, campaign_id, {"schedule_time": when}
            )
            return CampaignResult(
                campaign.run_id, campaign.variant, "scheduled", esp_id=campaign_id
            )
        self._ask(self.client.campaigns.send, campaign_id)
        return CampaignResult(
            campaign.run_id, campaign.variant, "sent", esp_id=campaign_id
        )

    def _segment_id(self, tag: str) -> int:
        segments = self.call(
            "api",
            lambda: list(
                self._pages(
                    self.client.lists.list_segments,
                    "segments",
                    self.list_id,
                    type="static",
                )
            ),
        )
        for segment in segments:
            if segment.get("name") == tag:
                return int(segment["id"])
        raise EspError(
            self.name,
            f"no member carries the tag {tag}: deliver the run's messages first",
            kind="missing",
        )

    def _find_or_create(self, campaign: CampaignSend, segment: int) -> dict[str, Any]:
        # Looked up by title first, inside the retried unit: a create whose
        # answer was lost is found, not made again.
        for existing in self._pages(
            self.client.campaigns.list, "campaigns", list_id=self.list_id
        ):
            if existing.get("settings", {}).get("title") == campaign.title:
                return dict(existing)
        body = {
            "type": "regular",
            "recipients": {
                "list_id": self.list_id,
                "segment_opts": {"saved_segment_id": segment},
            },
            "settings": {
                "subject_line": campaign.subject or "*|SUBJECT|*",
                "preview_text": campaign.preheader or "*|PREHEADER|*",
                "title": campaign.title,
                "from_name": campaign.from_name or self.from_name,
                "reply_to": campaign.reply_to or self.reply_to,
            },
        }
        created: dict[str, Any] = _answer(self.client.campaigns.create, body)
        return created

    def _pages(
        self, fn: Callable[..., Any], key: str, *args: Any, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield every entry of a collection, page by page (offset and count)."""
        offset = 0
        while True:
            page = _answer(fn, *args, count=PAGE, offset=offset, **kwargs)
            entries = page.get(key) or []
            yield from entries
            offset += len(entries)
            if not entries or offset >= int(page.get("total_items") or 0):
                return

    # -------------------------------------------------------------- setup

    def ensure_merge_fields(self) -> tuple[list[str], list[str]]:
        """Create the merge fields nudge needs; return (created, already there)."""
        self._check_list()
        existing = {
            str(field.get("tag"))
            for field in self.call(
                "api",
                lambda: list(
                    self._pages(
                        self.client.lists.get_list_merge_fields,
                        "merge_fields",
                        self.list_id,
                    )
                ),
            )
        }
        created, present = [], []
        for spec in merge_field_specs(self.slots):
            if spec["tag"] in existing:
                present.append(spec["tag"])
                continue
            self._ask(self.client.lists.add_list_merge_field, self.list_id, spec)
            created.append(spec["tag"])
        return created, present


def client(api_key: str, base_url: str | None, timeout: float) -> Client:
    """Return the SDK client, pointed at a base URL when one is set."""
    sdk = Client()
    sdk.set_config({"api_key": api_key, "timeout": timeout})
    if base_url:
        sdk.api_client.host = base_url.rstrip("/") + "/3.0"
        # The client replaces "server" anywhere in the URL with the data centre;
        # naming the data centre "server" makes that a no-op for a proxy's URL.
        sdk.api_client.server = "server"
    return sdk


def _answer(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the SDK; return its JSON, None for an empty success, or raise."""
    answer = fn(*args, **kwargs)
    if isinstance(answer, requests.Response):
        if not answer.ok:
            raise EspError.from_status(
                "mailchimp", answer.status_code, "answered with an empty body"
            )
        if not answer.content:
            return None
        raise EspError(
            "mailchimp",
            f"answered {answer.status_code} with a body that is not JSON: "
            f"{answer.content[:60]!r}",
            status=answer.status_code,
            kind="garbage",
        )
    if isinstance(answer, str):
        raise EspError(
            "mailchimp",
            f"answered with a body that is not JSON: {answer[:60]!r}",
            kind="garbage",
        )
    return answer


def _download(url: str, timeout: float) -> bytes:
    response = requests.get(url, timeout=timeout)
    if not response.ok:
        raise EspError.from_status(
            "mailchimp", response.status_code, "batch results could not be fetched"
        )
    return response.content


def _read_archive(archive: bytes) -> Iterator[dict[str, Any]]:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                entries = json.loads(handle.read() or b"[]")
                yield from entries
    except (tarfile.TarError, ValueError, OSError) as err:
        raise EspError(
            "mailchimp",
            f"batch results are not a readable archive: {err}",
            kind="garbage",
        ) from err


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _detail(payload: Any) -> str:
    if isinstance(payload, dict):
        detail = str(payload.get("detail") or payload.get("title") or "no detail")
        errors = payload.get("errors")
        if isinstance(errors, list) and errors:
            fields = ", ".join(
                f"{e.get('field')}: {e.get('message')}" for e in errors[:3] if e
            )
            detail = f"{detail} ({fields})"
        return detail
    return str(payload)[:200] or "no detail"


def _client_error(err: ApiClientError, timeout: float) -> EspError:
    status = err.status_code
    if status is None:
        cause = err.text
        if isinstance(cause, requests.Timeout):
            return EspError("mailchimp", f"no answer within {timeout:g} s")
        return EspError("mailchimp", f"connection failed: {cause}")
    payload = _loads(err.text)
    if isinstance(payload, dict):
        detail = _detail(payload)
    else:
        detail = f"answered with a body that is not JSON: {str(payload)[:60]!r}"
    if status == 401:
        detail = f"the API key was refused ({detail})"
    failure = EspError.from_status("mailchimp", int(status), detail)
    failure.payload = payload
    return failure
