"""The `[campaigns]` settings table and its environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from nudge.campaigns.config import PlannerConfig
from nudge.errors import ConfigError
from nudge.settings import load_settings


def test_the_table_sets_the_planner(tmp_path: Path) -> None:
    config = tmp_path / "config" / "nudge.toml"
    config.parent.mkdir()
    config.write_text('[campaigns]\nglobal_cap = 3\nquiet_hours = ""\n')

    settings = load_settings({"NUDGE_CAMPAIGNS_FATIGUE_COST": "0.5"}, tmp_path)
    found = PlannerConfig.from_settings(settings)

    assert found.global_cap == 3
    assert found.quiet_hours == ""
    assert found.fatigue_cost == 0.5


def test_defaults_without_the_table(tmp_path: Path) -> None:
    found = PlannerConfig.from_settings(load_settings({}, tmp_path))

    assert found == PlannerConfig()
    assert found.global_cap == 2 and found.global_cap_days == 7


def test_bad_quiet_hours_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"NUDGE_CAMPAIGNS_QUIET_HOURS": "late"}, tmp_path)

    assert str(caught.value) == (
        "NUDGE_CAMPAIGNS_QUIET_HOURS: expected HH:MM-HH:MM such as 21:00-08:00 "
        "(got 'late')"
    )
