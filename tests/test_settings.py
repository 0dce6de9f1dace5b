"""Settings are read and checked when they load: a bad value never waits for the first job."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stablenew.errors import ConfigError, SettingsError
from stablenew.run import callback_allowed
from stablenew.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _no_shell_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QUEUES", "RETRY_INTERVALS", "WEBHOOK_ALLOWED_HOSTS", "RETRY_MAX", "REDIS_URL"):
        monkeypatch.delenv(f"STABLENEW_{name}", raising=False)


# ---------------------------------------------------------------------------------- list settings
def test_comma_separated_lists_from_the_environment_load_as_typed_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STABLENEW_QUEUES", "low, high")
    monkeypatch.setenv("STABLENEW_RETRY_INTERVALS", "5, 0,7")
    monkeypatch.setenv("STABLENEW_WEBHOOK_ALLOWED_HOSTS", "Hooks.Example.com, 10.0.0.2:8080,")

    settings = Settings()

    assert settings.queues == ["low", "high"]
    assert settings.retry_intervals == [5, 0, 7]
    assert settings.webhook_allowed_hosts == ["hooks.example.com", "10.0.0.2:8080"]


def test_list_defaults_are_every_queue_and_three_growing_intervals() -> None:
    settings = Settings()

    assert settings.queues == ["high", "default", "low"]
    assert settings.retry_intervals == [10, 30, 90]
    assert settings.webhook_allowed_hosts == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STABLENEW_RETRY_INTERVALS", "10,abc"),
        ("STABLENEW_RETRY_INTERVALS", "10,-1"),
        ("STABLENEW_QUEUES", " , "),
        ("STABLENEW_QUEUES", "high,urgent"),
        ("STABLENEW_QUEUES", "high,low,high"),
    ],
)
def test_a_bad_list_setting_is_refused_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError):
        Settings()


def test_callback_hosts_are_checked_against_the_allowed_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLENEW_WEBHOOK_ALLOWED_HOSTS", "HOOKS.example.com,10.0.0.2:8080")

    settings = Settings()

    assert callback_allowed(settings, "https://hooks.example.com/x")
    assert callback_allowed(settings, "http://10.0.0.2:8080/x")
    assert not callback_allowed(settings, "http://10.0.0.2:9090/x")
    assert not callback_allowed(settings, "https://elsewhere.example.com/x")


# ---------------------------------------------------------------------------------- precedence
def test_flags_win_over_variables_which_win_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLENEW_WEBUI_URL", "http://env-host:7860")
    monkeypatch.setenv("STABLENEW_OUTPUT_DIR", "/srv/env-outputs")
    monkeypatch.delenv("STABLENEW_REDIS_URL", raising=False)

    settings = load_settings({"webui_url": "http://flag-host:7860", "output_dir": None, "queues": []})

    assert settings.webui_url == "http://flag-host:7860"  # flag
    assert settings.output_dir == Path("/srv/env-outputs")  # variable: the flag was not given
    assert settings.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"  # default
    assert settings.queues == ["high", "default", "low"]  # an empty list of queue arguments = not given


# ---------------------------------------------------------------------------------- errors
def test_loading_bad_settings_raises_one_problem_per_setting_naming_the_variable_or_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STABLENEW_RETRY_MAX", "three")
    monkeypatch.setenv("STABLENEW_WEBHOOK_SECRET", "")

    with pytest.raises(SettingsError) as raised:
        load_settings({"redis_url": "redis://:hunter2@host/x"}, flag_names={"redis_url": "--redis-url"})

    assert isinstance(raised.value, ConfigError)
    assert sorted(raised.value.lines()) == [
        "--redis-url='redis://:***@host/x': the database after the host must be a number, "
        "0..15 unless your server sets databases",
        "STABLENEW_RETRY_MAX='three': must be an integer >= 0",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/",
        "rediss://:p%2Fw@host:6380/15",
        "unix:///run/redis.sock",
    ],
)
def test_redis_urls_with_a_database_in_range_or_none_load(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("STABLENEW_REDIS_URL", url)

    assert Settings().redis_url.get_secret_value() == url
