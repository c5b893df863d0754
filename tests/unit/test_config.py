"""Settings come from the environment when asked for, with defaults, and say which variable is wrong."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from pdo.cli.main import main
from pdo.core.config import MIN_SECRET_BYTES, PROJECT_ROOT, ConfigError, Settings


def test_defaults_apply_when_nothing_is_set(monkeypatch):
    monkeypatch.delenv("PDO_KAFKA_PORT", raising=False)
    monkeypatch.setenv("PDO_REGISTRY_PORT", "")

    settings = Settings.from_env()

    assert settings.kafka_port == 9092
    assert settings.registry_port == 8081


def test_values_are_read_when_settings_are_built_not_at_import(monkeypatch, tmp_path):
    monkeypatch.setenv("PDO_KAFKA_PORT", "19092")
    monkeypatch.setenv("PDO_RUN_DIR", str(tmp_path / "elsewhere"))

    settings = Settings.from_env()

    assert settings.kafka_port == 19092
    assert settings.run_dir == tmp_path / "elsewhere"
    assert isinstance(settings.run_dir, Path)


def _built_with_run_dir(monkeypatch, run_dir: Path) -> Settings:
    monkeypatch.setenv("PDO_RUN_DIR", str(run_dir))
    return Settings.from_env()


def test_the_default_sqlite_stores_live_in_the_run_dir_so_two_run_dirs_share_no_database(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("PDO_DATABASE_URL", raising=False)
    monkeypatch.delenv("PDO_REGISTRY_DATABASE_URL", raising=False)

    one = _built_with_run_dir(monkeypatch, tmp_path / "one")
    two = _built_with_run_dir(monkeypatch, tmp_path / "two")

    assert one.database_url == f"sqlite:///{tmp_path / 'one' / 'pdo.db'}"
    assert one.registry_database_url == f"sqlite:///{tmp_path / 'one' / 'registry.db'}"
    assert two.database_url == f"sqlite:///{tmp_path / 'two' / 'pdo.db'}"
    assert {one.database_url, one.registry_database_url}.isdisjoint(
        {two.database_url, two.registry_database_url}
    )


def test_an_explicit_database_url_wins_over_the_run_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PDO_DATABASE_URL", "postgresql+psycopg://pdo@db/pdo")
    monkeypatch.setenv("PDO_REGISTRY_DATABASE_URL", f"sqlite:///{tmp_path / 'registry.db'}")

    settings = _built_with_run_dir(monkeypatch, tmp_path / "run")

    assert settings.database_url == "postgresql+psycopg://pdo@db/pdo"
    assert settings.registry_database_url == f"sqlite:///{tmp_path / 'registry.db'}"


def test_no_default_but_the_run_dir_itself_names_the_checkouts_run_folder():
    checkout_run = str(PROJECT_ROOT / "run")

    pinned = [
        setting.metadata["env"]
        for setting in dataclasses.fields(Settings)
        if setting.metadata["env"] != "PDO_RUN_DIR" and checkout_run in str(setting.metadata["default"])
    ]

    assert not pinned, f"these defaults ignore PDO_RUN_DIR: {pinned}"


def test_a_bad_number_names_the_variable_and_the_default(monkeypatch):
    monkeypatch.setenv("PDO_KAFKA_TIMEOUT_S", "ten")

    with pytest.raises(
        ConfigError, match=r"PDO_KAFKA_TIMEOUT_S: 'ten' is not a whole number; the default is 10"
    ):
        Settings.from_env()


def test_every_setting_is_documented_once():
    described = Settings().describe()
    variables = [variable for variable, _, _ in described]

    assert len(variables) == len(set(variables))
    assert all(variable.startswith("PDO_") and doc for variable, _, doc in described)


def test_the_cli_reports_a_bad_setting_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("PDO_REGISTRY_PORT", "eighty")

    code = main(["config"])

    assert code == 2
    assert "PDO_REGISTRY_PORT: 'eighty' is not a whole number" in capsys.readouterr().err


def test_the_readme_documents_every_setting():
    readme = (PROJECT_ROOT / "README.md").read_text()

    missing = [variable for variable, _, _ in Settings().describe() if f"`{variable}`" not in readme]

    assert not missing, f"README.md's configuration table lacks {missing}"


def test_a_secret_is_never_printed(monkeypatch):
    monkeypatch.setenv("PDO_MASKING_KEY", "s3cret-value-for-test")

    shown = dict((variable, value) for variable, value, _ in Settings.from_env().describe())

    assert shown["PDO_MASKING_KEY"] == "(set, hidden)"
    assert "s3cret-value-for-test" not in str(Settings.from_env().describe())
    assert "s3cret-value-for-test" not in repr(Settings.from_env())  # tracebacks print settings


def test_the_development_masking_key_is_flagged(monkeypatch):
    monkeypatch.delenv("PDO_MASKING_KEY", raising=False)

    shown = dict((variable, value) for variable, value, _ in Settings.from_env().describe())

    assert "development default" in shown["PDO_MASKING_KEY"]


def test_a_child_process_environment_carries_exactly_these_settings(monkeypatch, tmp_path):
    chosen = dataclasses.replace(
        Settings.from_env(), run_dir=tmp_path / "run", kafka_port=19999, registry_url="http://r:1"
    )
    for variable, value in chosen.environment().items():
        monkeypatch.setenv(variable, value)
    assert Settings.from_env() == chosen


# ---------------------------------------------------------------------------------------------- secrets

STRONG_KEY = "x" * MIN_SECRET_BYTES


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (None, "placeholder"),  # unset: the built-in development key
        ("pdo-development-masking-key", "placeholder"),
        ("change-me-to-a-long-random-secret", "placeholder"),  # docker-compose.yml's old value
        ("Change-Me-please-this-is-long-enough-to-pass-the-length", "placeholder"),
        ("s" * (MIN_SECRET_BYTES - 1), f"at least {MIN_SECRET_BYTES}"),
    ],
)
def test_outside_development_a_published_or_short_masking_key_is_refused(monkeypatch, key, says):
    monkeypatch.delenv("PDO_ENVIRONMENT", raising=False)
    if key is None:
        monkeypatch.delenv("PDO_MASKING_KEY", raising=False)
    else:
        monkeypatch.setenv("PDO_MASKING_KEY", key)

    with pytest.raises(ConfigError, match=says) as refused:
        Settings.from_env().secret("masking_key")

    assert "PDO_MASKING_KEY" in refused.value.message
    assert (
        "secrets.token_urlsafe(48)" in refused.value.hint
        and "PDO_ENVIRONMENT=development" in refused.value.hint
    )
    if key is not None:
        assert key not in str(refused.value)  # a secret never appears in an error


def test_a_long_random_masking_key_is_accepted(monkeypatch):
    monkeypatch.delenv("PDO_ENVIRONMENT", raising=False)
    monkeypatch.setenv("PDO_MASKING_KEY", STRONG_KEY)
    assert Settings.from_env().secret("masking_key") == STRONG_KEY


def test_only_explicit_development_mode_accepts_the_development_key_with_a_warning(monkeypatch, caplog):
    monkeypatch.delenv("PDO_MASKING_KEY", raising=False)
    monkeypatch.setenv("PDO_ENVIRONMENT", "development")

    with caplog.at_level(logging.WARNING, logger="pdo.core.config"):
        assert Settings.from_env().secret("masking_key") == "pdo-development-masking-key"

    assert "PDO_MASKING_KEY" in caplog.text and "PDO_ENVIRONMENT=development" in caplog.text
    assert "pdo-development-masking-key" not in caplog.text


@pytest.mark.parametrize("value", ["dev", "Development", "prod", "test"])
def test_an_unknown_environment_is_refused(monkeypatch, value):
    monkeypatch.setenv("PDO_ENVIRONMENT", value)
    with pytest.raises(ConfigError, match="PDO_ENVIRONMENT"):
        Settings.from_env()


def test_an_unset_secret_without_default_shows_as_not_set(monkeypatch):
    monkeypatch.delenv("PDO_METRICS_TOKEN", raising=False)
    shown = dict((variable, value) for variable, value, _ in Settings.from_env().describe())
    assert shown["PDO_METRICS_TOKEN"] == "(not set)"
