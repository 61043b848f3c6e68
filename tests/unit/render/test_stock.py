"""Stock re-check: sold-out items are replaced from the candidates, prices updated."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from nudge.render import Item, refresh_items
from nudge.render.stock import StockState


def item(product_id: int, price: str = "10.00") -> Item:
    """Return a product with a fixed title, link and reason."""
    return Item(
        product_id=product_id,
        title=f"Product {product_id}",
        url=f"/p/{product_id}",
        image_url=None,
        price=Decimal(price),
        currency="GBP",
        reason="Because",
        reason_code="test",
    )


class Shop:
    """A stock lookup over a fixed table that counts its calls."""

    def __init__(self, table: Mapping[int, StockState]) -> None:
        self.table = table
        self.calls: list[list[int]] = []

    def __call__(self, product_ids: list[int]) -> Mapping[int, StockState]:
        """Return the state of each known product."""
        self.calls.append(product_ids)
        return {p: self.table[p] for p in product_ids if p in self.table}


def ids(items: list[Item]) -> list[int]:
    """Return the product ids, in order."""
    return [i.product_id for i in items]


def test_everything_in_stock_is_kept_as_is() -> None:
    items = [item(1), item(2)]
    shop = Shop({1: (True, Decimal("10.00")), 2: (None, None)})

    assert refresh_items(items, [item(3)], shop) == items
    assert shop.calls == [[1, 2, 3]]


def test_sold_out_items_are_replaced_in_place() -> None:
    items = [item(1), item(2), item(3)]
    candidates = [item(2), item(4), item(5), item(6)]
    shop = Shop(
        {
            1: (True, None),
            2: (False, None),
            3: (True, None),
            4: (False, None),
            5: (True, None),
            6: (True, None),
        }
    )

    assert ids(refresh_items(items, candidates, shop)) == [1, 5, 3]


def test_a_product_the_shop_no_longer_knows_is_gone() -> None:
    shop = Shop({2: (True, None), 3: (True, None)})

    assert ids(refresh_items([item(1), item(2)], [item(3)], shop)) == [3, 2]


def test_a_candidate_already_shown_is_not_used_twice() -> None:
    shop = Shop({1: (False, None), 2: (True, None), 3: (True, None)})

    assert ids(refresh_items([item(1), item(2)], [item(2), item(3)], shop)) == [3, 2]


def test_the_list_shrinks_when_candidates_run_out() -> None:
    shop = Shop({1: (False, None), 2: (True, None), 3: (False, None)})

    assert ids(refresh_items([item(1), item(2), item(3)], [], shop)) == [2]


def test_prices_are_updated_and_inputs_left_alone() -> None:
    items = [item(1, "10.00"), item(2, "20.00")]
    shop = Shop({1: (True, Decimal("8.50")), 2: (True, None)})

    fresh = refresh_items(items, [], shop)

    assert [i.price for i in fresh] == [Decimal("8.50"), Decimal("20.00")]
    assert items[0].price == Decimal("10.00")
    assert fresh[1] is items[1]


def test_nothing_to_check_makes_no_call() -> None:
    shop = Shop({})

    assert refresh_items([], [], shop) == []
    assert shop.calls == []
