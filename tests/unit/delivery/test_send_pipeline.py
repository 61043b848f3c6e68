"""The send pipeline on a synthetic shop: ledger rows, consent, faults, exactly once."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select, update

from nudge.campaigns.learning import ignored_items
from nudge.campaigns.service import CampaignService, naive_utc, sent_history
from nudge.delivery import ledger
from nudge.delivery.base import Result
from nudge.delivery.doubles import KlaviyoDouble, MailchimpDouble
from nudge.delivery.esp.mailchimp import MailchimpAdapter
from nudge.delivery.setup import setup_mailchimp
from nudge.demo.synth import generate_shop, write_csv
from nudge.feedback import tracking
from nudge.ingest.importer import Importer
from nudge.insight import service as insight_service
from nudge.insight.config import InsightConfig
from nudge.jobs import pipeline
from nudge.jobs.pipeline import Context
from nudge.settings import Settings
from nudge.store import queries
from nudge.store.db import make_engine, upgrade
from nudge.store.feedback_models import EngagementEvent, Suppression
from nudge.store.models import Customer, Order, OrderLine, Product
from nudge.store.send_models import Send

REPO = Path(__file__).resolve().parents[3]
SHOP_END = naive_utc(generate_shop(seed=3, customers=1, products=12).end)
LATER = SHOP_END + timedelta(days=2)


@pytest.fixture(scope="module")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic shop imported and profiled once; each test gets a copy."""
    folder = tmp_path_factory.mktemp("shop")
    settings = _settings(folder)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    shop = generate_shop(seed=3, customers=400, products=60)
    files = write_csv(shop, folder / "csv")
    importer = Importer(engine, settings)
    for kind in ("products", "customers", "orders", "events"):
        importer.run(kind, files[kind])
    insight_service.refresh(engine, shop.end, InsightConfig.from_settings(settings))
    engine.dispose()
    return folder / "nudge.db"


def _settings(folder: Path, **changes: object) -> Settings:
    values: dict[str, object] = {
        "home": REPO,
        "database_url": f"sqlite:///{folder / 'nudge.db'}",
        "var_dir": folder / "var",
        "outbox_dir": folder / "outbox",
        "signing_secret": SecretStr("test-secret"),
        "jobs_chunk_size": 100,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, shop_db: Path) -> Settings:
    shutil.copy(shop_db, tmp_path / "nudge.db")
    return _settings(tmp_path)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.resolved_database_url)
    yield engine
    engine.dispose()


def _ledger(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(select(Send.__table__))
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def _emails(settings: Settings) -> list[Path]:
    return sorted(settings.outbox_dir.rglob("*.eml"))


# ------------------------------------------------------------------ the ledger


def test_send_keys_are_stable_and_distinct() -> None:
    key = ledger.send_key("winback", 7, "2026-11-30T10:00")
    assert key == ledger.send_key("winback", 7, "2026-11-30T10:00")
    assert key.startswith("n") and len(key) == 31
    others = {
        ledger.send_key("winback", 8, "2026-11-30T10:00"),
        ledger.send_key("cross_sell", 7, "2026-11-30T10:00"),
        ledger.send_key("winback", 7, "2026-12-07T10:00"),
    }
    assert key not in others and len(others) == 3


def test_a_plan_becomes_one_ledger_row_per_send_and_holdout(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you", "new_arrivals"], as_of=SHOP_END
    )
    decisions = planned.plan.plan.decisions
    winners = decisions[decisions["outcome"].isin(["chosen", "deferred", "holdout"])]
    rows = _ledger(engine)
    assert planned.recorded is not None
    assert planned.recorded.created == len(rows) == len(winners) > 50
    assert set(rows["status"]) == {"planned", "suppressed"}
    held = rows[rows["holdout"]]
    assert planned.recorded.holdout == len(held) > 0
    assert (held["status"] == "suppressed").all()
    assert set(held["error"]) == {"holdout: control group"}
    assert rows["send_key"].is_unique
    assert (rows["esp"] == "outbox").all()

    # The same moment planned again finds every e-mail in the ledger already.
    again = pipeline.plan_and_record(
        engine, settings, ["picked_for_you", "new_arrivals"], as_of=SHOP_END
    )
    assert again.recorded is not None and again.recorded.created == 0
    assert len(_ledger(engine)) == len(rows)


def test_sends_go_once_to_the_outbox_and_a_second_dispatch_sends_nothing(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    report = pipeline.dispatch(engine, settings, now=LATER, run_id=planned.run_id)
    rows = _ledger(engine)
    sent = rows[rows["status"] == "accepted"]
    assert report.statuses["accepted"] == len(sent) > 20
    assert report.chunks == -(-report.rows // 100)
    emails = _emails(settings)
    assert sorted(p.stem for p in emails) == sorted(sent["send_key"])
    assert sent["subject"].notna().all() and (sent["attempts"] == 1).all()
    assert sent["finished_at"].notna().all()
    raw = emails[0].read_bytes()
    assert b"List-Unsubscribe:" in raw and b"multipart/alternative" in raw

    again = pipeline.dispatch(engine, settings, now=LATER, run_id=planned.run_id)
    assert again.rows == 0 and again.statuses == {}
    assert len(_emails(settings)) == len(emails)


def test_a_chunk_that_died_before_recording_is_sent_again_without_a_second_email(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    ids = ledger.due_ids(engine, LATER, run_id=planned.run_id)
    context = Context(engine, settings)
    # The first try writes the e-mails, then "dies" before the ledger hears.
    real = ledger.record_results
    ledger.record_results = lambda *a, **k: {}  # type: ignore[assignment]
    try:
        pipeline.deliver_chunk(context, ids)
    finally:
        ledger.record_results = real  # type: ignore[assignment]
    first = _emails(settings)
    assert len(first) == len(ids)
    assert set(_ledger(engine).query("status != 'suppressed'")["status"]) == {
        "rendered"
    }

    report = pipeline.deliver_chunk(context, ids)
    context.close()
    assert report.statuses == {"accepted": len(ids)}
    assert _emails(settings) == first


def test_consent_is_checked_again_just_before_sending(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    rows = _ledger(engine).query("status == 'planned'")
    gone, withdrawn = (int(i) for i in rows["customer_id"].iloc[:2])
    with engine.begin() as conn:
        conn.execute(
            update(Customer)
            .where(Customer.id == gone)
            .values(unsubscribed_at=datetime(2026, 12, 1))
        )
        conn.execute(
            update(Customer)
            .where(Customer.id == withdrawn)
            .values(accepts_marketing=False)
        )
    report = pipeline.dispatch(engine, settings, now=LATER, run_id=planned.run_id)
    after = _ledger(engine).set_index("customer_id")
    assert after.loc[gone, "status"] == "suppressed"
    assert after.loc[gone, "error"] == "unsubscribed"
    assert after.loc[withdrawn, "error"] == "no consent"
    assert report.statuses["suppressed"] == 2
    written = {p.stem for p in _emails(settings)}
    assert after.loc[gone, "send_key"] not in written


def test_a_campaign_that_needs_approval_waits_for_it(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["winback", "picked_for_you"], as_of=SHOP_END
    )
    assert planned.plan.status == "awaiting_approval"
    pipeline.dispatch(engine, settings, now=LATER)
    rows = _ledger(engine)
    winback = rows[(rows["campaign"] == "winback") & ~rows["holdout"]]
    others = rows[(rows["campaign"] == "picked_for_you") & ~rows["holdout"]]
    assert len(winback) > 0 and set(winback["status"]) == {"planned"}
    assert set(others["status"]) == {"accepted"}

    assert planned.run_id is not None
    CampaignService(engine, settings).approve(planned.run_id, "tester")
    report = pipeline.dispatch(engine, settings, now=LATER)
    assert report.statuses == {"accepted": len(winback)}


def test_transient_failures_wait_and_permanent_ones_are_recorded(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    rows = _ledger(engine).query("status == 'planned'")
    keys = rows["send_key"].tolist()
    ids = dict(zip(keys, rows["id"].astype(int), strict=True))
    results = [
        Result(keys[0], "outbox", "failed", attempts=1, error="outbox: disk busy"),
        Result(
            keys[1],
            "outbox",
            "failed",
            attempts=1,
            error="outbox: invalid address: 'x'",
            permanent=True,
        ),
    ]
    counts = ledger.record_results(engine, ids, results, attempts={})
    assert counts == {"planned": 1, "failed": 1}
    after = _ledger(engine).set_index("send_key")
    assert after.loc[keys[0], "status"] == "planned"
    assert after.loc[keys[0], "attempts"] == 1
    assert after.loc[keys[0], "due_at"] > pd.Timestamp(SHOP_END)
    assert after.loc[keys[1], "status"] == "failed"
    assert after.loc[keys[1], "error"] == "outbox: invalid address: 'x'"
    assert planned.run_id is not None


def test_klaviyo_gets_one_event_per_email_and_a_rejected_address_fails_alone(
    engine: Engine, tmp_path: Path
) -> None:
    with KlaviyoDouble() as double:
        assert isinstance(double, KlaviyoDouble)
        settings = _settings(
            tmp_path,
            klaviyo_base_url=double.url,
            klaviyo_api_key=SecretStr(double.api_key),
        )
        planned = pipeline.plan_and_record(
            engine, settings, ["picked_for_you"], as_of=SHOP_END
        )
        open_rows = _ledger(engine).query("status == 'planned'")
        victim = int(open_rows["customer_id"].iloc[0])
        with engine.connect() as conn:
            address = conn.execute(
                select(Customer.email).where(Customer.id == victim)
            ).scalar_one()
        double.reject_address(address)

        report = pipeline.dispatch(
            engine, settings, now=LATER, run_id=planned.run_id, esp="klaviyo"
        )
        again = pipeline.dispatch(
            engine, settings, now=LATER, run_id=planned.run_id, esp="klaviyo"
        )
        accepted = double.accepted_ids()
        posted = [r.json() for r in double.recorded("POST", "event-bulk")]

    rows = _ledger(engine)
    sent = rows[rows["status"] == "accepted"]
    assert report.statuses == {"accepted": len(open_rows) - 1, "failed": 1}
    assert again.rows == 0
    assert sorted(accepted) == sorted(sent["send_key"])
    assert (sent["esp"] == "klaviyo").all()
    failed = rows[rows["status"] == "failed"].iloc[0]
    assert int(failed["customer_id"]) == victim
    assert "Invalid email address" in str(failed["error"])
    assert _emails(_settings(tmp_path)) == []
    # Profiles carry the shop's own customer ids, as its Klaviyo integration sets.
    ids = {
        event["attributes"]["profile"]["data"]["attributes"]["external_id"]
        for body in posted
        for event in body["data"]["attributes"]["events-bulk-create"]["data"]
    }
    assert ids and all(i.startswith("C0") for i in ids)


def test_mailchimp_members_are_submitted_then_one_campaign_per_variant_is_sent(
    engine: Engine, tmp_path: Path
) -> None:
    with MailchimpDouble() as double:
        assert isinstance(double, MailchimpDouble)
        settings = _settings(
            tmp_path,
            mailchimp_base_url=double.url,
            mailchimp_api_key=SecretStr(double.api_key),
            mailchimp_list_id="a1b2c3d4e5",
        )
        planned = pipeline.plan_and_record(
            engine, settings, ["cart_abandonment", "picked_for_you"], as_of=SHOP_END
        )
        context = Context(engine, settings)
        adapter = MailchimpAdapter(
            double.api_key,
            base_url=double.url,
            list_id="a1b2c3d4e5",
            sleep=lambda seconds: None,
        )
        context._adapters["mailchimp"] = adapter
        # Without `nudge esp setup mailchimp` each member fails with the reason.
        refused = pipeline.dispatch(
            engine, settings, now=LATER, esp="mailchimp", context=context, limit=1
        )
        assert refused.statuses == {"failed": 1}
        assert "SUBJECT: is not a merge field" in next(iter(refused.errors))
        setup_mailchimp(adapter)
        report = pipeline.dispatch(
            engine,
            settings,
            now=LATER,
            run_id=planned.run_id,
            esp="mailchimp",
            context=context,
        )
        context.close()
        campaigns = dict(double.campaigns)

    rows = _ledger(engine)
    sent = rows[~rows["holdout"] & (rows["status"] != "failed")]
    assert report.statuses.get("accepted", 0) == len(sent) > 0
    assert set(sent["status"]) == {"accepted"}
    assert sent["esp_job_id"].notna().all()
    # One campaign per (campaign, variant) of the run, each sent once.
    groups = sent.groupby(["campaign", "variant"])["esp_job_id"].nunique()
    assert (groups == 1).all()
    assert len(campaigns) == len(groups)
    assert {c["status"] for c in campaigns.values()} == {"sent"}
    # A campaign's subject is one for all: merge tags or neutral words, no Jinja.
    subjects = {c["settings"]["subject_line"] for c in campaigns.values()}
    assert subjects and not any("{" in s for s in subjects)
    assert subjects == {
        "*|IF:FNAME|**|FNAME|*, we*|ELSE:|*We*|END:IF|* picked these for you",
        "Your picks of the week from Demo Shop",
    }


def test_an_email_that_never_went_does_not_count_towards_caps(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    rows = _ledger(engine).query("status == 'planned'")
    kept, dropped = (int(i) for i in rows["customer_id"].iloc[:2])
    with engine.begin() as conn:
        conn.execute(
            update(Customer)
            .where(Customer.id == dropped)
            .values(unsubscribed_at=datetime(2026, 12, 1))
        )
    pipeline.dispatch(engine, settings, now=LATER, run_id=planned.run_id)

    later = sent_history(engine, SHOP_END + timedelta(hours=1), 30)
    counted = set(later["customer_id"].astype(int))
    assert kept in counted
    assert dropped not in counted


def test_a_feedback_suppression_holds_even_when_an_import_clears_the_unsubscribe(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    victim = int(_ledger(engine).query("status == 'planned'")["customer_id"].iloc[0])
    with engine.begin() as conn:
        event_id = conn.execute(
            insert(EngagementEvent).values(
                esp="klaviyo",
                esp_event_id="evt-1",
                kind="spam_complaint",
                occurred_at=SHOP_END,
                customer_id=victim,
                received_at=SHOP_END,
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(Suppression).values(
                customer_id=victim,
                event_id=event_id,
                esp="klaviyo",
                reason="spam_complaint",
                suppressed_at=SHOP_END,
                created_at=SHOP_END,
            )
        )
    pipeline.dispatch(engine, settings, now=LATER, run_id=planned.run_id)
    row = _ledger(engine).set_index("customer_id").loc[victim]
    assert row["status"] == "suppressed"
    assert row["error"] == "suppressed after spam_complaint"


def test_a_rendered_row_keeps_the_esp_it_is_sent_through(
    engine: Engine, settings: Settings
) -> None:
    pipeline.plan_and_record(engine, settings, ["picked_for_you"], as_of=SHOP_END)
    row = int(_ledger(engine).query("status == 'planned'")["id"].iloc[0])
    ledger.mark_rendered(engine, {row: "Hello"}, {row: "klaviyo"})
    after = _ledger(engine).set_index("id").loc[row]
    assert (after["status"], after["esp"], after["subject"]) == (
        "rendered",
        "klaviyo",
        "Hello",
    )


def test_an_event_delivered_twice_is_stored_once(
    engine: Engine, settings: Settings
) -> None:
    first = pipeline.record_event(
        engine, settings, "order_placed", customer="C00002", key="task-1"
    )
    again = pipeline.record_event(
        engine, settings, "order_placed", customer="C00002", key="task-1"
    )
    assert first.stored.startswith("order event-")
    assert again.stored == f"order_placed {first.stored[6:]} was stored before"
    with engine.connect() as conn:
        found = conn.execute(
            select(Order.id).where(Order.external_id.like("event-%"))
        ).all()
    assert len(found) == 1


def test_a_product_sold_out_since_the_plan_is_replaced_by_a_spare(
    engine: Engine, settings: Settings
) -> None:
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    rows = _ledger(engine).query("status == 'planned'")
    count = 6  # picked_for_you shows six products; the plan keeps spares
    row = rows[rows["items"].map(len) > count].iloc[0]
    shown = [int(i["product_id"]) for i in row["items"]]
    gone, spare = shown[0], shown[count]
    with engine.begin() as conn:
        conn.execute(update(Product).where(Product.id == gone).values(in_stock=False))
        titles = dict(
            conn.execute(
                select(Product.id, Product.title).where(Product.id.in_([gone, spare]))
            ).all()
        )
    pipeline.dispatch(engine, settings, now=LATER, run_id=planned.run_id)

    eml = next(settings.outbox_dir.rglob(f"{row['send_key']}.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    body = message.get_body(("html",))
    assert body is not None
    html = body.get_content()
    assert titles[spare] in html
    assert titles[gone] not in html


def test_products_emailed_three_times_and_never_clicked_are_found(
    engine: Engine, settings: Settings
) -> None:
    # Eight days apart: the campaign's cap is one e-mail in seven days.
    for week in range(3):
        as_of = SHOP_END + timedelta(days=8 * week)
        planned = pipeline.plan_and_record(
            engine, settings, ["picked_for_you"], as_of=as_of
        )
        pipeline.dispatch(
            engine, settings, now=as_of + timedelta(days=2), run_id=planned.run_id
        )
    moment = SHOP_END + timedelta(days=24)
    ignored = ignored_items(engine, moment, 90, 3)
    assert ignored
    customer, product = sorted(ignored)[0]
    # A click that led to the product's page clears it for that customer.
    with engine.connect() as conn:
        page = conn.execute(
            select(Product.product_url).where(Product.id == product)
        ).scalar_one()
    with engine.begin() as conn:
        conn.execute(
            insert(EngagementEvent).values(
                esp="outbox",
                esp_event_id="click-1",
                kind="click",
                occurred_at=moment - timedelta(days=1),
                customer_id=customer,
                url=f"{page}?utm_source=nudge&nudge_sid=x",
                received_at=moment,
            )
        )
    assert (customer, product) not in ignored_items(engine, moment, 90, 3)


def test_email_clicks_and_the_orders_after_them_become_training_signals(
    engine: Engine, settings: Settings
) -> None:
    with engine.connect() as conn:
        product, page = conn.execute(
            select(Product.id, Product.product_url).order_by(Product.id).limit(1)
        ).one()
    clicked_at = SHOP_END + timedelta(hours=3)
    with engine.begin() as conn:
        conn.execute(
            insert(EngagementEvent).values(
                esp="outbox",
                esp_event_id="click-1",
                kind="click",
                occurred_at=clicked_at,
                customer_id=5,
                url=f"{page}?utm_source=nudge",
                received_at=clicked_at,
            )
        )
    pipeline.record_event(
        engine,
        settings,
        "order_placed",
        customer="C00005",
        product=None,
        at=clicked_at + timedelta(days=1),
    )
    with engine.begin() as conn:
        order = conn.execute(
            select(Order.id).where(Order.external_id.like("event-%"))
        ).scalar_one()
        conn.execute(
            insert(OrderLine).values(
                order_id=order,
                line_no=1,
                product_id=product,
                quantity=1,
                unit_price=10,
                status="placed",
            )
        )
    found = queries.email_signals(
        engine,
        SHOP_END + timedelta(days=3),
        click_weight=0.5,
        order_weight=2.0,
    )
    rows = sorted(
        zip(found["customer_id"], found["product_id"], found["weight"], strict=True)
    )
    assert rows == [(5, product, 0.5), (5, product, 2.0)]
    # Before the click there is nothing to learn.
    early = queries.email_signals(engine, SHOP_END, click_weight=0.5, order_weight=2.0)
    assert early.empty


def test_with_a_tracking_url_outbox_links_record_clicks_and_a_pixel_opens(
    engine: Engine, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, tracking_url="https://t.demo-shop.example")
    planned = pipeline.plan_and_record(
        engine, settings, ["picked_for_you"], as_of=SHOP_END
    )
    pipeline.dispatch(engine, settings, now=LATER, run_id=planned.run_id)
    row = _ledger(engine).query("status == 'accepted'").iloc[0]
    eml = next(settings.outbox_dir.rglob(f"{row['send_key']}.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    body, text = html_part.get_content(), text_part.get_content()

    clicks = re.findall(
        r'href="(https://t\.demo-shop\.example/nudge/c\?t=[^"]+)"', body
    )
    assert len(clicks) >= 6
    assert "nudge_sid=" not in body.replace("&amp;", "&").split("/nudge/unsubscribe")[0]
    assert "/nudge/unsubscribe?" in body  # the unsubscribe link stays direct
    assert "https://t.demo-shop.example/nudge/o?t=" in body
    assert "https://t.demo-shop.example/nudge/c?t=" in text

    token = unquote(clicks[0].split("?t=", 1)[1])
    recorded = tracking.record_click(engine, settings, token, at=LATER)
    assert recorded.stored and recorded.linked
    assert recorded.redirect is not None
    assert f"nudge_sid={row['send_key']}" in recorded.redirect
    with engine.connect() as conn:
        send_id = conn.execute(
            select(EngagementEvent.send_id).where(EngagementEvent.kind == "click")
        ).scalar_one()
    assert send_id == int(row["id"])
