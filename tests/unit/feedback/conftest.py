"""A store with customers and ledger rows, the ESP doubles, settings for both."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select

from nudge.delivery import RetryPolicy
from nudge.delivery.doubles import KlaviyoDouble, MailchimpDouble
from nudge.settings import Settings
from nudge.store.campaign_models import PlanRun
from nudge.store.feedback_models import EngagementEvent
from nudge.store.models import Customer
from nudge.store.send_models import Send

NOW = datetime(2026, 11, 30, 12, 0)
SENT = NOW - timedelta(days=1)
LIST = "a1b2c3d4e5"
SECRET = "test-signing-secret"
# Adapters that fail at once instead of retrying with real waits.
FAST = {"sleep": lambda seconds: None, "retry": RetryPolicy(attempts=1)}


class Ledger:
    """Customers and send ledger rows written straight into a test store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._numbers = itertools.count(1)
        with engine.begin() as conn:
            self.run_id = conn.execute(
                insert(PlanRun)
                .values(
                    created_at=SENT,
                    as_of=SENT,
                    campaigns=["winback"],
                    status="planned",
                    summary={},
                )
                .returning(PlanRun.id)
            ).scalar_one()

    def customer(
        self,
        email: str | None,
        *,
        consent_at: datetime | None = None,
        unsubscribed_at: datetime | None = None,
    ) -> int:
        """Store a consenting customer; return their id."""
        n = next(self._numbers)
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    insert(Customer)
                    .values(
                        external_id=f"c{n}",
                        email=email,
                        accepts_marketing=True,
                        consent_at=consent_at or NOW - timedelta(days=300),
                        unsubscribed_at=unsubscribed_at,
                        updated_at=NOW - timedelta(days=300),
                    )
                    .returning(Customer.id)
                ).scalar_one()
            )

    def send(
        self,
        customer_id: int,
        esp: str,
        *,
        key: str | None = None,
        job: str | None = None,
        esp_id: str | None = None,
        submitted: datetime = SENT,
        occurrence: str | None = None,
    ) -> tuple[int, str]:
        """Store an accepted send; return its row id and send key."""
        n = next(self._numbers)
        key = key or f"sk{n:06d}"
        with self.engine.begin() as conn:
            row = conn.execute(
                insert(Send)
                .values(
                    send_key=key,
                    plan_run_id=self.run_id,
                    campaign="winback",
                    customer_id=customer_id,
                    occurrence=occurrence or f"o{n}",
                    variant="a",
                    holdout=False,
                    esp=esp,
                    esp_id=esp_id,
                    esp_job_id=job,
                    status="accepted",
                    attempts=1,
                    due_at=submitted,
                    created_at=submitted,
                    updated_at=submitted,
                    submitted_at=submitted,
                )
                .returning(Send.id)
            ).scalar_one()
        return int(row), key

    def events(self, **where: Any) -> list[Any]:
        """Return the stored event rows, oldest first, filtered by column values."""
        table = EngagementEvent.__table__
        query = (
            select(table)
            .where(*[table.c[name] == value for name, value in where.items()])
            .order_by(table.c.occurred_at, table.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def customer_row(self, customer_id: int) -> Any:
        """Return a customer's row."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(Customer.__table__).where(Customer.id == customer_id)
            ).one()


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    """A ledger over the test's migrated store."""
    return Ledger(engine)


@pytest.fixture
def klaviyo() -> Iterator[KlaviyoDouble]:
    """A Klaviyo double on 127.0.0.1, stopped after the test."""
    with KlaviyoDouble() as double:
        assert isinstance(double, KlaviyoDouble)
        yield double


@pytest.fixture
def mailchimp() -> Iterator[MailchimpDouble]:
    """A Mailchimp double on 127.0.0.1, stopped after the test."""
    with MailchimpDouble(list_id=LIST) as double:
        assert isinstance(double, MailchimpDouble)
        yield double


def klaviyo_settings(settings: Settings, double: KlaviyoDouble) -> Settings:
    """Return settings pointing at the Klaviyo double."""
    return settings.model_copy(
        update={
            "klaviyo_base_url": double.url,
            "klaviyo_api_key": SecretStr(double.api_key),
        }
    )


def mailchimp_settings(settings: Settings, double: MailchimpDouble) -> Settings:
    """Return settings pointing at the Mailchimp double's audience."""
    return settings.model_copy(
        update={
            "mailchimp_base_url": double.url,
            "mailchimp_api_key": SecretStr(double.api_key),
            "mailchimp_list_id": LIST,
        }
    )
