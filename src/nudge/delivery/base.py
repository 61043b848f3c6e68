"""The base adapter: one send flow that every ESP module fills in with translation.

`Adapter.deliver(batch)` decides what is sent (consent, sends already made, sizes),
cuts the batch into the ESP's request sizes, limits the request rate, retries
what can be retried and returns one `Result` per message for the send ledger.
An ESP module implements `send(chunk)`, turning messages into that ESP's calls
(each made through `call`, which owns the limiter and the retries) and its
answers into an `Accepted` or `Rejected` per message.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from nudge.delivery.limits import Clock, Limiter, Sleep, shared
from nudge.errors import NudgeError
from nudge.logging import get_logger
from nudge.render.model import Item, Offer, RenderedMessage, RenderRequest
from nudge.render.templates import fill_context, money

log = get_logger(__name__)

T = TypeVar("T")
Status = Literal["accepted", "failed", "suppressed"]
ErrorKind = Literal["throttled", "transient", "payload", "auth", "missing", "garbage"]
RETRYABLE: frozenset[str] = frozenset({"throttled", "transient", "garbage"})


# ------------------------------------------------------------------ errors


class DeliveryError(NudgeError):
    """Root of the errors raised while handing messages to an ESP."""


class EspError(DeliveryError):
    """An ESP refused or failed a request; names the ESP and the HTTP status.

    ``kind`` says what may follow: ``throttled`` and ``transient`` (5xx,
    timeouts, dropped connections) and ``garbage`` (an answer that cannot be
    read) are retried; ``payload`` (4xx about what was sent) is split to find
    the message at fault; ``auth`` and ``missing`` fail the whole request.
    ``payload`` keeps the ESP's parsed answer.
    """

    def __init__(
        self,
        esp: str,
        reason: str,
        *,
        status: int | None = None,
        kind: ErrorKind = "transient",
        retry_after: float | None = None,
        payload: Any = None,
        protocol: str = "HTTP",
    ) -> None:
        where = f"{esp} {protocol} {status}" if status else esp
        super().__init__(f"{where}: {reason}")
        self.esp = esp
        self.reason = reason
        self.status = status
        self.kind = kind
        self.retry_after = retry_after
        self.payload = payload

    @property
    def retryable(self) -> bool:
        """Tell whether the same request may succeed if sent again."""
        return self.kind in RETRYABLE

    @property
    def splittable(self) -> bool:
        """Tell whether a smaller request without the faulty message may pass."""
        return self.kind == "payload"

    @classmethod
    def from_status(
        cls,
        esp: str,
        status: int,
        detail: str,
        *,
        retry_after: float | None = None,
    ) -> EspError:
        """Return the error for an HTTP status, classified by what may follow."""
        kind: ErrorKind
        if status == 429:
            kind = "throttled"
        elif status >= 500 or status in (0, 408):
            kind = "transient"
        elif status in (401, 403):
            kind = "auth"
        elif status in (404, 410):
            kind = "missing"
        else:
            kind = "payload"
        return cls(esp, detail, status=status, kind=kind, retry_after=retry_after)


class UnsupportedFeature(DeliveryError):
    """An ESP cannot do what was asked; names the ESP and the feature."""

    def __init__(self, esp: str, feature: str) -> None:
        super().__init__(f"{esp} does not support {feature}")
        self.esp = esp
        self.feature = feature


# ------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class ItemData:
    """One product as the ESP's own template shows it: links already tagged."""

    product_id: int
    title: str
    url: str
    image_url: str | None
    price: float | None
    price_display: str
    currency: str
    reason: str

    @classmethod
    def from_item(
        cls, item: Item, *, url: str | None = None, image_url: str | None = None
    ) -> ItemData:
        """Return the ESP view of a render `Item`, optionally with absolute links."""
        price = float(item.price) if isinstance(item.price, Decimal) else item.price
        return cls(
            product_id=item.product_id,
            title=item.title,
            url=url or item.url,
            image_url=image_url or item.image_url,
            price=price,
            price_display=money(item.price, item.currency),
            currency=item.currency,
            reason=item.reason,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the item as plain JSON-ready data."""
        return {
            "product_id": self.product_id,
            "title": self.title,
            "url": self.url,
            "image_url": self.image_url,
            "price": self.price,
            "price_display": self.price_display,
            "currency": self.currency,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class OfferData:
    """The offer of a send as plain data."""

    code: str
    description: str
    expires_at: datetime | None = None

    @classmethod
    def from_offer(cls, offer: Offer | None) -> OfferData | None:
        """Return the plain view of a render `Offer`, or None without one."""
        if offer is None:
            return None
        return cls(offer.code, offer.description, offer.expires_at)

    @property
    def expires_display(self) -> str:
        """Return the expiry as the e-mail shows it ("Friday 3 May")."""
        when = self.expires_at
        return f"{when:%A} {when.day} {when:%B}" if when else ""

    def as_dict(self) -> dict[str, Any]:
        """Return the offer as plain JSON-ready data (times as ISO 8601 text)."""
        return {
            "code": self.code,
            "description": self.description,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "expires_display": self.expires_display,
        }


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One e-mail to hand to an ESP, as the send ledger describes it.

    ``send_id`` is the ledger row's id and the idempotency key of every ESP
    call (Klaviyo ``unique_id``, Mailchimp ``operation_id``, the SMTP
    ``Message-ID``). ``consented_at`` None means no marketing consent: the
    message is suppressed. ``push_consent`` asks the ESP to record the consent
    (Klaviyo's subscribe call lifts an ESP-side unsubscribe, so the ledger sets
    it only for consent newer than the ESP's last sync).
    """

    send_id: str
    run_id: str
    campaign: str
    variant: str
    email: str
    customer_id: str
    message: RenderedMessage
    consented_at: datetime | None
    first_name: str | None = None
    items: tuple[ItemData, ...] = ()
    offer: OfferData | None = None
    push_consent: bool = False
    # The shop's own customer id: what an ESP profile's external id is, as the
    # shop's own integration (Shopify, WooCommerce) sets it.
    external_id: str | None = None

    @property
    def idempotency_key(self) -> str:
        """Return the key every ESP call for this message carries."""
        return self.send_id

    @classmethod
    def from_render(
        cls,
        request: RenderRequest,
        message: RenderedMessage,
        *,
        run_id: str,
        consented_at: datetime | None,
        push_consent: bool = False,
        external_id: str | None = None,
    ) -> Outgoing:
        """Return the record of a rendered send, its product links tagged."""
        context = fill_context(request, message.unsubscribe_url)
        items = tuple(
            ItemData.from_item(item, url=view["url"], image_url=view["image_url"])
            for item, view in zip(request.items, context["items"], strict=True)
        )
        recipient = request.recipient
        return cls(
            send_id=request.send_id,
            run_id=run_id,
            campaign=request.campaign,
            variant=request.variant,
            email=recipient.email,
            customer_id=str(recipient.customer_id),
            message=message,
            consented_at=consented_at,
            first_name=recipient.first_name,
            items=items,
            offer=OfferData.from_offer(request.offer),
            push_consent=push_consent,
            external_id=external_id,
        )


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one message, for its send ledger row."""

    send_id: str
    esp: str
    status: Status
    esp_id: str | None = None
    attempts: int = 0
    error: str | None = None
    permanent: bool = False
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        """Tell whether the ESP has the message."""
        return self.status == "accepted"


@dataclass(frozen=True, slots=True)
class Accepted:
    """An ESP took a message; ``duplicate`` when it already had it."""

    esp_id: str | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """An ESP refused one message, with a reason a person can read."""

    reason: str
    permanent: bool = True


Outcome = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class CampaignSend:
    """One variant of a run that an ESP sends as a campaign (Mailchimp)."""

    run_id: str
    campaign: str
    variant: str
    html: str
    subject: str
    preheader: str = ""
    from_name: str = ""
    reply_to: str = ""
    schedule_at: datetime | None = None
    plain_text: str | None = None

    @property
    def tag(self) -> str:
        """Return the name of the tag (segment) of this run and variant."""
        return run_tag(self.run_id, self.variant)

    @property
    def title(self) -> str:
        """Return the campaign's title in the ESP, also its idempotency key."""
        return f"nudge {self.campaign} {self.run_id} {self.variant}"


CampaignStatus = Literal["sent", "scheduled", "already_sent", "failed"]


@dataclass(frozen=True, slots=True)
class CampaignResult:
    """What became of one campaign send."""

    run_id: str
    variant: str
    status: CampaignStatus
    esp_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried.

    Waits grow from ``initial`` seconds by doubling, up to ``max_wait``, plus up
    to ``jitter`` seconds at random; a 429's ``Retry-After`` is waited instead,
    unless it exceeds ``max_retry_after`` (then the request fails for now and
    the ledger retries it in a later run).
    """

    attempts: int = 5
    initial: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0
    max_resends: int = 3


def run_tag(run_id: str, variant: str) -> str:
    """Return the ESP tag (segment) name of a run's variant."""
    return f"nudge-{run_id}-{variant}"


LedgerCheck = Callable[[Sequence[str]], Mapping[str, str | None]]


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """Yield consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------ adapter


class Adapter(ABC):
    """Deliver batches of messages through one ESP.

    A subclass sets ``name`` and ``batch_size``, implements ``send`` (and
    ``translate`` for its SDK's exceptions) and may override ``check``,
    ``sent_before``, ``send_campaign`` and ``close``. It makes every ESP request
    through ``call`` so that the limiter and the retries apply. An adapter is
    used by one thread at a time; its limiter is shared by the process.
    """

    name: ClassVar[str]
    batch_size: int = 1_000
    sends_campaigns: ClassVar[bool] = False

    def __init__(
        self,
        *,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        ledger: LedgerCheck | None = None,
        rng: random.Random | None = None,
        batch_size: int | None = None,
    ) -> None:
        if batch_size is not None:
            self.batch_size = batch_size
        self.limiter = limiter if limiter is not None else shared(self.name)
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.ledger = ledger
        self.rng = rng or random.Random()
        self._tries = 0

    # -------------------------------------------------------------- hooks

    @abstractmethod
    def send(self, chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        """Hand a chunk to the ESP; return an outcome for each message it settled.

        A message left out is sent again (with the others left out); raise
        `EspError` when the whole request failed.
        """

    def translate(self, err: Exception) -> EspError:
        """Return the `EspError` for an exception the ESP's SDK raised."""
        if isinstance(err, TimeoutError):
            return EspError(self.name, f"timed out: {err}", kind="transient")
        if isinstance(err, ConnectionError | OSError):
            return EspError(self.name, f"connection failed: {err}", kind="transient")
        raise err

    def check(self, message: Outgoing) -> str | None:
        """Return why the ESP would refuse a message outright, or None."""
        return None

    def sent_before(self, messages: Sequence[Outgoing]) -> Mapping[str, str | None]:
        """Return the send ids of the messages the ESP already has, with ESP ids."""
        return {}

    def send_campaign(self, campaign: CampaignSend) -> CampaignResult:
        """Send or schedule one variant's campaign (only ESPs that send by campaign)."""
        raise UnsupportedFeature(self.name, "campaign sends")

    def close(self) -> None:
        """Release connections; the adapter may be used again afterwards."""
        return None

    # -------------------------------------------------------------- the flow

    def deliver(self, batch: Sequence[Outgoing]) -> list[Result]:
        """Deliver a batch; return one result per message, in the batch's order."""
        started = self.clock()
        results: dict[str, Result] = {}
        pending: list[Outgoing] = []
        seen: set[str] = set()
        for message in batch:
            if message.send_id in seen:
                continue
            seen.add(message.send_id)
            early = self._screen(message)
            if early is None:
                pending.append(message)
            else:
                results[message.send_id] = early

        # What the ledger or the ESP already holds is never sent again.
        done = self._already_sent(pending)
        for send_id, esp_id in done.items():
            results[send_id] = Result(
                send_id, self.name, "accepted", esp_id=esp_id, duplicate=True
            )
        pending = [m for m in pending if m.send_id not in done]

        for chunk in chunks(pending, self.batch_size):
            results.update(self._deliver_chunk(chunk, {}, resends=0))

        ordered = [results[m.send_id] for m in batch]
        counts = {s: 0 for s in ("accepted", "failed", "suppressed")}
        for result in results.values():
            counts[result.status] += 1
        log.info(
            "batch delivered",
            esp=self.name,
            messages=len(results),
            seconds=round(self.clock() - started, 3),
            **counts,
        )
        return ordered

    def _screen(self, message: Outgoing) -> Result | None:
        if message.consented_at is None:
            return Result(
                message.send_id,
                self.name,
                "suppressed",
                error="no marketing consent",
                permanent=True,
            )
        reason = self.check(message)
        if reason is not None:
            return Result(
                message.send_id,
                self.name,
                "failed",
                error=f"{self.name}: {reason}",
                permanent=True,
            )
        return None

    def _already_sent(self, messages: Sequence[Outgoing]) -> dict[str, str | None]:
        if not messages:
            return {}
        done: dict[str, str | None] = {}
        if self.ledger is not None:
            done.update(self.ledger([m.send_id for m in messages]))
        rest = [m for m in messages if m.send_id not in done]
        if rest:
            done.update(self.sent_before(rest))
        return done

    def _deliver_chunk(
        self, chunk: Sequence[Outgoing], tries: dict[str, int], *, resends: int
    ) -> dict[str, Result]:
        self._tries = 0
        try:
            outcomes = self.send(chunk)
        except EspError as err:
            for m in chunk:
                tries[m.send_id] = tries.get(m.send_id, 0) + 1 + self._tries
            return self._after_failure(chunk, err, tries, resends=resends)
        for m in chunk:
            tries[m.send_id] = tries.get(m.send_id, 0) + 1 + self._tries

        results: dict[str, Result] = {}
        unsettled: list[Outgoing] = []
        for m in chunk:
            outcome = outcomes.get(m.send_id)
            if outcome is None:
                unsettled.append(m)
            else:
                results[m.send_id] = self._result(m, outcome, tries)

        # The ESP refused the request for some messages only: the others were
        # not taken and go again without them.
        if unsettled and resends < self.retry.max_resends:
            results.update(self._deliver_chunk(unsettled, tries, resends=resends + 1))
        else:
            for m in unsettled:
                results[m.send_id] = Result(
                    m.send_id,
                    self.name,
                    "failed",
                    attempts=tries[m.send_id],
                    error=f"{self.name} gave no answer for this message",
                )
        return results

    def _after_failure(
        self,
        chunk: Sequence[Outgoing],
        err: EspError,
        tries: dict[str, int],
        *,
        resends: int,
    ) -> dict[str, Result]:
        # A payload error on a request of many messages is one message's fault
        # as a rule: halving finds it in log2(n) requests and sends the rest.
        if err.splittable and len(chunk) > 1:
            half = len(chunk) // 2
            results = self._deliver_chunk(chunk[:half], tries, resends=resends)
            results.update(self._deliver_chunk(chunk[half:], tries, resends=resends))
            return results
        permanent = not err.retryable
        log.warning(
            "request failed",
            esp=self.name,
            status=err.status,
            kind=err.kind,
            messages=len(chunk),
        )
        return {
            m.send_id: Result(
                m.send_id,
                self.name,
                "failed",
                attempts=tries[m.send_id],
                error=str(err),
                permanent=permanent,
            )
            for m in chunk
        }

    def _result(
        self, message: Outgoing, outcome: Outcome, tries: Mapping[str, int]
    ) -> Result:
        attempts = tries[message.send_id]
        if isinstance(outcome, Accepted):
            return Result(
                message.send_id,
                self.name,
                "accepted",
                esp_id=outcome.esp_id,
                attempts=attempts,
                duplicate=outcome.duplicate,
            )
        return Result(
            message.send_id,
            self.name,
            "failed",
            attempts=attempts,
            error=f"{self.name}: {outcome.reason}",
            permanent=outcome.permanent,
        )

    # -------------------------------------------------------------- requests

    def call(self, endpoint: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Make one ESP request within the endpoint's limits, retrying what may pass.

        Exceptions other than `EspError` go through `translate`; a retryable
        error is retried after its ``Retry-After`` or an exponential, jittered
        backoff, up to the policy's attempts.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            sleep=self.sleep,
            before_sleep=self._before_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.limiter.acquire(endpoint)
                with self.limiter.slot(endpoint):
                    try:
                        return fn(*args, **kwargs)
                    except EspError:
                        raise
                    except Exception as err:
                        raise self.translate(err) from err
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _retryable(self, err: BaseException) -> bool:
        if not isinstance(err, EspError) or not err.retryable:
            return False
        wait = err.retry_after
        return wait is None or wait <= self.retry.max_retry_after

    def _wait(self, state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        if isinstance(err, EspError) and err.retry_after is not None:
            return err.retry_after
        policy = self.retry
        backoff: float = policy.initial * 2.0 ** (state.attempt_number - 1)
        return min(backoff, policy.max_wait) + self.rng.uniform(0, policy.jitter)

    def _before_retry(self, state: RetryCallState) -> None:
        self._tries += 1
        err = state.outcome.exception() if state.outcome else None
        log.info(
            "request retried",
            esp=self.name,
            attempt=state.attempt_number,
            status=getattr(err, "status", None),
            kind=getattr(err, "kind", None),
            wait=round(state.upcoming_sleep, 3),
        )

    # -------------------------------------------------------------- campaigns

    def send_campaigns(self, campaigns: Sequence[CampaignSend]) -> list[CampaignResult]:
        """Send each variant's campaign where the ESP sends by campaign; else none."""
        if not self.sends_campaigns:
            return []
        results = []
        for campaign in campaigns:
            try:
                results.append(self.send_campaign(campaign))
            except EspError as err:
                results.append(
                    CampaignResult(
                        campaign.run_id, campaign.variant, "failed", error=str(err)
                    )
                )
        return results
