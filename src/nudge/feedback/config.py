"""The `[feedback]` settings: attribution windows, report periods, alert thresholds.

Each field is set in the ``[feedback]`` table of ``config/nudge.toml`` or by
``NUDGE_FEEDBACK_<FIELD>``; the settings validate them with this model.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field


class FeedbackConfig(BaseModel):
    """How orders are credited to e-mails, how results are judged, when to alert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Last touch: an order goes to the last e-mail clicked within
    # click_window_days before it, else the last one opened by a person within
    # open_window_days. The click window is also the conversion window of the
    # treated-versus-holdout comparison, counted from each e-mail's send time.
    click_window_days: float = Field(default=5.0, gt=0, le=90)
    open_window_days: float = Field(default=1.0, gt=0, le=90)

    # The uplift's confidence interval: its level, the bootstrap resamples of
    # revenue per recipient and their seed (the same data give the same CI).
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_resamples: int = Field(default=2_000, ge=200, le=100_000)
    seed: int = Field(default=20_240_601, ge=0)
    # A control group smaller than this is "too small" to judge an effect.
    min_holdout: int = Field(default=30, ge=1)

    # Report time series: per day, per week, or "auto" (weeks past 60 days).
    report_period: Literal["auto", "day", "week"] = "auto"

    # Alerts look at the e-mails sent in the last alert_lookback_days and stay
    # quiet for campaigns with fewer than alert_min_sends delivered. A rate at
    # its maximum is a warning; at twice the maximum it is critical.
    alert_lookback_days: int = Field(default=7, ge=1, le=365)
    alert_min_sends: int = Field(default=50, ge=1)
    bounce_rate_max: float = Field(default=0.02, gt=0, le=1)
    unsubscribe_rate_max: float = Field(default=0.005, gt=0, le=1)
    spam_complaint_rate_max: float = Field(default=0.001, gt=0, le=1)

    # CTR collapse: the CTR of the e-mails sent in the last ctr_recent_days
    # (leaving ctr_settle_hours for clicks to arrive) below ctr_collapse_ratio
    # times the campaign's CTR over the ctr_trailing_days before them.
    ctr_collapse_ratio: float = Field(default=0.5, gt=0, lt=1)
    ctr_recent_days: int = Field(default=7, ge=1, le=90)
    ctr_trailing_days: int = Field(default=28, ge=1, le=365)
    ctr_settle_hours: int = Field(default=24, ge=0, le=24 * 14)

    # A run whose e-mails were all due this long ago and none was accepted.
    run_grace_hours: float = Field(default=2.0, ge=0, le=24 * 14)
    # A feedback stream whose pulls failed this many times in a row.
    pull_failures_max: int = Field(default=3, ge=1)
    # Seconds to wait for the alert webhook before giving up (and logging it).
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        """Return the `[feedback]` config the settings hold, or the defaults."""
        config = settings.section("feedback") if settings is not None else None
        return config if isinstance(config, cls) else cls()
