"""The full Online Retail II file: no silent loss, and a second run adds nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from nudge.ingest.importer import Importer
from nudge.settings import Settings
from nudge.store.models import Customer, Order, OrderLine
from tests.conftest import ONLINE_RETAIL, needs_shared

# Figures of the shared file (../shared/data/README.md).
LINES = 1_044_847
CUSTOMERS = 5_942


def check_online_retail(engine: Engine, settings: Settings) -> None:
    """Import the file twice and check the counts against the file's own figures."""
    importer = Importer(
        engine, settings.model_copy(update={"import_chunk_rows": 100_000})
    )
    first = importer.run("orders", ONLINE_RETAIL, "online-retail").counts

    lines = first["orders"]
    assert lines.read == LINES
    assert lines.read == lines.inserted + lines.rejected
    assert lines.rejected > 0
    assert first["customers"].inserted == CUSTOMERS

    with engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(OrderLine))
        guests = conn.scalar(
            select(func.count()).select_from(Order).where(Order.customer_id.is_(None))
        )
        cancelled = conn.scalar(
            select(func.count()).select_from(Order).where(Order.status == "cancelled")
        )
        no_consent = conn.scalar(
            select(func.count())
            .select_from(Customer)
            .where(~Customer.accepts_marketing)
        )
    assert stored == lines.inserted
    assert guests and guests > 1000  # guest invoices stay, for popularity
    assert cancelled and cancelled > 0
    assert no_consent == CUSTOMERS  # an order is no marketing consent

    second = importer.run("orders", ONLINE_RETAIL, "online-retail").counts
    assert second["orders"].inserted == 0
    assert second["orders"].updated == 0
    assert second["orders"].unchanged == lines.inserted
    assert second["customers"].inserted == 0
    assert second["invoices"].inserted == 0


@needs_shared(ONLINE_RETAIL)
@pytest.mark.shared_data
def test_online_retail_on_sqlite(engine: Engine, settings: Settings) -> None:
    check_online_retail(engine, settings)
