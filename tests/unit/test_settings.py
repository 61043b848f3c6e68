"""Settings: file values, environment overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nudge.errors import ConfigError
from nudge.settings import load_settings


def write_config(root: Path, text: str) -> Path:
    (root / "config").mkdir(exist_ok=True)
    path = root / "config" / "nudge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_config_file(tmp_path: Path) -> None:
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.database_url == "sqlite:///var/nudge.db"
    assert (
        settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/var/nudge.db"
    )
    assert settings.shop_timezone == "Europe/London"
    assert settings.klaviyo_api_key is None


def test_tables_in_the_file_flatten_into_settings(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        '[database]\nurl = "postgresql://u@h/db"\n'
        '[shop]\ntimezone = "America/New_York"\n',
    )
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.shop_timezone == "America/New_York"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, '[database]\nurl = "sqlite:///from-file.db"\n')
    env = {
        "NUDGE_DATABASE_URL": "sqlite:///from-env.db",
        "NUDGE_OUTBOX_DIR": "/tmp/outbox-x",
        "NUDGE_KLAVIYO_API_KEY": "pk_secret",
        "NUDGE_SMTP_PORT": "2525",
    }
    settings = load_settings(env=env, cwd=tmp_path)
    assert settings.database_url == "sqlite:///from-env.db"
    assert settings.outbox_dir == Path("/tmp/outbox-x")
    assert settings.klaviyo_api_key is not None
    assert settings.klaviyo_api_key.get_secret_value() == "pk_secret"
    assert settings.smtp_port == 2525


def test_relative_paths_are_relative_to_the_project_not_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, 'var_dir = "state"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = load_settings(env={"NUDGE_CONFIG": str(config)}, cwd=elsewhere)
    assert settings.path(settings.var_dir) == tmp_path.resolve() / "state"
    assert str(tmp_path.resolve()) in settings.resolved_database_url


def test_a_wrong_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"NUDGE_SMTP_PORT": "many"}, cwd=tmp_path)
    message = str(caught.value)
    assert message.startswith("NUDGE_SMTP_PORT: ")
    assert "integer" in message and "'many'" in message
    assert "\n" not in message


def test_a_wrong_file_value_names_the_file_and_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[shop]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, cwd=tmp_path)
    assert str(caught.value) == (
        f"{path}: shop_timezone: expected an IANA time zone such as Europe/London "
        "(got 'Mars/Olympus')"
    )


def test_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    write_config(tmp_path, '[klaviyo]\napi_key = "pk_live"\n')
    with pytest.raises(ConfigError, match="set NUDGE_KLAVIYO_API_KEY instead"):
        load_settings(env={}, cwd=tmp_path)


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            env={"NUDGE_SMTP_PASSWORD": "x", "NUDGE_SMTP_PORT": "0"}, cwd=tmp_path
        )
    assert "NUDGE_SMTP_PORT" in str(caught.value)


def test_unknown_keys_and_broken_toml_are_errors(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'databse_url = "x"\n')
    with pytest.raises(ConfigError, match="databse_url: unknown setting"):
        load_settings(env={}, cwd=tmp_path)
    path.write_text("[shop\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, cwd=tmp_path)


def test_unsupported_database_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NUDGE_DATABASE_URL: expected a sqlite"):
        load_settings(env={"NUDGE_DATABASE_URL": "mysql://x"}, cwd=tmp_path)


def test_missing_config_named_by_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"NUDGE_CONFIG=.*: file not found"):
        load_settings(env={"NUDGE_CONFIG": str(tmp_path / "nope.toml")}, cwd=tmp_path)


def test_shipped_config_is_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    settings = load_settings(env={}, cwd=repo)
    assert settings.home == repo
    assert settings.shop_currency == "GBP"


def test_section_tables_are_validated_by_their_layer(tmp_path: Path) -> None:
    write_config(tmp_path, "[insight]\nnew_days = 14\n")
    env = {"NUDGE_INSIGHT_CHURN_HIGH_FROM": "0.6"}
    config = load_settings(env=env, cwd=tmp_path).section("insight")
    assert (config.new_days, config.churn_high_from) == (14, 0.6)

    with pytest.raises(ConfigError) as caught:
        load_settings(env={"NUDGE_INSIGHT_NEW_DAYS": "soon"}, cwd=tmp_path)
    assert str(caught.value).startswith("NUDGE_INSIGHT_NEW_DAYS: ")
    assert "'soon'" in str(caught.value)

    write_config(tmp_path, "[insight]\nnew_dayz = 14\n")
    with pytest.raises(ConfigError, match="insight_new_dayz: unknown setting"):
        load_settings(env={}, cwd=tmp_path)


def test_a_broker_url_nudge_cannot_use_is_refused_with_the_key(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="NUDGE_BROKER_URL: expected a redis://"):
        load_settings(env={"NUDGE_BROKER_URL": "bogus://x"}, cwd=tmp_path)
