"""Typed settings: `config/nudge.toml` overridden by `NUDGE_*` environment variables.

A table in the file flattens into its keys (``[database] url`` is ``database_url``),
which is also the environment variable's name (``NUDGE_DATABASE_URL``). Secrets are
read from the environment only.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formataddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from nudge.errors import ConfigError

ENV_PREFIX = "NUDGE_"
CONFIG_ENV = "NUDGE_CONFIG"
DEFAULT_CONFIG = Path("config") / "nudge.toml"

# Tables whose keys belong to a layer's own config model, named by import path
# so that settings never import the layers above them until they are loaded.
SECTIONS: dict[str, str] = {
    "insight": "nudge.insight.config:InsightConfig",
    "recommend": "nudge.recommend.config:RecommendConfig",
    "campaigns": "nudge.campaigns.config:PlannerConfig",
    "feedback": "nudge.feedback.config:FeedbackConfig",
}

# Celery transports nudge is tested with (memory:// for tests in one process).
BROKER_SCHEMES = frozenset(
    {
        "redis",
        "rediss",
        "amqp",
        "amqps",
        "pyamqp",
        "sqla+sqlite",
        "sqla+postgresql",
        "sqla+postgresql+psycopg",
        "memory",
    }
)

SECRET_FIELDS = frozenset(
    {
        "klaviyo_api_key",
        "mailchimp_api_key",
        "smtp_password",
        "signing_secret",
        "alert_webhook_url",
    }
)


class Settings(BaseModel):
    """Every setting nudge reads, with its default for the embedded store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default=Path("."), description="base for relative paths")

    database_url: str = "sqlite:///var/nudge.db"
    broker_url: str = "sqla+sqlite:///var/celery-broker.db"
    outbox_dir: Path = Path("var/outbox")
    var_dir: Path = Path("var")

    shop_name: str = "Demo Shop"
    shop_url: str = "https://demo-shop.example"
    shop_timezone: str = "Europe/London"
    shop_currency: str = Field(default="GBP", pattern=r"^[A-Z]{3}$")
    shop_postal_address: str = "1 Example Street, London, UK"
    # The From address of every e-mail; default: the shop's name at hello@<host>.
    shop_sender: str | None = None
    # Where nudge's click and open endpoints are served ([tracking] url). Set,
    # outbox and SMTP e-mails get signed click links and an open pixel there;
    # unset, their links go straight to the shop (with the send id).
    tracking_url: str | None = None

    import_chunk_rows: int = Field(default=100_000, ge=1_000, le=5_000_000)

    klaviyo_base_url: str = "https://a.klaviyo.com"
    klaviyo_api_key: SecretStr | None = None
    klaviyo_metric: str = "Nudge Recommendation"
    mailchimp_base_url: str | None = None
    mailchimp_api_key: SecretStr | None = None
    mailchimp_list_id: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    signing_secret: SecretStr | None = None
    alert_webhook_url: SecretStr | None = None

    # Customers per delivery task: Celery moves under 1,000 tasks/s, so one
    # task per customer would dominate a run.
    jobs_chunk_size: int = Field(default=1_000, ge=1, le=100_000)
    # Every how many seconds beat dispatches due sends (triggered, deferred).
    jobs_dispatch_seconds: int = Field(default=60, ge=5, le=3_600)

    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    log_format: Literal["console", "json"] = "console"

    # Validated config models of the SECTIONS tables that the file or the
    # environment set; a layer reads its own with `section(name)`.
    sections: dict[str, Any] = Field(default_factory=dict)

    def section(self, name: str) -> Any:
        """Return the validated config of a section, or None when nothing set it."""
        return self.sections.get(name)

    @field_validator("shop_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(
                "expected an IANA time zone such as Europe/London"
            ) from err
        return value

    @field_validator("broker_url")
    @classmethod
    def _supported_broker(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in BROKER_SCHEMES:
            raise ValueError(
                "expected a redis://, amqp:// or sqla+sqlite:/// broker URL"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("expected a sqlite:/// or postgresql:// URL")
        return value

    @property
    def timezone(self) -> ZoneInfo:
        """Return the shop's time zone."""
        return ZoneInfo(self.shop_timezone)

    @property
    def sender(self) -> str:
        """Return the From address: the configured one, or the shop at hello@<host>."""
        if self.shop_sender:
            return self.shop_sender
        host = urlsplit(self.shop_url).hostname or "nudge.invalid"
        return formataddr((self.shop_name, f"hello@{host.removeprefix('www.')}"))

    def path(self, value: Path) -> Path:
        """Resolve a configured path against the settings' home folder."""
        return value if value.is_absolute() else (self.home / value)

    @property
    def resolved_database_url(self) -> str:
        """Return the database URL with a relative SQLite path made absolute."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            rest = self.database_url[len(prefix) :]
            if rest and rest != ":memory:" and not rest.startswith("/"):
                return prefix + str(self.path(Path(rest)).resolve())
        return self.database_url


@dataclass(frozen=True)
class _Source:
    """Where one setting's raw value came from, for error messages."""

    name: str
    value: Any


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


def _read_file(path: Path) -> dict[str, _Source]:
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", key=str(path)) from err
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", key=str(path)) from err

    sources: dict[str, _Source] = {}
    for name, value in _flatten(table).items():
        if name in SECRET_FIELDS:
            raise ConfigError(
                f"secrets are read from the environment only; "
                f"set {ENV_PREFIX}{name.upper()} instead",
                key=f"{path}: {name}",
            )
        sources[name] = _Source(f"{path}: {name}", value)
    return sources


def _read_env(env: Mapping[str, str]) -> dict[str, _Source]:
    known = Settings.model_fields
    sources: dict[str, _Source] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if (name in known and name not in {"home", "sections"}) or _section_of(name):
            sources[name] = _Source(var, value)
    return sources


def _section_of(name: str) -> str | None:
    for section in SECTIONS:
        if name.startswith(section + "_"):
            return section
    return None


def _load_model(path: str) -> type[BaseModel]:
    module, _, attribute = path.partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), attribute)
    return model


def _nest(model: type[BaseModel], flat: dict[str, Any]) -> dict[str, Any]:
    """Put ``<part>_<field>`` keys into the nested part models a config has."""
    parts = [
        name
        for name, info in model.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    ]
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        part = next(
            (
                p
                for p in sorted(parts, key=len, reverse=True)
                if key.startswith(p + "_")
            ),
            None,
        )
        if key in model.model_fields or part is None:
            nested[key] = value
        else:
            nested.setdefault(part, {})[key[len(part) + 1 :]] = value
    return nested


def _build_sections(sources: dict[str, _Source]) -> dict[str, Any]:
    """Validate the keys of each section table with that layer's config model."""
    built: dict[str, Any] = {}
    for section, path in SECTIONS.items():
        prefix = section + "_"
        keys = {k: s for k, s in sources.items() if k.startswith(prefix)}
        if not keys:
            continue
        model = _load_model(path)
        values = _nest(model, {k[len(prefix) :]: s.value for k, s in keys.items()})
        try:
            built[section] = model(**values)
        except ValidationError as err:
            first = err.errors()[0]
            field = "_".join(str(part) for part in first["loc"])
            source = keys.get(prefix + field)
            where = source.name if source else f"[{section}]"
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                message = "unknown setting"
            got = f" (got {source.value!r})" if source else ""
            raise ConfigError(f"{message}{got}", key=where) from err
    return built


def find_config(env: Mapping[str, str], cwd: Path) -> Path | None:
    """Return the config file to read: `NUDGE_CONFIG`, else `config/nudge.toml`."""
    if CONFIG_ENV in env:
        path = Path(env[CONFIG_ENV])
        if not path.is_file():
            raise ConfigError("file not found", key=f"{CONFIG_ENV}={path}")
        return path
    candidate = cwd / DEFAULT_CONFIG
    return candidate if candidate.is_file() else None


def load_settings(
    env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Settings:
    """Read the config file and the environment into validated settings."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    config = find_config(env, cwd)

    # Relative paths in the file mean "next to the project", not "next to the
    # shell", so two checkouts never share a store by accident.
    home = config.resolve().parent.parent if config else cwd.resolve()
    sources = _read_file(config) if config else {}
    sources.update(_read_env(env))

    sections = _build_sections(sources)
    plain = {k: s.value for k, s in sources.items() if not _section_of(k)}
    try:
        return Settings(home=home, sections=sections, **plain)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        where = sources[field].name if field in sources else field
        got = sources[field].value if field in sources else None
        shown = "" if field in SECRET_FIELDS or got is None else f" (got {got!r})"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown setting"
        raise ConfigError(f"{message}{shown}", key=where) from err


def signing_key(settings: Settings) -> str:
    """Return the key that signs unsubscribe (and tracking) links.

    ``NUDGE_SIGNING_SECRET`` where set; otherwise a random key made once and
    kept in ``<var>/signing.key`` (readable by its owner only), so that the
    embedded default signs links that stay valid from run to run.
    """
    if settings.signing_secret is not None:
        return settings.signing_secret.get_secret_value()
    path = settings.path(settings.var_dir) / "signing.key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    # Written aside, then linked into place: two processes starting at once
    # agree on whichever key was linked first.
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    partial.write_text(key, encoding="utf-8")
    partial.chmod(0o600)
    with contextlib.suppress(FileExistsError):
        os.link(partial, path)
    partial.unlink()
    return path.read_text(encoding="utf-8").strip()
