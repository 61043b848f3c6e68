"""The closed loop on the synthetic shop: send, simulated customers act, nudge learns.

The simulation hides the truth: variant b of picked_for_you is clicked three
times as often as a, and picked_for_you e-mails make customers buy, while
new_arrivals e-mails change nothing. Over four weekly rounds the planner must
move sends toward b, and the report must find picked_for_you's uplift with an
interval above zero and call new_arrivals' not significant.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from nudge.demo.engagement import Truth, weekly_rounds
from nudge.demo.synth import generate_shop, write_csv
from nudge.feedback.attribution import ALL_VARIANTS, NOT_YET, SIGNIFICANT
from nudge.feedback.report import build_report
from nudge.ingest.importer import Importer
from nudge.settings import Settings
from nudge.store.db import make_engine, upgrade

REPO = Path(__file__).resolve().parents[3]
TRUTH = Truth(
    variant_lift={("picked_for_you", "a"): 0.7, ("picked_for_you", "b"): 2.1},
    campaign_effect={"picked_for_you": 0.08},
)


def test_four_weeks_move_sends_to_the_better_variant_and_find_the_real_uplift(
    tmp_path: Path,
) -> None:
    settings = Settings(
        home=REPO,
        database_url=f"sqlite:///{tmp_path / 'nudge.db'}",
        var_dir=tmp_path / "var",
        outbox_dir=tmp_path / "outbox",
        signing_secret=SecretStr("loop-secret"),
    )
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    shop = generate_shop(seed=11, customers=2000, products=200)
    files = write_csv(shop, tmp_path / "csv")
    importer = Importer(engine, settings)
    for kind in ("products", "customers", "orders", "events"):
        importer.run(kind, files[kind])

    rounds = weekly_rounds(
        engine,
        settings,
        shop,
        ["picked_for_you", "new_arrivals"],
        TRUTH,
        weeks=4,
        seed=5,
    )

    def share_of_b(week: int) -> float:
        sent = rounds[week].variants["picked_for_you"]
        return sent.get("b", 0) / sum(sent.values())

    assert 0.4 < share_of_b(0) < 0.6  # no evidence yet: an even split
    assert share_of_b(3) > 0.8  # the bandit found b
    assert share_of_b(3) < 0.95  # ... and still explores a

    report = build_report(engine, settings, now=rounds[-1].as_of + timedelta(days=7))
    effects = {(e.campaign, e.variant): e for e in report.effects}
    real = effects[("picked_for_you", ALL_VARIANTS)]
    assert real.verdict == SIGNIFICANT
    assert real.revenue_uplift.low > 0 and real.conversion_uplift.low > 0
    assert real.treated_rate > real.control_rate

    none = effects[("new_arrivals", ALL_VARIANTS)]
    assert none.control > 30 and none.treated > 300
    assert none.verdict == NOT_YET
    assert none.revenue_uplift.low < 0 < none.revenue_uplift.high
    engine.dispose()
