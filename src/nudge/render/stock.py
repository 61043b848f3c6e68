"""Re-check stock and price right before rendering, replacing what sold out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal

from nudge.render.model import Item

StockState = tuple[bool | None, Decimal | None]
Lookup = Callable[[list[int]], Mapping[int, StockState]]


def _on_sale(states: Mapping[int, StockState], product_id: int) -> StockState | None:
    # A product the lookup no longer knows is gone; an unknown stock level
    # (None) is a shop that does not track stock, so it stays.
    state = states.get(product_id)
    return state if state is not None and state[0] is not False else None


def _repriced(item: Item, state: StockState) -> Item:
    price = state[1]
    if price is None or price == item.price:
        return item
    return dataclasses.replace(item, price=price)


def refresh_items(
    items: Sequence[Item], candidates: Iterable[Item], lookup: Lookup
) -> list[Item]:
    """Return the items still on sale at current prices, sold-out ones replaced.

    Each unavailable item is replaced, in place, by the next available candidate
    not already shown; when the candidates run out the list gets shorter. One
    call to ``lookup`` covers the items and every candidate.
    """
    spare = list(candidates)
    wanted = list(dict.fromkeys(i.product_id for i in [*items, *spare]))
    states = lookup(wanted) if wanted else {}

    shown = {i.product_id for i in items if _on_sale(states, i.product_id)}
    fresh: list[Item] = []
    queue = iter(spare)
    for item in items:
        state = _on_sale(states, item.product_id)
        if state is not None:
            fresh.append(_repriced(item, state))
            continue

        # Take the next candidate that is on sale and not in the e-mail yet.
        for candidate in queue:
            cstate = _on_sale(states, candidate.product_id)
            if cstate is None or candidate.product_id in shown:
                continue
            shown.add(candidate.product_id)
            fresh.append(_repriced(candidate, cstate))
            break
    return fresh
