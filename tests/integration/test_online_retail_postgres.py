"""The full Online Retail II file against the real PostgreSQL server."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from nudge.settings import Settings
from tests.conftest import ONLINE_RETAIL, needs_shared
from tests.unit.ingest.test_online_retail_file import check_online_retail


@needs_shared(ONLINE_RETAIL)
@pytest.mark.integration
@pytest.mark.shared_data
def test_online_retail_on_postgres(pg_engine: Engine, settings: Settings) -> None:
    check_online_retail(pg_engine, settings)
