"""The `[campaigns]` settings: where campaigns live and the planner's global rules.

Each field is set in the ``[campaigns]`` table of ``config/nudge.toml`` or by
``NUDGE_CAMPAIGNS_<FIELD>``; the settings validate them with this model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nudge.campaigns.windows import parse_span


class PlannerConfig(BaseModel):
    """Global caps, the value threshold and defaults every campaign shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Folders, relative to the project (the folder that holds config/).
    campaigns_dir: Path = Path("config/campaigns")
    templates_dir: Path = Path("email_templates")

    # The global cap: at most global_cap e-mails to one customer in any
    # global_cap_days days, over every campaign together.
    global_cap: int = Field(default=2, ge=0)
    global_cap_days: int = Field(default=7, ge=1, le=365)

    # Expected incremental value = response rate x order value - fatigue, where
    # fatigue = fatigue_cost x (1 + e-mails already in the global cap window).
    # A campaign below value_threshold (shop currency) sends nothing.
    fatigue_cost: float = Field(default=0.25, ge=0)
    value_threshold: float = Field(default=0.0)
    # Order value for "order_value: customer" when a customer has none and the
    # shop has no average yet.
    default_order_value: float = Field(default=30.0, gt=0)

    # A plan at T covers sends due in [T, T + horizon_hours); events whose
    # delay ran out in the horizon before T are caught up on.
    horizon_hours: int = Field(default=24, ge=1, le=24 * 14)
    # Quiet hours in the customer's own time zone for campaigns that set none,
    # "HH:MM-HH:MM" (may span midnight) or "" for none.
    quiet_hours: str = "21:00-08:00"
    # A product e-mailed to a customer this many times (within
    # ignored_days) and never clicked has its score multiplied by
    # ignored_damping for that customer, so fresher products come first.
    ignored_after: int = Field(default=3, ge=1)
    ignored_days: int = Field(default=90, ge=1)
    ignored_damping: float = Field(default=0.3, ge=0, le=1)
    # Decisions printed as a sample by `nudge plan`.
    sample_size: int = Field(default=10, ge=0, le=1000)

    @field_validator("quiet_hours")
    @classmethod
    def _span(cls, value: str) -> str:
        if value.strip():
            parse_span(value)
        return value

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        """Return the `[campaigns]` config the settings hold, or the defaults."""
        config = settings.section("campaigns") if settings is not None else None
        return config if isinstance(config, cls) else cls()
