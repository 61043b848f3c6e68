"""What the e-mails did and earned, per campaign, variant, segment and period.

`build_report` reads the send ledger, engagement, orders and customer
segments into a `Report` of plain frames: sends, delivered, human opens,
clicks, CTR, click-to-open, unsubscribes, bounces, the orders and revenue of
recipients within the attribution window, the revenue credited by last touch,
and the incremental revenue over the holdout with its confidence interval and
verdict. The report prints as JSON or writes a self-contained HTML page whose
charts are SVG drawn here (no script, no network).
"""

from __future__ import annotations

import html
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from nudge.feedback.attribution import (
    ALL_VARIANTS,
    NO_VARIANT,
    SIGNIFICANT,
    Effect,
    Interval,
    Measured,
    measure,
)
from nudge.feedback.config import FeedbackConfig
from nudge.feedback.events import FeedbackError, utcnow
from nudge.settings import Settings
from nudge.store.feedback_models import (
    BOUNCE_HARD,
    BOUNCE_SOFT,
    CLICK,
    OPEN,
    SPAM_COMPLAINT,
    UNSUBSCRIBE,
)
from nudge.store.insight_models import CustomerProfile
from nudge.store.send_models import ACCEPTED, Send

UNKNOWN_SEGMENT = "unknown"
# Past this many days of sends, "auto" shows weeks instead of days.
AUTO_WEEKS_AFTER_DAYS = 60
FLAGS = ["opened", "clicked", "unsubscribed", "bounced", "complained"]
COUNTS = [
    "sends",
    "delivered",
    "holdout",
    "human_opens",
    "clicks",
    "unsubscribes",
    "bounces",
    "spam_complaints",
    "orders",
    "revenue",
    "attributed_orders",
    "attributed_revenue",
]
EFFECT_COLUMNS = [
    "treated",
    "control",
    "treated_conversion_rate",
    "control_conversion_rate",
    "conversion_uplift",
    "conversion_uplift_low",
    "conversion_uplift_high",
    "revenue_per_recipient_uplift",
    "revenue_per_recipient_uplift_low",
    "revenue_per_recipient_uplift_high",
    "incremental_revenue",
    "incremental_revenue_low",
    "incremental_revenue_high",
    "verdict",
    "conversion_verdict",
    "note",
]


def send_flags(events: pd.DataFrame) -> pd.DataFrame:
    """Return, per send id, whether it was opened, clicked, unsubscribed, bounced.

    A send counts as opened by a person after a human open or a click (a
    click proves a person looked, even when images were blocked); machine
    opens count for nothing.
    """
    if events.empty:
        return pd.DataFrame(columns=FLAGS, index=pd.Index([], name="send_id"))
    kind = events["kind"]
    human_open = (kind == OPEN) & ~events["machine_open"].astype(bool)
    marks = pd.DataFrame(
        {
            "send_id": events["send_id"].astype("int64"),
            "opened": human_open | (kind == CLICK),
            "clicked": kind == CLICK,
            "unsubscribed": kind == UNSUBSCRIBE,
            "bounced": kind.isin((BOUNCE_HARD, BOUNCE_SOFT)),
            "complained": kind == SPAM_COMPLAINT,
        }
    )
    return marks.groupby("send_id")[FLAGS].any()


def with_flags(sends: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Return the sends with the `send_flags` of their events as columns."""
    flags = send_flags(events)
    out = sends.copy()
    for name in FLAGS:
        out[name] = out["send_id"].map(flags[name]).eq(True).to_numpy()
    return out


def facts(
    measured: Measured, segments: pd.DataFrame | None = None, period: str = "day"
) -> pd.DataFrame:
    """Return one row per ledger row with its engagement, orders and credits.

    ``segments`` (customer_id, as_of, segment) gives each send its customer's
    segment at the latest snapshot at or before its send time.
    """
    frame = measured.sends.copy()
    frame["variant"] = frame["variant"].fillna(NO_VARIANT).astype(str)
    frame["holdout"] = frame["holdout"].astype(bool)
    frame["delivered"] = ~frame["holdout"] & (frame["status"] == ACCEPTED)

    frame = with_flags(frame, measured.events)

    # Outcomes exist for the rows a comparison uses (see `recipients`).
    windowed = measured.outcomes.set_index("send_id")
    frame["compared"] = frame["send_id"].isin(windowed.index)
    frame["orders"] = frame["send_id"].map(windowed["orders"]).fillna(0).astype(int)
    frame["revenue"] = frame["send_id"].map(windowed["revenue"]).fillna(0.0)
    credits = measured.attributed.groupby("send_id")["revenue"].agg(["size", "sum"])
    frame["attributed_orders"] = (
        frame["send_id"].map(credits["size"]).fillna(0).astype(int)
    )
    frame["attributed_revenue"] = frame["send_id"].map(credits["sum"]).fillna(0.0)

    frame["segment"] = _segments(frame, segments)
    frame["period"] = _period_start(frame["due_at"], period)
    return frame


def _segments(frame: pd.DataFrame, segments: pd.DataFrame | None) -> pd.Series:
    """Return each send's segment as of its send time, "unknown" without one."""
    if segments is None or segments.empty or frame.empty:
        return pd.Series(UNKNOWN_SEGMENT, index=frame.index, dtype=object)
    left = frame[["send_id", "customer_id", "due_at"]].assign(
        customer_id=frame["customer_id"].astype("int64"),
        _order=np.arange(len(frame)),
    )
    right = segments.assign(
        customer_id=segments["customer_id"].astype("int64"),
        as_of=pd.to_datetime(segments["as_of"]).astype("datetime64[us]"),
    ).sort_values("as_of")
    merged = pd.merge_asof(
        left.sort_values("due_at"),
        right[["customer_id", "as_of", "segment"]],
        left_on="due_at",
        right_on="as_of",
        by="customer_id",
        direction="backward",
    ).sort_values("_order")
    found = merged["segment"].fillna(UNKNOWN_SEGMENT).astype(object)
    return pd.Series(found.to_numpy(), index=frame.index)


def _period_start(due: pd.Series, period: str) -> pd.Series:
    times = pd.to_datetime(due)
    if period == "week":
        return times.dt.to_period("W-SUN").dt.start_time
    return times.dt.floor("D")


def summarize(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Add up the facts per group and derive CTR and click-to-open.

    Opens, clicks, unsubscribes and bounces count e-mails (one per send
    however often it was clicked); orders and revenue are those of delivered
    e-mails' recipients within the attribution window.
    """
    mailed = ~frame["holdout"]
    delivered = frame["delivered"]
    counts = pd.DataFrame(
        {
            **{k: frame[k] for k in keys},
            "sends": mailed,
            "delivered": delivered,
            "holdout": frame["holdout"],
            "human_opens": frame["opened"] & mailed,
            "clicks": frame["clicked"] & mailed,
            "unsubscribes": frame["unsubscribed"] & mailed,
            "bounces": frame["bounced"] & mailed,
            "spam_complaints": frame["complained"] & mailed,
            "orders": frame["orders"].where(delivered, 0),
            "revenue": frame["revenue"].where(delivered, 0.0),
            "attributed_orders": frame["attributed_orders"],
            "attributed_revenue": frame["attributed_revenue"],
        }
    )
    if counts.empty:
        return pd.DataFrame(columns=[*keys, *COUNTS, "ctr", "click_to_open"])
    summed = counts.groupby(list(keys), sort=True).sum().reset_index()
    for name in COUNTS:
        if name not in ("revenue", "attributed_revenue"):
            summed[name] = summed[name].astype("int64")
    summed["ctr"] = _rate(summed["clicks"], summed["delivered"])
    summed["click_to_open"] = _rate(summed["clicks"], summed["human_opens"])
    return summed


def _rate(part: pd.Series, whole: pd.Series) -> pd.Series:
    return (part / whole.where(whole > 0)).astype("float64")


def effect_row(effect: Effect) -> dict[str, Any]:
    """Flatten one comparison into the report's effect columns."""
    row: dict[str, Any] = {
        "treated": effect.treated,
        "control": effect.control,
        "treated_conversion_rate": effect.treated_rate,
        "control_conversion_rate": effect.control_rate,
        "verdict": effect.verdict,
        "conversion_verdict": effect.conversion_verdict,
        "note": effect.note,
    }
    for name, interval in (
        ("conversion_uplift", effect.conversion_uplift),
        ("revenue_per_recipient_uplift", effect.revenue_uplift),
        ("incremental_revenue", effect.incremental_revenue),
    ):
        row[name] = interval.estimate
        row[f"{name}_low"] = interval.low
        row[f"{name}_high"] = interval.high
    return row


def _with_effects(
    table: pd.DataFrame, effects: list[Effect], whole: bool
) -> pd.DataFrame:
    """Join each campaign (whole) or variant row with its comparison."""
    rows = [
        {"campaign": e.campaign, "variant": e.variant, **effect_row(e)}
        for e in effects
        if (e.variant == ALL_VARIANTS) == whole
    ]
    found = pd.DataFrame(rows, columns=["campaign", "variant", *EFFECT_COLUMNS])
    keys = ["campaign"] if whole else ["campaign", "variant"]
    if whole:
        found = found.drop(columns="variant")
    return table.merge(found, on=keys, how="left")


# ------------------------------------------------------------------ the report


@dataclass
class Report:
    """The figures of one report; each frame is one table of it."""

    generated_at: datetime
    campaign: str | None
    since: datetime | None
    shop: str
    currency: str
    period: str
    config: FeedbackConfig
    campaigns: pd.DataFrame
    variants: pd.DataFrame
    segments: pd.DataFrame
    timeline: pd.DataFrame
    effects: list[Effect] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Tell whether the scope holds no ledger rows at all."""
        return self.campaigns.empty

    def as_json(self) -> dict[str, Any]:
        """Return the whole report as plain JSON values."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "campaign": self.campaign,
            "since": self.since.isoformat() if self.since else None,
            "shop": self.shop,
            "currency": self.currency,
            "period": self.period,
            "click_window_days": self.config.click_window_days,
            "open_window_days": self.config.open_window_days,
            "confidence": self.config.confidence,
            "campaigns": _records(self.campaigns),
            "variants": _records(self.variants),
            "segments": _records(self.segments),
            "timeline": _records(self.timeline),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Return the report as a JSON document."""
        return json.dumps(self.as_json(), indent=indent)

    def write_html(self, path: Path) -> Path:
        """Write the report as one self-contained HTML file; return its path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(self), encoding="utf-8")
        return path


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): _json_value(v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_report(
    engine: Engine,
    settings: Settings,
    campaign: str | None = None,
    since: datetime | None = None,
    *,
    now: datetime | None = None,
) -> Report:
    """Measure the sends of one campaign (or all) due since a moment, up to now."""
    config = FeedbackConfig.from_settings(settings)
    now = now or utcnow()
    if campaign is not None:
        _require_campaign(engine, campaign)
    measured = measure(engine, config, campaign=campaign, since=since, now=now)

    period = config.report_period
    if period == "auto":
        due = measured.sends["due_at"]
        span = (due.max() - due.min()) if len(due) else pd.Timedelta(0)
        period = "week" if span > timedelta(days=AUTO_WEEKS_AFTER_DAYS) else "day"
    table = facts(measured, _read_segments(engine, measured.sends), period)

    return Report(
        generated_at=now,
        campaign=campaign,
        since=since,
        shop=settings.shop_name,
        currency=settings.shop_currency,
        period=period,
        config=config,
        campaigns=_with_effects(summarize(table, ["campaign"]), measured.effects, True),
        variants=_with_effects(
            summarize(table, ["campaign", "variant"]), measured.effects, False
        ),
        segments=_segment_table(table),
        timeline=summarize(table, ["period", "campaign"]),
        effects=measured.effects,
    )


def _segment_table(table: pd.DataFrame) -> pd.DataFrame:
    """Summarize per campaign and segment, with treated and holdout conversion."""
    summary = summarize(table, ["campaign", "segment"])
    if summary.empty:
        return summary.assign(
            treated_conversion_rate=pd.Series(dtype="float64"),
            control_conversion_rate=pd.Series(dtype="float64"),
        )
    converted = table.assign(converted=table["orders"] > 0)
    treated = converted[converted["delivered"]]
    control = converted[converted["holdout"] & converted["compared"]]
    keys = ["campaign", "segment"]
    rates = pd.DataFrame(
        {
            "treated_conversion_rate": treated.groupby(keys)["converted"].mean(),
            "control_conversion_rate": control.groupby(keys)["converted"].mean(),
        }
    )
    return summary.merge(rates.reset_index(), on=keys, how="left")


def _require_campaign(engine: Engine, campaign: str) -> None:
    """Raise a one-line error naming the known campaigns for an unknown one."""
    with engine.connect() as conn:
        known = sorted(
            str(name)
            for name in conn.execute(select(Send.__table__.c.campaign).distinct())
            .scalars()
            .all()
        )
    if campaign in known:
        return
    if not known:
        raise FeedbackError(f"unknown campaign {campaign!r}: nothing was sent yet")
    raise FeedbackError(
        f"unknown campaign {campaign!r}; campaigns with e-mails: {', '.join(known)}"
    )


def _read_segments(engine: Engine, sends: pd.DataFrame) -> pd.DataFrame:
    """Read the segment snapshots of the sends' customers up to the last send."""
    columns = ["customer_id", "as_of", "segment"]
    if sends.empty:
        return pd.DataFrame(columns=columns)
    profiles = CustomerProfile.__table__.c
    ids = sorted({int(i) for i in sends["customer_id"]})
    last = sends["due_at"].max().to_pydatetime()
    rows: list[tuple[Any, ...]] = []
    with engine.connect() as conn:
        # In slices: a long IN list hits SQLite's bound-parameter limit.
        for start in range(0, len(ids), 5_000):
            query = select(
                profiles.customer_id, profiles.as_of, profiles.segment
            ).where(
                profiles.customer_id.in_(ids[start : start + 5_000]),
                profiles.as_of <= last,
            )
            rows.extend(tuple(r) for r in conn.execute(query).all())
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------ HTML

PALETTE = (
    "#2e86c1",
    "#e67e22",
    "#28b463",
    "#8e44ad",
    "#c0392b",
    "#16a085",
    "#7f8c8d",
    "#d4ac0d",
)
GAIN, LOSS, UNSURE = "#1e8449", "#c0392b", "#7f8c8d"
SVG_NS = "http://www.w3.org/2000/svg"


def _svg(width: int, height: int, title: str) -> ET.Element:
    svg = ET.Element(
        "svg",
        xmlns=SVG_NS,
        width=str(width),
        height=str(height),
        viewBox=f"0 0 {width} {height}",
        role="img",
    )
    ET.SubElement(svg, "title").text = title
    ET.SubElement(
        svg, "text", x="8", y="20", attrib={"class": "chart-title"}
    ).text = title
    return svg


def _text(
    parent: ET.Element,
    x: float,
    y: float,
    text: str,
    css: str | None = None,
    fill: str | None = None,
) -> None:
    attrs = {"x": f"{x:.1f}", "y": f"{y:.1f}"}
    if css:
        attrs["class"] = css
    if fill:
        attrs["fill"] = fill
    ET.SubElement(parent, "text", attrs).text = text


def _line(
    parent: ET.Element, x1: float, y1: float, x2: float, y2: float, css: str = ""
) -> None:
    attrs = {"x1": f"{x1:.1f}", "y1": f"{y1:.1f}", "x2": f"{x2:.1f}", "y2": f"{y2:.1f}"}
    if css:
        attrs["class"] = css
    else:
        attrs["stroke-width"] = "2"
    ET.SubElement(parent, "line", attrs)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round axis ticks (1, 2 or 5 times a power of ten) covering a range."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value: float = first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def time_chart(
    title: str,
    periods: Sequence[pd.Timestamp],
    series: Sequence[tuple[str, Sequence[float]]],
    fmt: Callable[[float], str],
    period: str = "day",
) -> str:
    """Draw one line per series over the periods as an SVG string."""
    # Room for the legend: four series a row above the plot.
    rows = max(1, math.ceil(len(series) / 4))
    width, height = 760, 284 + 16 * rows
    left, right, top, bottom = 78, 40, 52 + 16 * rows, 50
    svg = _svg(width, height, title)
    if not periods or not series:
        _text(svg, left, top + 40, "nothing sent in this period yet")
        return ET.tostring(svg, encoding="unicode")

    values = [v for _, vs in series for v in vs if math.isfinite(v)]
    ticks = nice_ticks(0.0, max(values, default=0.0) or 1.0)
    top_value = ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_at(i: int) -> float:
        if len(periods) == 1:
            return left + plot_w / 2
        return left + plot_w * i / (len(periods) - 1)

    def y_at(v: float) -> float:
        return top + plot_h * (1 - v / top_value)

    # Grid and axis labels, then the legend, then one line per series.
    for tick in ticks:
        y = y_at(tick)
        _line(svg, left, y, width - right, y, css="grid")
        _text(svg, left - 6, y + 4, fmt(tick), css="axis-r")
    every = max(1, math.ceil(len(periods) / 10))
    for i, when in enumerate(periods):
        if i % every == 0:
            label = f"week of {when:%d %b}" if period == "week" else f"{when:%d %b}"
            _text(svg, x_at(i), height - bottom + 18, label, css="axis-c")
    for i, (name, _) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        x = left + (i % 4) * 170
        y = 34 + (i // 4) * 16
        ET.SubElement(
            svg, "rect", x=str(x), y=str(y), width="12", height="12", fill=colour
        )
        _text(svg, x + 16, y + 11, name)
    for i, (name, points) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        xy = [
            (x_at(j), y_at(v if math.isfinite(v) else 0.0), v)
            for j, v in enumerate(points)
        ]
        ET.SubElement(
            svg,
            "polyline",
            points=" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in xy),
            fill="none",
            stroke=colour,
            attrib={"stroke-width": "2"},
        )
        for (cx, cy, v), when in zip(xy, periods, strict=True):
            dot = ET.SubElement(
                svg, "circle", cx=f"{cx:.1f}", cy=f"{cy:.1f}", r="3", fill=colour
            )
            ET.SubElement(dot, "title").text = f"{name}, {when:%Y-%m-%d}: {fmt(v)}"
    return ET.tostring(svg, encoding="unicode")


def uplift_chart(
    title: str,
    rows: Sequence[tuple[str, Interval, bool]],
    fmt: Callable[[float], str],
) -> str:
    """Draw each estimate as a dot with its confidence interval as an error bar.

    Green is a gain the interval confirms, red a confirmed loss, grey a
    result that cannot yet be told apart from no effect.
    """
    longest = max((len(label) for label, _, _ in rows), default=10)
    row_h, plot_w, text_w = 30, 330, 380
    left = min(max(7 * longest + 24, 120), 320)
    width, top = left + plot_w + text_w, 44
    height = top + row_h * max(len(rows), 1) + 44
    svg = _svg(width, height, title)
    known = [r for r in rows if math.isfinite(r[1].low) and math.isfinite(r[1].high)]
    if not known:
        _text(svg, 8, top + 20, "no comparison with a holdout yet")
        return ET.tostring(svg, encoding="unicode")

    ticks = nice_ticks(
        min(0.0, *(r[1].low for r in known)), max(0.0, *(r[1].high for r in known)), 4
    )
    low, high = ticks[0], ticks[-1]

    def x_at(v: float) -> float:
        return left + plot_w * (v - low) / (high - low)

    # The scale, with "no effect" marked, then one error bar per row.
    bottom = top + row_h * len(rows)
    for tick in ticks:
        _line(svg, x_at(tick), top - 6, x_at(tick), bottom, css="grid")
        _text(svg, x_at(tick), bottom + 14, fmt(tick), css="axis-c")
    zero = x_at(0.0)
    _line(svg, zero, top - 6, zero, bottom, css="zero")
    _text(svg, zero, bottom + 30, "no effect", css="axis-c")
    for i, (label, interval, significant) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        _text(svg, left - 10, y + 4, label, css="axis-r")
        if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
            _text(svg, left + plot_w + 10, y + 4, "no holdout to compare with")
            continue
        colour = UNSURE
        if significant:
            colour = GAIN if interval.estimate > 0 else LOSS
        shown = (
            f"{_signed(fmt)(interval.estimate)} "
            f"({fmt(interval.low)} to {fmt(interval.high)})"
        )
        x1, x2, xe = x_at(interval.low), x_at(interval.high), x_at(interval.estimate)
        group = ET.SubElement(svg, "g", stroke=colour, fill=colour)
        ET.SubElement(group, "title").text = f"{label}: {shown}"
        for x in (x1, x2):
            _line(group, x, y - 6, x, y + 6)
        _line(group, x1, y, x2, y)
        ET.SubElement(group, "circle", cx=f"{xe:.1f}", cy=f"{y:.1f}", r="5")
        verdict = SIGNIFICANT if significant else "not yet significant"
        _text(svg, left + plot_w + 10, y + 4, f"{shown} {verdict}", fill=colour)
    return ET.tostring(svg, encoding="unicode")


def _signed(fmt: Callable[[float], str]) -> Callable[[float], str]:
    def show(value: float) -> str:
        text = fmt(value)
        return f"+{text}" if value > 0 and not text.startswith("+") else text

    return show


def _money(currency: str, decimals: int = 2) -> Callable[[float], str]:
    def fmt(value: float) -> str:
        if not math.isfinite(value):
            return "–"
        return f"{value:,.{decimals}f} {currency}"

    return fmt


def _count(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "–"


def _percent(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else "–"


def _points(value: float) -> str:
    return f"{value * 100:+.1f} pp" if math.isfinite(value) else "–"


def _uplift_rows(
    effects: Sequence[Effect], pick: Callable[[Effect], Interval], verdict: str
) -> list[tuple[str, Interval, bool]]:
    rows = []
    for effect in effects:
        part = "whole campaign" if effect.variant == ALL_VARIANTS else effect.variant
        significant = getattr(effect, verdict) == SIGNIFICANT
        rows.append((f"{effect.campaign} · {part}", pick(effect), significant))
    return rows


def _series(
    timeline: pd.DataFrame, column: str
) -> tuple[list[pd.Timestamp], list[tuple[str, list[float]]]]:
    """Pivot the timeline into sorted periods and one value list per campaign."""
    if timeline.empty:
        return [], []
    pivot = timeline.pivot_table(
        index="period", columns="campaign", values=column, aggfunc="sum", fill_value=0
    ).sort_index()
    periods = [pd.Timestamp(p) for p in pivot.index]
    return periods, [
        (str(name), [float(v) for v in pivot[name]]) for name in pivot.columns
    ]


Column = tuple[str, str, Callable[[Any], str]]


def _html_table(frame: pd.DataFrame, columns: Sequence[Column], caption: str) -> str:
    """Render chosen columns of a frame as an HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(heading)}</th>" for _, heading, _ in columns)
    body = []
    for row in frame.to_dict("records"):
        cells = "".join(
            f"<td>{html.escape(fmt(row.get(key)))}</td>" for key, _, fmt in columns
        )
        body.append(f"<tr>{cells}</tr>")
    rows = "\n".join(body) or (
        f'<tr><td colspan="{len(columns)}">nothing yet</td></tr>'
    )
    return (
        f"<table><caption>{html.escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>"
    )


def plain(value: Any) -> str:
    """Show a table cell: a date for times, a dash for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, pd.Timestamp | datetime):
        return f"{value:%Y-%m-%d}"
    return str(value)


def _num(fmt: Callable[[float], str]) -> Callable[[Any], str]:
    def show(value: Any) -> str:
        try:
            return fmt(float(value))
        except (TypeError, ValueError):
            return "–"

    return show


def engagement_columns() -> list[Column]:
    """Return the engagement columns shared by the HTML and terminal tables."""
    return [
        ("sends", "sends", _num(_count)),
        ("delivered", "delivered", _num(_count)),
        ("human_opens", "human opens", _num(_count)),
        ("clicks", "clicks", _num(_count)),
        ("ctr", "CTR", _num(_percent)),
        ("click_to_open", "click-to-open", _num(_percent)),
        ("unsubscribes", "unsubscribes", _num(_count)),
        ("bounces", "bounces", _num(_count)),
    ]


def with_ranges(frame: pd.DataFrame, currency: str) -> pd.DataFrame:
    """Add text columns with each estimate and its interval, for tables."""
    out = frame.copy()
    if out.empty or "incremental_revenue" not in out:
        out["incremental_text"] = pd.Series(dtype=object)
        out["conversion_text"] = pd.Series(dtype=object)
        return out
    money = _money(currency)
    out["incremental_text"] = [
        _range(money, r, "incremental_revenue") for r in out.to_dict("records")
    ]
    out["conversion_text"] = [
        _range(_points, r, "conversion_uplift") for r in out.to_dict("records")
    ]
    return out


def _range(fmt: Callable[[float], str], row: Mapping[Any, Any], name: str) -> str:
    """Return "estimate (low to high)" for one row, or a dash without one."""
    values = [row.get(name), row.get(f"{name}_low"), row.get(f"{name}_high")]
    numbers = [float(v) if v is not None else float("nan") for v in values]
    if not all(math.isfinite(v) for v in numbers):
        return "–"
    estimate, low, high = numbers
    return f"{fmt(estimate)} ({fmt(low)} to {fmt(high)})"


def conversion_columns() -> list[Column]:
    """Return the shares of e-mailed and holdout recipients who ordered."""
    return [
        ("treated_conversion_rate", "ordered (e-mailed)", _num(_percent)),
        ("control_conversion_rate", "ordered (holdout)", _num(_percent)),
    ]


def revenue_columns(
    currency: str, confidence: float, *, notes: bool = True
) -> list[Column]:
    """Return the order and revenue columns shared by HTML and terminal tables.

    The first three need only `summarize`; the others need `with_ranges`.
    """
    money = _num(_money(currency))
    level = f"{confidence:.0%}"
    columns: list[Column] = [
        ("orders", "orders", _num(_count)),
        ("revenue", "revenue", money),
        ("attributed_revenue", "attributed revenue", money),
        ("incremental_text", f"incremental revenue ({level} CI)", plain),
        ("conversion_text", f"conversion uplift ({level} CI)", plain),
        ("verdict", "verdict", plain),
    ]
    if notes:
        columns.append(("note", "note", plain))
    return columns


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
p.lead, p.help { color: #555; max-width: 60em; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.8em 1em;
        min-width: 15em; }
.card .big { font-size: 1.5em; font-weight: bold; }
.card.significant { border-left: 6px solid #1e8449; }
.card.loss { border-left: 6px solid #c0392b; }
.card.unsure { border-left: 6px solid #7f8c8d; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
svg { font-family: inherit; font-size: 12px; display: block; margin: 1em 0; }
svg .chart-title { font-size: 15px; font-weight: bold; }
svg .grid { stroke: #e5e5e5; }
svg .zero { stroke: #333; stroke-dasharray: 4 3; }
svg .axis-r { text-anchor: end; fill: #555; }
svg .axis-c { text-anchor: middle; fill: #555; }
"""


def render_html(report: Report) -> str:
    """Return the report as one HTML page with inline SVG charts and tables."""
    e = html.escape
    money = _money(report.currency)
    level = f"{report.config.confidence:.0%}"
    scope = report.campaign or "all campaigns"
    since = f" since {report.since:%Y-%m-%d}" if report.since else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(report.shop)}: e-mail report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(report.shop)}: what the e-mails did and earned</h1>",
        f'<p class="lead">{e(scope)}{e(since)}, as of '
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC.</p>",
    ]
    if report.empty:
        parts.append("<p>No e-mails in this report yet.</p></body></html>")
        return "\n".join(parts)

    # The answer first: what each campaign added over its holdout.
    parts.append("<h2>Did the e-mails make a difference?</h2>")
    parts.append(
        '<p class="help">Incremental revenue is what recipients bought beyond '
        "what the holdout (customers chosen at random and not e-mailed) bought "
        f"within {report.config.click_window_days:g} days of the send. "
        f"The range is the {level} confidence interval: only when it lies "
        "wholly above (or below) zero is the effect called significant.</p>"
    )
    parts.append(_cards(report, money))
    whole = report.effects
    parts.append(
        uplift_chart(
            f"Extra revenue per recipient vs. holdout ({level} CI)",
            _uplift_rows(whole, lambda x: x.revenue_uplift, "verdict"),
            money,
        )
    )
    parts.append(
        uplift_chart(
            f"Extra share of recipients who ordered vs. holdout ({level} CI)",
            _uplift_rows(whole, lambda x: x.conversion_uplift, "conversion_verdict"),
            _points,
        )
    )

    # Over time, by the day (or week) the e-mails were sent.
    unit = "week" if report.period == "week" else "day"
    periods, clicks = _series(report.timeline, "clicks")
    _, revenue = _series(report.timeline, "attributed_revenue")
    parts.append(f"<h2>Over time (by the {unit} the e-mails were sent)</h2>")
    parts.append(time_chart("E-mails clicked", periods, clicks, _count, report.period))
    parts.append(
        time_chart(
            f"Revenue credited to the e-mails (last click within "
            f"{report.config.click_window_days:g} days, else open within "
            f"{report.config.open_window_days:g})",
            periods,
            revenue,
            _money(report.currency, 0),
            report.period,
        )
    )

    # The tables with every number.
    parts.append("<h2>The numbers</h2>")
    parts.append(_tables(report))
    parts.append(
        '<p class="help">Human opens leave out opens made by privacy proxies; '
        "a click counts as an open. CTR is clicks over delivered e-mails, "
        "click-to-open clicks over human opens. Revenue is what recipients "
        "ordered within the window; attributed revenue is credited by last "
        "touch, each order to one e-mail at most.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _cards(report: Report, money: Callable[[float], str]) -> str:
    cards = []
    for row in report.campaigns.to_dict("records"):
        estimate = float(row.get("incremental_revenue", float("nan")))
        significant = row.get("verdict") == SIGNIFICANT
        kind = "unsure"
        if significant:
            kind = "significant" if estimate > 0 else "loss"
        detail = _range(money, row, "incremental_revenue")
        note = str(row.get("note") or "")
        cards.append(
            f'<div class="card {kind}"><div>{html.escape(str(row["campaign"]))}'
            f'</div><div class="big">{html.escape(money(estimate))}</div>'
            f"<div>{html.escape(detail)}</div>"
            f"<div>{html.escape(str(row.get('verdict') or ''))}</div>"
            + (f"<div>{html.escape(note)}</div>" if note else "")
            + "</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _tables(report: Report) -> str:
    name: Column = ("campaign", "campaign", plain)
    variant: Column = ("variant", "variant", plain)
    segment: Column = ("segment", "segment", plain)
    engagement = engagement_columns()
    money = revenue_columns(report.currency, report.config.confidence)
    rates = conversion_columns()
    campaigns = with_ranges(report.campaigns, report.currency)
    variants = with_ranges(report.variants, report.currency)
    timeline = report.timeline
    period: Column = ("period", report.period, plain)
    return "\n".join(
        [
            _html_table(campaigns, [name, *engagement], "Engagement per campaign"),
            _html_table(
                campaigns,
                [name, ("holdout", "holdout", _num(_count)), *rates, *money],
                "Orders and revenue per campaign",
            ),
            _html_table(
                variants, [name, variant, *engagement], "Engagement per variant"
            ),
            _html_table(
                variants,
                [name, variant, ("holdout", "holdout", _num(_count)), *rates, *money],
                "Orders and revenue per variant",
            ),
            _html_table(
                report.segments,
                [name, segment, *engagement[:5], *rates, *money[:3]],
                "Per customer segment (at the time of the send)",
            ),
            _html_table(
                timeline,
                [period, name, *engagement[:5], *money[:3]],
                f"Per {report.period} sent",
            ),
        ]
    )
