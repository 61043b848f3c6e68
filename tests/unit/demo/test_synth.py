"""Tests for the synthetic demo shop."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from nudge.demo.synth import (
    CATEGORY_NAMES,
    CUSTOMER_COLUMNS,
    DEFAULT_END,
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    PRODUCT_COLUMNS,
    SyntheticShop,
    generate_shop,
    write_csv,
)
from nudge.errors import ConfigError

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MONEY = re.compile(r"^\d+\.\d\d$")


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return generate_shop()


@pytest.fixture(scope="module")
def small() -> SyntheticShop:
    return generate_shop(seed=11, customers=300, products=60, days=200)


def times(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, utc=True, format="ISO8601")


def first_orders(shop: SyntheticShop) -> pd.Series:
    return times(shop.orders["ordered_at"]).groupby(shop.orders["customer_id"]).min()


def test_same_seed_gives_identical_frames(small: SyntheticShop) -> None:
    again = generate_shop(seed=11, customers=300, products=60, days=200)

    for name, frame in small.frames().items():
        pd.testing.assert_frame_equal(frame, again.frames()[name], obj=name)
    pd.testing.assert_frame_equal(small.tastes, again.tastes)
    pd.testing.assert_frame_equal(small.product_truth, again.product_truth)


def test_different_seed_gives_a_different_shop(small: SyntheticShop) -> None:
    other = generate_shop(seed=12, customers=300, products=60, days=200)

    assert not small.customers.equals(other.customers)
    assert not small.orders.equals(other.orders)
    assert not small.tastes.equals(other.tastes)


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    first = write_csv(generate_shop(seed=3, customers=200, products=40), tmp_path / "a")
    second = write_csv(
        generate_shop(seed=3, customers=200, products=40), tmp_path / "b"
    )

    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes(), name


def test_default_sizes_fall_in_the_documented_ranges(shop: SyntheticShop) -> None:
    kinds = shop.events["event_type"].value_counts()

    assert len(shop.customers) == 3000
    assert len(shop.products) == 400
    assert 10_000 <= shop.orders["order_id"].nunique() <= 20_000
    assert 30_000 <= len(shop.orders) <= 60_000
    assert 50_000 <= len(shop.events) <= 150_000
    assert kinds["view"] > kinds["add_to_cart"] > kinds["search"] > 0


def test_frames_have_the_generic_layout_columns(shop: SyntheticShop) -> None:
    assert list(shop.customers.columns) == list(CUSTOMER_COLUMNS)
    assert list(shop.products.columns) == list(PRODUCT_COLUMNS)
    assert list(shop.orders.columns) == list(ORDER_COLUMNS)
    assert list(shop.events.columns) == list(EVENT_COLUMNS)
    assert CUSTOMER_COLUMNS[-1] == "max_emails_per_week"
    assert EVENT_COLUMNS == (
        "customer_id",
        "event_type",
        "occurred_at",
        "product_id",
        "query",
    )


def test_every_time_is_iso_utc(shop: SyntheticShop) -> None:
    columns = [
        (shop.customers, "created_at"),
        (shop.products, "created_at"),
        (shop.orders, "ordered_at"),
        (shop.events, "occurred_at"),
    ]
    for frame, column in columns:
        assert frame[column].str.match(ISO_UTC).all(), column
    for column in ("consent_at", "unsubscribed_at"):
        filled = shop.customers[column][shop.customers[column] != ""]
        assert filled.str.match(ISO_UTC).all(), column


def test_ids_are_unique_and_references_exist(shop: SyntheticShop) -> None:
    customers = set(shop.customers["customer_id"])
    products = set(shop.products["product_id"])

    assert shop.customers["customer_id"].is_unique
    assert shop.products["product_id"].is_unique
    assert set(shop.orders["customer_id"]) <= customers
    assert set(shop.orders["product_id"]) <= products
    assert set(shop.events["customer_id"]) <= customers
    viewed = shop.events.loc[shop.events["event_type"] != "search", "product_id"]
    assert set(viewed) <= products


def test_an_order_has_one_customer_time_and_distinct_products(
    shop: SyntheticShop,
) -> None:
    per_order = shop.orders.groupby("order_id")

    assert (per_order["customer_id"].nunique() == 1).all()
    assert (per_order["ordered_at"].nunique() == 1).all()
    assert not shop.orders.duplicated(["order_id", "product_id"]).any()
    assert per_order.size().between(1, 4).all()
    assert per_order.size().mean() > 2.0


@pytest.mark.parametrize(
    ("entity", "column"), [("orders", "ordered_at"), ("events", "occurred_at")]
)
def test_nothing_happens_before_its_customer_or_product_or_after_end(
    shop: SyntheticShop, entity: str, column: str
) -> None:
    frame = shop.frames()[entity]
    joined = times(shop.customers.set_index("customer_id")["created_at"])
    listed = times(shop.products.set_index("product_id")["created_at"])
    when = times(frame[column])
    with_product = frame["product_id"] != ""

    assert (when.to_numpy() >= joined.loc[frame["customer_id"]].to_numpy()).all()
    assert (
        when[with_product].to_numpy()
        >= listed.loc[frame.loc[with_product, "product_id"]].to_numpy()
    ).all()
    assert when.max() < pd.Timestamp(DEFAULT_END)
    assert when.min() >= pd.Timestamp(DEFAULT_END - timedelta(days=730))


def test_quantities_and_prices_are_positive_money(shop: SyntheticShop) -> None:
    orders = shop.orders

    assert orders["quantity"].dtype.kind == "i"
    assert (orders["quantity"] >= 1).all()
    assert orders["unit_price"].str.match(MONEY).all()
    assert shop.products["price"].str.match(MONEY).all()
    assert (orders["unit_price"].astype(float) > 0).all()
    assert (shop.products["price"].astype(float) > 0).all()
    assert set(orders["currency"]) == {"GBP"}


def test_unit_prices_are_the_list_price_or_a_sale_price(shop: SyntheticShop) -> None:
    price = shop.products.set_index("product_id")["price"].astype(float)
    paid = shop.orders["unit_price"].astype(float).to_numpy()
    listed = price.loc[shop.orders["product_id"]].to_numpy()

    assert (paid <= listed).all()
    assert 0.03 < (paid < listed).mean() < 0.15


def test_a_few_orders_are_cancelled_or_returned(shop: SyntheticShop) -> None:
    status = shop.orders["status"].value_counts(normalize=True)

    assert set(status.index) == {"placed", "cancelled", "returned"}
    assert 0.01 < status["cancelled"] < 0.05
    assert 0.01 < status["returned"] < 0.06


def test_many_buyers_come_back(shop: SyntheticShop) -> None:
    orders_per_buyer = shop.orders.groupby("customer_id")["order_id"].nunique()

    assert (orders_per_buyer >= 2).mean() >= 0.3
    assert 0.7 < len(orders_per_buyer) / len(shop.customers) < 0.95


def test_customers_span_every_lifecycle_stage(shop: SyntheticShop) -> None:
    end = pd.Timestamp(DEFAULT_END)
    joined = times(shop.customers["created_at"])
    last_order = times(shop.orders["ordered_at"]).groupby(shop.orders["customer_id"])
    idle_days = (end - last_order.max()).dt.days

    assert (joined > end - pd.Timedelta(days=30)).sum() >= 50
    assert (idle_days <= 30).sum() >= 300
    assert idle_days.between(90, 180).sum() >= 100
    assert (idle_days > 365).sum() >= 100
    assert 0.25 < shop.tastes["churned"].mean() < 0.7


def test_customers_join_over_the_whole_period_more_lately(
    shop: SyntheticShop,
) -> None:
    joined = times(shop.customers["created_at"])
    halfway = pd.Timestamp(DEFAULT_END - timedelta(days=365))

    assert (joined < halfway).sum() > 600
    assert (joined >= halfway).sum() > (joined < halfway).sum()


def test_catalogue_looks_like_a_small_gift_shop(shop: SyntheticShop) -> None:
    products = shop.products
    prices = products["price"].astype(float)

    assert 8 <= products["category"].nunique() <= 12
    assert set(products["category"]) <= set(CATEGORY_NAMES)
    assert products["brand"].nunique() >= 5
    assert products["title"].is_unique
    assert products["description"].str.endswith(".").all()
    assert products["description"].str.len().max() < 255
    assert prices.groupby(products["category"]).median().nunique() > 5
    assert (
        products["image_url"]
        .str.fullmatch(r"https://demo-shop\.example/img/SKU-\d{4}\.jpg")
        .all()
    )
    assert products["product_url"].str.startswith("https://demo-shop.example/").all()


def test_a_handful_of_products_are_out_of_stock(shop: SyntheticShop) -> None:
    in_stock = shop.products["in_stock"]

    assert set(in_stock) == {"true", "false"}
    assert 3 <= (in_stock == "false").sum() <= 20


def test_products_arrive_over_time_with_unsold_new_arrivals(
    shop: SyntheticShop,
) -> None:
    end = pd.Timestamp(DEFAULT_END)
    created = times(shop.products["created_at"])
    new = shop.products.loc[created > end - pd.Timedelta(days=30), "product_id"]
    unsold = set(new) - set(shop.orders["product_id"])

    assert 0.05 <= len(new) / len(shop.products) <= 0.10
    assert len(unsold) >= 2
    assert (created > end - pd.Timedelta(days=365)).sum() >= 80


def test_fresh_carts_are_left_without_an_order(shop: SyntheticShop) -> None:
    end = pd.Timestamp(DEFAULT_END)
    events = shop.events
    carts = events[events["event_type"] == "add_to_cart"].copy()
    carts["at"] = times(carts["occurred_at"])
    recent = carts[carts["at"] >= end - pd.Timedelta(days=3)]
    ordered = times(shop.orders["ordered_at"])
    orders = shop.orders.assign(at=ordered)[["customer_id", "at"]]

    pairs = recent.merge(orders, on="customer_id", how="left", suffixes=("", "_o"))
    followed = pairs["at_o"].between(pairs["at"], pairs["at"] + pd.Timedelta(days=1))
    bought = pairs[followed].set_index(["customer_id", "at"]).index
    abandoned = recent.set_index(["customer_id", "at"]).index.difference(bought)
    assert len(abandoned) >= 20


def test_searches_have_a_query_and_no_product(shop: SyntheticShop) -> None:
    events = shop.events
    searches = events[events["event_type"] == "search"]
    others = events[events["event_type"] != "search"]

    assert (searches["query"] != "").all()
    assert (searches["product_id"] == "").all()
    assert (others["query"] == "").all()
    assert (others["product_id"] != "").all()


def test_consent_shares_and_times(shop: SyntheticShop) -> None:
    customers = shop.customers
    accepts = customers["accepts_marketing"] == "true"
    unsubscribed = customers["unsubscribed_at"] != ""
    consented = customers["consent_at"] != ""

    assert set(customers["accepts_marketing"]) == {"true", "false"}
    assert 0.80 <= accepts.mean() <= 0.90
    assert 0.015 <= unsubscribed.mean() <= 0.05
    assert not (accepts & unsubscribed).any()
    assert (consented == (accepts | unsubscribed)).all()
    assert set(customers.loc[consented, "consent_source"]) == {
        "checkout",
        "signup_form",
    }
    assert (customers.loc[~consented, "consent_source"] == "").all()
    left = customers[unsubscribed]
    assert (times(left["unsubscribed_at"]) > times(left["consent_at"])).all()
    assert (
        times(customers["consent_at"][consented])
        >= times(customers["created_at"][consented])
    ).all()


def test_checkout_consent_is_given_with_the_first_order(shop: SyntheticShop) -> None:
    customers = shop.customers.set_index("customer_id")
    checkout = customers[customers["consent_source"] == "checkout"]
    first = first_orders(shop)

    assert len(checkout) > 500
    assert (times(checkout["consent_at"]) == first.loc[checkout.index]).all()


def test_few_customers_state_preferences(shop: SyntheticShop) -> None:
    customers = shop.customers
    favourites = customers["favourite_categories"]
    caps = customers["max_emails_per_week"]
    stated = favourites[favourites != ""].str.split("|").explode()

    assert 0.02 <= (favourites != "").mean() <= 0.10
    assert set(stated) <= set(CATEGORY_NAMES)
    assert 0.01 <= (caps != "").mean() <= 0.08
    assert set(caps[caps != ""]) <= {"1", "2", "3"}


def test_stated_favourites_are_the_hidden_top_categories(shop: SyntheticShop) -> None:
    tastes = shop.tastes.set_index("customer_id")[list(CATEGORY_NAMES)]
    favourites = shop.customers.set_index("customer_id")["favourite_categories"]
    stated = favourites[favourites != ""].str.split("|").str[0]

    assert (tastes.loc[stated.index].idxmax(axis=1) == stated).all()


def test_contact_details_are_plausible(shop: SyntheticShop) -> None:
    customers = shop.customers

    assert customers["email"].is_unique
    assert (
        customers["email"].str.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.(com|org)").all()
    )
    assert customers["country"].str.fullmatch(r"[A-Z]{2}").all()
    assert (customers["country"] == "GB").mean() > 0.5
    for zone in customers["timezone"].unique():
        ZoneInfo(zone)


def test_tastes_hold_the_documented_truth(shop: SyntheticShop) -> None:
    tastes = shop.tastes
    affinity = tastes[list(CATEGORY_NAMES)]

    assert list(tastes["customer_id"]) == list(shop.customers["customer_id"])
    np.testing.assert_allclose(affinity.sum(axis=1), 1.0)
    assert (affinity.max(axis=1) > 0.3).mean() > 0.9
    for column in (
        "price_sensitivity",
        "dropout_probability",
        "open_rate",
        "click_rate",
    ):
        assert tastes[column].between(0, 1).all(), column
    assert (tastes["purchase_rate"] > 0).all()
    assert tastes["churned"].dtype == bool
    assert tastes.loc[tastes["churned"], "churned_at"].notna().all()
    assert tastes.loc[~tastes["churned"], "churned_at"].isna().all()


def test_purchases_follow_the_hidden_truth(shop: SyntheticShop) -> None:
    tastes = shop.tastes.set_index("customer_id")
    first = first_orders(shop)
    last = times(shop.orders["ordered_at"]).groupby(shop.orders["customer_id"]).max()

    assert (tastes.loc[first.index, "first_purchase_at"] == first).all()
    assert tastes["first_purchase_at"].notna().sum() == len(first)
    churned_at = tastes.loc[last.index, "churned_at"]
    assert (last[churned_at.notna()] == churned_at.dropna()).all()


def test_customers_buy_what_they_like(shop: SyntheticShop) -> None:
    tastes = shop.tastes.set_index("customer_id")
    category = shop.products.set_index("product_id")["category"]
    lines = shop.orders.assign(
        category=category.loc[shop.orders["product_id"]].to_numpy()
    )
    affinity = tastes[list(CATEGORY_NAMES)].to_numpy()
    rows = tastes.index.get_indexer(pd.Index(lines["customer_id"]))
    columns = [CATEGORY_NAMES.index(c) for c in lines["category"]]

    # A uniform shopper would average 1 / number of categories.
    assert affinity[rows, columns].mean() > 0.35


def test_companions_are_bought_together(shop: SyntheticShop) -> None:
    truth = shop.product_truth.set_index("product_id")["companion_id"]
    baskets = shop.orders.groupby("order_id")["product_id"].apply(set)
    together = sum(1 for basket in baskets for p in basket if truth[p] in basket)

    assert together / len(shop.orders) > 0.1


def test_consumables_are_bought_again(shop: SyntheticShop) -> None:
    truth = shop.product_truth.set_index("product_id")
    lines = shop.orders.drop_duplicates(["order_id", "product_id"])
    counts = lines.groupby(["customer_id", "product_id"]).size().reset_index(name="n")
    counts["consumable"] = truth.loc[counts["product_id"], "consumable"].to_numpy()
    rebought = (counts["n"] >= 2).groupby(counts["consumable"]).mean()

    assert truth["consumable"].any()
    assert truth.loc[truth["consumable"], "refill_days"].between(20, 80).all()
    assert truth.loc[~truth["consumable"], "refill_days"].isna().all()
    assert rebought[True] > 3 * rebought[False]


def test_write_csv_round_trips(tmp_path: Path, small: SyntheticShop) -> None:
    paths = write_csv(small, tmp_path / "shop")

    assert set(paths) == {"customers", "products", "orders", "events"}
    for name, frame in small.frames().items():
        assert paths[name] == tmp_path / "shop" / f"{name}.csv"
        plain = pd.read_csv(paths[name])
        assert list(plain.columns) == list(frame.columns)
        assert len(plain) == len(frame)
        text = pd.read_csv(paths[name], dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(text, frame.astype(str), obj=name)


def test_end_and_days_set_the_window() -> None:
    end = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    shop = generate_shop(seed=1, customers=200, products=30, end=end, days=90)
    stamps = pd.concat(
        [times(shop.orders["ordered_at"]), times(shop.events["occurred_at"])]
    )

    assert shop.end == end
    assert stamps.max() < pd.Timestamp(end)
    assert stamps.min() >= pd.Timestamp(end - timedelta(days=90))
    assert len(shop.orders) > 0


def test_a_naive_end_is_read_as_utc() -> None:
    shop = generate_shop(customers=50, products=20, end=datetime(2025, 1, 1), days=60)

    assert shop.end == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argument", "value"), [("customers", 0), ("products", 3), ("days", 5)]
)
def test_sizes_too_small_are_refused(argument: str, value: int) -> None:
    sizes: dict[str, Any] = {argument: value}

    with pytest.raises(ConfigError, match=argument):
        generate_shop(**sizes)
