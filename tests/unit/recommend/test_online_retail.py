"""Online Retail II: the shipped (tuned) blend beats every single strategy.

Protocol: import the whole file; fit every strategy and the blend on the
placed purchases before 2011-09-01; score the 28 days after it, full ranking,
k = 10, on both tasks (all products; products new to the customer).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from sqlalchemy import Engine

from nudge.ingest.importer import Importer
from nudge.recommend import RecommendConfig
from nudge.recommend.service import RecommendService
from nudge.settings import Settings
from tests.conftest import ONLINE_RETAIL, needs_shared

CUTOFF = datetime(2011, 9, 1)
QUALITY = ("ndcg", "recall", "hit_rate", "map")


@needs_shared(ONLINE_RETAIL)
@pytest.mark.shared_data
def test_the_tuned_blend_beats_every_strategy_on_both_tasks(
    engine: Engine, settings: Settings
) -> None:
    fast = settings.model_copy(update={"import_chunk_rows": 100_000})
    Importer(engine, fast).run("orders", ONLINE_RETAIL, "online-retail")
    service = RecommendService(engine, fast, RecommendConfig())
    report = service.evaluate(CUTOFF, k=10, window_days=28)
    table: pd.DataFrame = report.table

    for task in ("all", "new"):
        rows = table[table["task"] == task].set_index("strategy")
        blend = rows.loc["blend"]
        singles = rows.drop(index="blend")
        assert rows["customers"].iloc[0] > 800
        for metric in QUALITY:
            assert blend[metric] > singles[metric].max(), (task, metric)

    # The strong baselines, by name: own most-bought (all), ALS (new).
    everything = table[table["task"] == "all"].set_index("strategy")["ndcg"]
    assert everything["blend"] > everything["most_bought"] + 0.01
    new_only = table[table["task"] == "new"].set_index("strategy")["ndcg"]
    assert new_only["blend"] > new_only["als"] + 0.01
