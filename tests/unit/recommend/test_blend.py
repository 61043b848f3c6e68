"""The blend: score fusion, credit, the cold-start cascade and task weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nudge.errors import ConfigError
from nudge.recommend import RecommendConfig, make_strategy
from nudge.recommend.blend import fuse, normalized
from nudge.recommend.config import SOURCE, BlendConfig
from nudge.recommend.ranked import Ranked
from nudge.recommend.reasons import CODE
from nudge.settings import load_settings
from tests.unit.recommend.tiny import tiny_data

SMALL = RecommendConfig(als={"factors": 4, "iterations": 3})


def ranked(
    slots: list[int], items: list[int], scores: list[float], source: str
) -> Ranked:
    return Ranked.build(
        np.array(slots), np.array(items), np.array(scores), CODE["best_seller"]
    ).with_source(SOURCE[source])


def test_scores_are_scaled_to_each_customers_best() -> None:
    entries = ranked([0, 0, 1, 1], [1, 2, 1, 3], [4.0, 1.0, 0.5, 0.25], "als")
    assert normalized(entries, BlendConfig()).tolist() == [1.0, 0.25, 1.0, 0.5]
    by_rank = normalized(entries, BlendConfig(fusion="rank", rank_offset=1.0))
    assert by_rank.tolist() == [1.0, 0.5, 1.0, 0.5]


def test_fusion_sums_shares_and_credits_the_largest() -> None:
    als = ranked([0, 0], [1, 2], [0.6, 0.5], "als")
    again = ranked([0, 0], [2, 3], [0.3, 0.2], "buy_again")
    fused = fuse([als, again])
    assert fused.item.tolist() == [2, 1, 3]
    assert np.allclose(fused.score, [0.8, 0.6, 0.2])
    assert [fused.source[i] for i in range(3)] == [
        SOURCE["als"],
        SOURCE["als"],
        SOURCE["buy_again"],
    ]


def test_customers_without_history_cascade_to_popular_products() -> None:
    data = tiny_data()
    blend = make_strategy("blend", SMALL).fit(data)
    items = blend.recommend([404], 5).items
    assert len(items) == 5
    assert set(items["strategy"]) <= {"trending", "best_sellers", "new_arrivals"}


def test_a_repeat_buyer_gets_own_products_and_new_ones() -> None:
    data = tiny_data()
    blend = make_strategy("blend", SMALL).fit(data)
    items = blend.recommend([1], 6).items
    assert items.iloc[0]["product_id"] == 1  # bought in every order
    assert items.iloc[0]["strategy"] == "buy_again"
    fresh = blend.recommend([1], 6, exclude_purchased=True).items
    assert not {1, 2, 3, 5} & set(fresh["product_id"])


def test_task_weights_are_separate() -> None:
    only_again = BlendConfig(
        weights={"buy_again": 1.0}, new_weights={"best_sellers": 1.0}
    )
    config = SMALL.model_copy(update={"blend": only_again})
    blend = make_strategy("blend", config).fit(tiny_data())
    assert set(blend.components) == {"buy_again", "best_sellers"}
    assert set(blend.recommend([1], 3).items["strategy"]) == {"buy_again"}
    new = blend.recommend([1], 3, exclude_purchased=True).items
    assert set(new["strategy"]) == {"best_sellers"}


def test_forked_workers_give_the_same_lists_in_the_same_order() -> None:
    from nudge.demo.synth import generate_shop
    from nudge.recommend import RulesConfig, build_interactions
    from tests.unit.recommend.conftest import store_frames

    frames = store_frames(generate_shop(seed=3, customers=400, products=40, days=120))
    data = build_interactions(
        frames["lines"], frames["products"], frames["lines"]["ordered_at"].max()
    )
    blend = make_strategy("blend", SMALL).fit(data)
    ids = [*data.customers.tolist(), -1]
    serial = blend.recommend(ids, 5, rules=RulesConfig(), batch_size=40)
    forked = blend.recommend(ids, 5, rules=RulesConfig(), batch_size=40, workers=2)
    assert len(serial.items) > 0
    assert serial.items.equals(forked.items)
    assert serial.skipped.equals(forked.skipped)


def test_settings_fields_reach_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "nudge.toml").write_text(
        "[recommend]\nseed = 7\n[recommend.rules]\nmin_items = 5\n", encoding="utf-8"
    )
    env = {"NUDGE_RECOMMEND_ALS_FACTORS": "16", "NUDGE_RECOMMEND_BLEND_POOL": "20"}
    config = RecommendConfig.from_settings(load_settings(env=env, cwd=tmp_path))
    assert config.seed == 7
    assert config.rules.min_items == 5
    assert config.als.factors == 16
    assert config.blend.pool == 20
    assert config.als.alpha == RecommendConfig().als.alpha

    env = {"NUDGE_RECOMMEND_RULES_MIN_ITEMS": "many"}
    with pytest.raises(ConfigError, match=r"^NUDGE_RECOMMEND_RULES_MIN_ITEMS: "):
        load_settings(env=env, cwd=tmp_path)
