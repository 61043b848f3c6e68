"""Messages to deliver, the ESP doubles, and the published specs they are held to."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nudge.delivery import Outgoing
from nudge.delivery.doubles import KlaviyoDouble, MailchimpDouble
from nudge.render import Renderer, fixture_request
from nudge.render.model import Esp

REPO = Path(__file__).resolve().parents[3]
SPECS = REPO.parent / "shared" / "specs"
KLAVIYO_SPEC = SPECS / "klaviyo-openapi-stable.json"
MAILCHIMP_SPEC = SPECS / "mailchimp-marketing-openapi.json"
CONSENTED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

MessageFactory = Callable[..., list[Outgoing]]


def needs_spec(path: Path) -> pytest.MarkDecorator:
    """Skip where the shared specs are absent (a user's checkout; CI has them)."""
    return pytest.mark.skipif(
        not path.is_file(), reason=f"{path} not found (../shared/specs is absent)"
    )


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    """A renderer of the shipped templates."""
    return Renderer(REPO / "email_templates", signing_secret="test-secret")


def make_messages(
    renderer: Renderer,
    esp: Esp,
    count: int,
    *,
    prefix: str = "snd",
    run_id: str = "run1",
    products: int = 3,
    push_consent: bool = False,
) -> list[Outgoing]:
    """Render `count` distinct sends of the winback template for an ESP."""
    base = fixture_request("winback", esp=esp, products=products)
    messages = []
    for n in range(count):
        request = dataclasses.replace(
            base,
            send_id=f"{prefix}{n:05d}",
            recipient=dataclasses.replace(
                base.recipient, customer_id=n, email=f"customer{n}@example.com"
            ),
        )
        messages.append(
            Outgoing.from_render(
                request,
                renderer.render(request),
                run_id=run_id,
                consented_at=CONSENTED,
                push_consent=push_consent,
            )
        )
    return messages


@pytest.fixture
def messages(renderer: Renderer) -> MessageFactory:
    """Return a factory of rendered sends: `messages(esp, count, ...)`."""

    def factory(esp: Esp, count: int = 5, **options: object) -> list[Outgoing]:
        return make_messages(renderer, esp, count, **options)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def klaviyo() -> Iterator[KlaviyoDouble]:
    """A Klaviyo double on 127.0.0.1, stopped after the test."""
    with KlaviyoDouble() as double:
        assert isinstance(double, KlaviyoDouble)
        yield double


@pytest.fixture
def mailchimp() -> Iterator[MailchimpDouble]:
    """A Mailchimp double on 127.0.0.1, stopped after the test."""
    with MailchimpDouble() as double:
        assert isinstance(double, MailchimpDouble)
        yield double


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock whose `sleep` advances it."""
    return FakeClock()
