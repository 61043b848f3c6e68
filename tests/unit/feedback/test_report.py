"""The report's numbers on a small store filled by hand, its JSON and its HTML."""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from nudge.feedback.attribution import NOT_YET
from nudge.feedback.events import FeedbackError
from nudge.feedback.report import Report, build_report, nice_ticks
from nudge.settings import Settings
from nudge.store.campaign_models import PlanRun
from nudge.store.feedback_models import EngagementEvent
from nudge.store.insight_models import CustomerProfile
from nudge.store.models import Customer, Order, OrderLine, Product
from nudge.store.send_models import Send

T0 = datetime(2026, 6, 1, 9, 0)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
NOW = T0 + 10 * DAY
ODD = 'spring <sale> & "more"'


class Shop:
    """Customers, plan runs, sends, events, orders and profiles written directly."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._n = itertools.count(1)
        with engine.begin() as conn:
            self.product = conn.execute(
                insert(Product)
                .values(external_id="p1", title="Mug", updated_at=T0)
                .returning(Product.id)
            ).scalar_one()

    def _insert(self, model: Any, **values: Any) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    insert(model).values(**values).returning(model.id)
                ).scalar_one()
            )

    def customer(self) -> int:
        n = next(self._n)
        return self._insert(
            Customer,
            external_id=f"c{n}",
            email=f"c{n}@example.com",
            accepts_marketing=True,
            updated_at=T0 - 100 * DAY,
        )

    def run(self, as_of: datetime, *campaigns: str, status: str = "planned") -> int:
        return self._insert(
            PlanRun,
            created_at=as_of,
            as_of=as_of,
            campaigns=list(campaigns),
            status=status,
            summary={},
        )

    def send(
        self,
        run: int,
        campaign: str,
        customer: int,
        *,
        variant: str | None = "a",
        holdout: bool = False,
        status: str = "accepted",
        due: datetime = T0,
        approval: bool = False,
    ) -> int:
        n = next(self._n)
        return self._insert(
            Send,
            send_key=f"sk{n:08d}",
            plan_run_id=run,
            campaign=campaign,
            customer_id=customer,
            occurrence=f"o{n}",
            variant=variant,
            holdout=holdout,
            approval_required=approval,
            esp="outbox",
            status="suppressed" if holdout else status,
            error="holdout: control group" if holdout else None,
            attempts=0 if holdout else 1,
            due_at=due,
            created_at=due - HOUR,
            updated_at=due,
        )

    def event(
        self, send: int, kind: str, at: datetime, *, machine_open: bool = False
    ) -> int:
        n = next(self._n)
        return self._insert(
            EngagementEvent,
            esp="outbox",
            esp_event_id=f"e{n}",
            kind=kind,
            occurred_at=at,
            send_id=send,
            machine_open=machine_open,
            raw={},
            received_at=at,
        )

    def order(
        self,
        customer: int,
        at: datetime,
        *lines: tuple[int, float, str],
        status: str = "placed",
    ) -> int:
        n = next(self._n)
        order = self._insert(
            Order,
            external_id=f"o{n}",
            customer_id=customer,
            ordered_at=at,
            status=status,
            updated_at=at,
        )
        with self.engine.begin() as conn:
            for line_no, (quantity, price, line_status) in enumerate(lines, 1):
                conn.execute(
                    insert(OrderLine).values(
                        order_id=order,
                        line_no=line_no,
                        product_id=self.product,
                        quantity=quantity,
                        unit_price=price,
                        status=line_status,
                    )
                )
        return order

    def profile(self, customer: int, as_of: datetime, segment: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(CustomerProfile).values(
                    customer_id=customer,
                    as_of=as_of,
                    first_order_at=as_of - 300 * DAY,
                    last_order_at=as_of - 30 * DAY,
                    recency_days=30,
                    frequency=3,
                    orders=3,
                    monetary=60.0,
                    avg_order_value=20.0,
                    tenure_days=300,
                    r_score=3,
                    f_score=3,
                    m_score=3,
                    segment=segment,
                    stage="active",
                    stage_rule="test",
                    model_used="heuristic",
                    p_alive=0.5,
                    churn_risk=0.5,
                    churn_band="medium",
                    clv=50.0,
                    expected_next_order_at=None,
                    typical_gap_days=30.0,
                    affinities={},
                    refreshed_at=as_of,
                )
            )


@pytest.fixture
def shop(engine: Engine) -> Shop:
    """An empty shop over the test's migrated store."""
    return Shop(engine)


@pytest.fixture
def filled(shop: Shop) -> Shop:
    """The shop of `fill`."""
    return fill(shop)


def fill(shop: Shop) -> Shop:
    """Two campaigns: winback (variants a, b and a holdout) and arrivals.

    c1 clicks winback then, a day later, arrivals: the first order goes to
    winback, the second to arrivals (the last click). c2 only machine-opens,
    c3 opens and unsubscribes, c4 bounces, c5 is in the holdout, c6 failed.
    """
    c = {i: shop.customer() for i in range(1, 8)}
    run = shop.run(T0, "winback")
    s1 = shop.send(run, "winback", c[1], variant="a")
    s2 = shop.send(run, "winback", c[2], variant="a")
    s3 = shop.send(run, "winback", c[3], variant="b")
    s4 = shop.send(run, "winback", c[4], variant="b")
    shop.send(run, "winback", c[5], variant="a", holdout=True)
    shop.send(run, "winback", c[6], variant="b", status="failed")

    shop.event(s1, "open", T0 + HOUR)
    shop.event(s1, "click", T0 + 2 * HOUR)
    shop.event(s1, "click", T0 + 3 * HOUR)
    shop.event(s2, "open", T0 + 5 * timedelta(minutes=1), machine_open=True)
    shop.event(s3, "open", T0 + 3 * HOUR)
    shop.event(s3, "unsubscribe", T0 + 3 * HOUR)
    shop.event(s4, "bounce_hard", T0 + timedelta(minutes=1))

    shop.order(c[1], T0 + DAY, (2, 10.0, "placed"), (1, 5.0, "cancelled"))
    shop.order(c[1], T0 + DAY + HOUR, (1, 99.0, "placed"), status="cancelled")
    shop.order(c[2], T0 + 2 * DAY, (1, 15.0, "placed"))
    shop.order(c[3], T0 + 10 * HOUR, (3, 10.0, "placed"))
    shop.order(c[4], T0 + 6 * DAY, (1, 40.0, "placed"))  # after the window
    shop.order(c[5], T0 + DAY, (1, 12.0, "placed"))
    shop.order(c[7], T0 + DAY, (1, 77.0, "placed"))  # never e-mailed

    later = shop.run(T0 + DAY, "arrivals")
    s7 = shop.send(later, "arrivals", c[1], variant=None, due=T0 + DAY)
    shop.event(s7, "click", T0 + DAY + HOUR)
    shop.order(c[1], T0 + 2 * DAY, (1, 50.0, "placed"))

    shop.profile(c[1], T0 - 10 * DAY, "champions")
    shop.profile(c[1], T0 + 5 * DAY, "at_risk")  # after the send: not used
    shop.profile(c[3], T0 - DAY, "loyal")
    return shop


def row(report_table: Any, **where: Any) -> dict[str, Any]:
    frame = report_table
    for key, value in where.items():
        frame = frame[frame[key] == value]
    assert len(frame) == 1, where
    found: dict[str, Any] = frame.iloc[0].to_dict()
    return found


def test_campaign_figures(filled: Shop, settings: Settings) -> None:
    report = build_report(filled.engine, settings, now=NOW)
    assert report.campaigns["campaign"].tolist() == ["arrivals", "winback"]
    winback = row(report.campaigns, campaign="winback")
    expected = {
        "sends": 5,
        "delivered": 4,
        "holdout": 1,
        "human_opens": 2,
        "clicks": 1,
        "unsubscribes": 1,
        "bounces": 1,
        "spam_complaints": 0,
        "orders": 4,
        "attributed_orders": 2,
        "treated": 4,
        "control": 1,
    }
    assert {k: winback[k] for k in expected} == expected
    assert winback["ctr"] == pytest.approx(0.25)
    assert winback["click_to_open"] == pytest.approx(0.5)
    # c1: 20 (the cancelled line and order left out) + 50; c2: 15; c3: 30.
    assert winback["revenue"] == pytest.approx(115.0)
    assert winback["attributed_revenue"] == pytest.approx(50.0)
    assert winback["treated_conversion_rate"] == pytest.approx(0.75)
    assert winback["control_conversion_rate"] == pytest.approx(1.0)
    assert winback["verdict"] == NOT_YET
    assert winback["note"] == "holdout too small: 1 recipient, at least 30 needed"

    arrivals = row(report.campaigns, campaign="arrivals")
    assert (arrivals["delivered"], arrivals["clicks"]) == (1, 1)
    assert arrivals["attributed_revenue"] == pytest.approx(50.0)
    assert arrivals["control"] == 0
    assert arrivals["note"] == "no holdout to compare with"


def test_variant_and_segment_figures(filled: Shop, settings: Settings) -> None:
    report = build_report(filled.engine, settings, now=NOW)
    a = row(report.variants, campaign="winback", variant="a")
    b = row(report.variants, campaign="winback", variant="b")
    assert (a["sends"], a["delivered"], a["holdout"], a["control"]) == (2, 2, 1, 1)
    assert (b["sends"], b["delivered"], b["holdout"], b["control"]) == (3, 2, 0, 0)
    assert a["revenue"] == pytest.approx(85.0)
    assert b["attributed_revenue"] == pytest.approx(30.0)
    assert b["bounces"] == 1
    assert row(report.variants, campaign="arrivals")["variant"] == "-"

    segments = report.segments[report.segments["campaign"] == "winback"]
    by_segment = dict(zip(segments["segment"], segments["sends"], strict=True))
    assert by_segment == {"champions": 1, "loyal": 1, "unknown": 3}
    assert row(report.segments, campaign="arrivals")["segment"] == "champions"


def test_timeline_and_scope(filled: Shop, settings: Settings) -> None:
    report = build_report(filled.engine, settings, now=NOW)
    assert report.period == "day"
    days = report.timeline[["period", "campaign", "sends", "clicks"]]
    assert [(f"{p:%m-%d}", c, s, k) for p, c, s, k in days.itertuples(index=False)] == [
        ("06-01", "winback", 5, 1),
        ("06-02", "arrivals", 1, 1),
    ]

    later = build_report(filled.engine, settings, since=T0 + HOUR, now=NOW)
    assert later.campaigns["campaign"].tolist() == ["arrivals"]
    only = build_report(filled.engine, settings, campaign="winback", now=NOW)
    assert only.campaigns["campaign"].tolist() == ["winback"]
    # The later arrivals click still takes c1's second order from winback.
    assert row(only.campaigns, campaign="winback")["attributed_revenue"] == 50.0


def test_an_unknown_campaign_names_the_known_ones(
    filled: Shop, settings: Settings
) -> None:
    with pytest.raises(
        FeedbackError, match="campaigns with e-mails: arrivals, winback"
    ):
        build_report(filled.engine, settings, campaign="nope", now=NOW)


def test_an_empty_store_gives_an_empty_report(shop: Shop, settings: Settings) -> None:
    report = build_report(shop.engine, settings, now=NOW)
    assert report.empty
    assert json.loads(report.to_json())["campaigns"] == []
    assert "No e-mails" in Path(report.write_html(settings.home / "r.html")).read_text()


def test_json_holds_every_table(filled: Shop, settings: Settings) -> None:
    data = json.loads(build_report(filled.engine, settings, now=NOW).to_json())
    assert data["period"] == "day"
    assert data["click_window_days"] == 5.0
    assert [r["campaign"] for r in data["campaigns"]] == ["arrivals", "winback"]
    winback = data["campaigns"][1]
    assert winback["attributed_revenue"] == 50.0
    assert winback["incremental_revenue"] == pytest.approx(4 * (115 / 4 - 12.0))
    assert data["timeline"][0]["period"] == "2026-06-01T00:00:00"
    assert {r["segment"] for r in data["segments"]} >= {"champions", "unknown"}
    # No NaN leaks into the JSON: arrivals has no holdout.
    assert data["campaigns"][0]["control_conversion_rate"] is None


def test_html_has_charts_and_escapes_text(
    filled: Shop, settings: Settings, tmp_path: Path
) -> None:
    run = filled.run(T0, ODD)
    customer = filled.customer()
    filled.send(run, ODD, customer, variant="<i>x</i>")
    odd_settings = settings.model_copy(update={"shop_name": "Bob's <Shop>"})

    report = build_report(filled.engine, odd_settings, now=NOW)
    path = report.write_html(tmp_path / "out" / "report.html")
    page = path.read_text(encoding="utf-8")

    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 4
    assert "<polyline" in page and "<circle" in page
    assert "Extra revenue per recipient" in page
    assert "E-mails clicked" in page
    assert "Bob&#x27;s &lt;Shop&gt;" in page or "Bob's &lt;Shop&gt;" in page
    assert "<Shop>" not in page and "<sale>" not in page and "<i>x</i>" not in page
    assert "spring &lt;sale&gt; &amp;" in page
    # Nothing is fetched from elsewhere.
    assert not re.search(r"(src|href)=\"https?:", page)
    assert "<script" not in page


def test_report_is_a_dataclass_of_frames(filled: Shop, settings: Settings) -> None:
    report = build_report(filled.engine, settings, now=NOW)
    assert isinstance(report, Report)
    assert [e.variant for e in report.effects if e.campaign == "winback"] == [
        "all",
        "a",
        "b",
    ]


def test_nice_ticks_are_round() -> None:
    assert nice_ticks(0, 87) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 0.37) == [0, 0.1, 0.2, 0.3, 0.4]


@pytest.mark.integration
def test_postgres_gives_the_same_figures(
    pg_engine: Engine, engine: Engine, settings: Settings
) -> None:
    on_postgres = build_report(fill(Shop(pg_engine)).engine, settings, now=NOW)
    on_sqlite = build_report(fill(Shop(engine)).engine, settings, now=NOW)
    assert on_postgres.as_json() == on_sqlite.as_json()
    winback = row(on_postgres.campaigns, campaign="winback")
    assert winback["revenue"] == pytest.approx(115.0)
