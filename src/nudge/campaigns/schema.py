"""Campaign files: one YAML file per campaign, validated with file, line and field.

A file in ``config/campaigns/`` holds one campaign; its ``name`` is the file's
name without ``.yaml``. Loading checks the shape (pydantic) and maps every
problem back to the line of the YAML node it concerns, so an error reads
``config/campaigns/winback.yaml:12: trigger.schedule: hour 25 is out of
range 0-23``. `check_campaign` adds what needs the template folder: the
template exists and renders, and each subject variant compiles and stays
within 200 characters once rendered.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from nudge.campaigns.audience import Audience, AudienceError
from nudge.campaigns.cron import Cron
from nudge.campaigns.windows import WEEKDAYS, build_rules, parse_span
from nudge.errors import ConfigError
from nudge.recommend.config import STRATEGY_NAMES, RulesConfig
from nudge.render.model import Esp

EVENTS: tuple[str, ...] = (
    "order_placed",
    "product_added",
    "cart_abandoned",
    "segment_entered",
    "stage_changed",
)
Event = Literal[
    "order_placed",
    "product_added",
    "cart_abandoned",
    "segment_entered",
    "stage_changed",
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# The recommenders' strategies, and "cart": the products the customer left in
# the basket (newest first), which only campaigns use.
STRATEGIES: tuple[str, ...] = (*STRATEGY_NAMES, "blend", "auto", "cart")
SUBJECT_LIMIT = 200
SUFFIX = ".yaml"

_SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")
_UNITS = {"m": 1, "min": 1, "h": 60, "d": 1440, "w": 10080}


def parse_duration(text: str) -> timedelta:
    """Read a duration such as 30m, 4h, 2d or 1w."""
    found = _DURATION.match(str(text))
    if found is None:
        raise ValueError(f"expected a duration such as 30m, 4h, 2d or 1w, got {text!r}")
    return timedelta(minutes=int(found.group(1)) * _UNITS[found.group(2)])


class _Part(BaseModel):
    """A frozen part of a campaign that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Part):
    """When a campaign runs: a cron schedule, or an event after a delay."""

    schedule: str | None = None
    event: Event | None = None
    delay: str = "0m"
    dedupe: str = "0m"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            Cron.parse(value)
        return value

    @field_validator("delay", "dedupe", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> str:
        parse_duration(str(value))
        return str(value)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.schedule is None) == (self.event is None):
            raise ValueError("set either schedule (a cron expression) or event")
        if self.schedule is not None and (self.delay_time or self.dedupe_time):
            raise ValueError("delay and dedupe apply to event triggers only")
        return self

    @property
    def cron(self) -> Cron | None:
        """Return the parsed schedule, if the trigger is scheduled."""
        return Cron.parse(self.schedule) if self.schedule is not None else None

    @property
    def delay_time(self) -> timedelta:
        """Return the wait between the event and the send."""
        return parse_duration(self.delay)

    @property
    def dedupe_time(self) -> timedelta:
        """Return the window in which one customer gets this campaign once."""
        return parse_duration(self.dedupe)


class Recipe(_Part):
    """How the campaign's products are picked (see `nudge.recommend`)."""

    strategy: str = "auto"
    count: int = Field(default=6, ge=1, le=24)
    # Strategy for customers the first one has no (or too short a) list for,
    # such as best_sellers for customers without any history.
    fallback: str | None = None
    exclude_purchased: bool = False
    rules: RulesConfig = RulesConfig()

    @field_validator("strategy", "fallback")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {value!r}; one of: {', '.join(STRATEGIES)}"
            )
        return value

    @property
    def min_items(self) -> int:
        """Return the shortest list worth sending."""
        return min(self.rules.min_items, self.count)


class Variant(_Part):
    """One subject and preheader (Jinja2), sent to a share of the campaign.

    ``strategy`` picks this variant's products with another strategy than the
    recipe's, so that the bandit puts strategies against each other too.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    subject: str = Field(min_length=1)
    preheader: str = ""
    weight: float = Field(default=1.0, gt=0)
    strategy: str | None = None

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str | None) -> str | None:
        if value is not None and value not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {value!r}; one of: {', '.join(STRATEGIES)}"
            )
        return value

    @field_validator("subject", "preheader")
    @classmethod
    def _short(cls, value: str) -> str:
        if len(value) > SUBJECT_LIMIT:
            raise ValueError(f"{len(value)} characters long (at most {SUBJECT_LIMIT})")
        return value


class OfferSpec(_Part):
    """A discount shown in the e-mail; each customer gets their own code."""

    code_prefix: str = Field(pattern=r"^[A-Z0-9]{2,16}$")
    value: str = Field(min_length=1, max_length=32)
    description: str = Field(min_length=1, max_length=120)
    valid_days: int = Field(default=14, ge=1, le=365)


class ValueSpec(_Part):
    """Priors of the expected incremental value, until feedback updates them."""

    # Chance that the e-mail brings an order that would not have happened.
    response_rate: float = Field(gt=0, le=1)
    # Value of such an order: a number, or the customer's own average order.
    order_value: float | Literal["customer"] = "customer"


class Cap(_Part):
    """At most `max` e-mails of this campaign to one customer in `days` days."""

    max: int = Field(ge=1)
    days: int = Field(ge=1, le=365)


class SendWindow(_Part):
    """Weekdays and local hours in which the campaign may send."""

    days: tuple[Weekday, ...] = WEEKDAYS  # type: ignore[assignment]
    hours: str = "00:00-24:00"

    @field_validator("hours")
    @classmethod
    def _span(cls, value: str) -> str:
        parse_span(value)
        return value


class Campaign(_Part):
    """One campaign as its YAML file describes it."""

    name: str = Field(pattern=_SLUG)
    description: str = Field(min_length=1)
    enabled: bool = True
    trigger: Trigger
    audience: str
    recommend: Recipe | None = None
    template: str = Field(pattern=_SLUG)
    variants: tuple[Variant, ...] = Field(min_length=1)
    offer: OfferSpec | None = None
    priority: int = Field(default=0, ge=0, le=100)
    value: ValueSpec
    caps: tuple[Cap, ...] = ()
    # None: the planner's default quiet hours; "": none at all.
    quiet_hours: str | None = None
    send_window: SendWindow | None = None
    holdout: float = Field(default=0.1, ge=0, le=0.9)
    esp: Esp = "outbox"
    approval: Literal["required", "none"] = "none"

    _filter: Audience = PrivateAttr()

    @field_validator("audience")
    @classmethod
    def _parses(cls, value: str) -> str:
        Audience.parse(value)
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value:
            parse_span(value)
        return value

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"variant names must differ: {', '.join(twice)}")
        return value

    @model_validator(mode="after")
    def _sendable(self) -> Self:
        window = self.send_window
        build_rules(
            window.days if window else None,
            window.hours if window else None,
            self.quiet_hours,
        )
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Keep the parsed audience beside its text."""
        self._filter = Audience.parse(self.audience)

    @property
    def audience_filter(self) -> Audience:
        """Return the parsed audience expression."""
        return self._filter

    @property
    def scheduled(self) -> bool:
        """Tell whether the campaign runs on a cron schedule."""
        return self.trigger.schedule is not None


class CampaignError(ConfigError):
    """A campaign file is wrong; names the file, the line and the field."""

    def __init__(
        self, path: Path | str, line: int | None, field: str, message: str
    ) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{field}: {message}" if field else message, key=where)
        self.path = Path(path)
        self.line = line
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class CampaignFile:
    """A loaded campaign with the YAML nodes it came from, for line numbers."""

    path: Path
    campaign: Campaign
    root: yaml.Node

    def line_of(self, *loc: str | int) -> int:
        """Return the 1-based line of the node at a path of keys and indexes."""
        return _node_at(self.root, loc)[0].start_mark.line + 1


def _node_at(root: yaml.Node, loc: Sequence[str | int]) -> tuple[yaml.Node, int]:
    """Follow a path into the YAML tree; return the deepest node and its depth."""
    node, depth = root, 0
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node, depth = child, depth + 1
    return node, depth


def _key_node(root: yaml.Node, loc: Sequence[str | int]) -> yaml.Node | None:
    """Return the key node of the last part of a path, when it is a mapping key."""
    parent, depth = _node_at(root, loc[:-1])
    if depth != len(loc) - 1 or not isinstance(parent, yaml.MappingNode):
        return None
    for key, _ in parent.value:
        if isinstance(key, yaml.ScalarNode) and key.value == str(loc[-1]):
            return key
    return None


def _dotted(loc: Sequence[str | int]) -> str:
    """Write a path of keys and indexes as people read it: variants[1].subject."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _scalar_line(node: yaml.Node, column: int) -> int:
    """Return the 1-based line of a column inside a scalar's text."""
    line = node.start_mark.line
    value = node.value if isinstance(node, yaml.ScalarNode) else ""
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        line += 1 + value[: max(column - 1, 0)].count("\n")
    elif isinstance(node, yaml.ScalarNode) and node.style == ">":
        line += 1
    return line + 1


def _errors(path: Path, root: yaml.Node, err: ValidationError) -> list[CampaignError]:
    """Turn pydantic's errors into campaign errors at their YAML lines."""
    found: list[CampaignError] = []
    seen: set[str] = set()
    # An unknown field first: it is most often a typo behind a missing one.
    ordered = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for error in ordered:
        loc = [p for p in error["loc"] if isinstance(p, str | int)]
        node, depth = _node_at(root, loc)
        shown = _dotted(loc[: max(depth, 1)] if error["type"] != "missing" else loc)
        if shown in seen:
            continue
        seen.add(shown)
        line = node.start_mark.line + 1
        message = error["msg"].removeprefix("Value error, ")
        cause = (error.get("ctx") or {}).get("error")

        # Point at the key for unknown fields, and at the column's own line
        # inside a multi-line audience.
        if error["type"] == "extra_forbidden":
            key = _key_node(root, loc)
            line = key.start_mark.line + 1 if key is not None else line
            message = _unknown_field(loc, error.get("input"))
        elif error["type"] == "missing":
            message = "required field is missing"
        elif isinstance(cause, AudienceError):
            line = _scalar_line(node, cause.column)
        found.append(CampaignError(path, line, shown, message))
    return found


def _unknown_field(loc: Sequence[str | int], _value: Any) -> str:
    """Say a field is unknown and suggest the nearest known one."""
    name = str(loc[-1])
    known = _known_fields(loc[:-1])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field {name!r}{hint}"


def _known_fields(loc: Sequence[str | int]) -> list[str]:
    """Return the field names of the model at a path inside a campaign."""
    model: Any = Campaign
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    return list(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """Return the pydantic model inside an annotation such as tuple[Variant, ...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def parse_campaign(
    path: Path,
) -> tuple[Campaign | None, yaml.Node | None, list[CampaignError]]:
    """Read one campaign file; return it with its YAML tree, or every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        return (
            None,
            None,
            [CampaignError(path, None, "", f"cannot read: {err.strerror}")],
        )
    except UnicodeDecodeError:
        return None, None, [CampaignError(path, None, "", "not UTF-8 text")]

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = err.problem or err.context or "not valid YAML"
        return None, None, [CampaignError(path, line, "", f"not valid YAML: {problem}")]
    if root is None or not isinstance(data, dict):
        return (
            None,
            root,
            [CampaignError(path, 1, "", "expected a mapping of campaign fields")],
        )

    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as err:
        return None, root, _errors(path, root, err)
    if campaign.name != path.name.removesuffix(SUFFIX):
        line = CampaignFile(path, campaign, root).line_of("name")
        return (
            None,
            root,
            [
                CampaignError(
                    path,
                    line,
                    "name",
                    f"{campaign.name!r} differs from the file name {path.name!r}",
                )
            ],
        )
    return campaign, root, []


def load_campaign(path: Path) -> CampaignFile:
    """Load one campaign file; raise the first problem as a CampaignError."""
    campaign, root, problems = parse_campaign(path)
    if problems:
        raise problems[0]
    assert campaign is not None and root is not None
    return CampaignFile(path, campaign, root)


def campaign_paths(folder: Path) -> list[Path]:
    """List the campaign files of a folder, by name."""
    if not folder.is_dir():
        raise ConfigError("campaign folder not found", key=str(folder))
    return sorted(p for p in folder.iterdir() if p.suffix in (SUFFIX, ".yml"))


def load_campaigns(folder: Path, names: Sequence[str] = ()) -> list[CampaignFile]:
    """Load every campaign of a folder (or the named ones); raise the first problem."""
    paths = campaign_paths(folder)
    by_name = {p.name.removesuffix(p.suffix): p for p in paths}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(
            f"no campaign named {', '.join(missing)} (known: {', '.join(by_name)})",
            key=str(folder),
        )
    chosen = [by_name[n] for n in names] if names else paths
    return [load_campaign(p) for p in chosen]


def check_campaign(loaded: CampaignFile, templates: Path) -> list[str]:
    """Check what needs the template folder; return one line per problem."""
    from nudge.render import template_names, validate_subject, validate_template

    campaign, path = loaded.campaign, loaded.path
    known = template_names(templates) if templates.is_dir() else []
    if campaign.template not in known:
        line = loaded.line_of("template")
        hint = f" (known: {', '.join(known)})" if known else ""
        return [
            f"{path}:{line}: template: no template named {campaign.template!r} "
            f"in {templates}{hint}"
        ]

    problems = validate_template(
        templates,
        campaign.template,
        variants=[v.name for v in campaign.variants],
        esps=[campaign.esp],
    )
    for index, variant in enumerate(campaign.variants):
        for part in ("subject", "preheader"):
            source = getattr(variant, part)
            if not source:
                continue
            line = loaded.line_of("variants", index, part)
            found = validate_subject(source, file=path, line=line)
            problems += [p.replace("subject is", f"{part} is") for p in found]
    return problems


def check_folder(folder: Path, templates: Path) -> tuple[list[CampaignFile], list[str]]:
    """Load and check every campaign of a folder; return the good ones and problems."""
    loaded: list[CampaignFile] = []
    problems: list[str] = []
    for path in campaign_paths(folder):
        campaign, root, errors = parse_campaign(path)
        problems += [str(e) for e in errors]
        if campaign is None or root is None:
            continue
        found = CampaignFile(path, campaign, root)
        checked = check_campaign(found, templates)
        problems += checked
        if not checked:
            loaded.append(found)
    return loaded, problems
