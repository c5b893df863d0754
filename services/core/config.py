"""Settings read from the environment: the one documented list of pdo's configuration variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A setting has a value pdo cannot use; the message names the variable and what it expects."""


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; set it to e.g. {default}") from None


def _env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else default


@dataclass(frozen=True)
class Settings:
    """Every variable pdo reads, with its default. `pdo config` prints the values in force."""

    home: Path = field(
        default_factory=lambda: _env_path("PDO_HOME", PROJECT_ROOT),
        metadata={"env": "PDO_HOME", "doc": "project folder holding schemas/, topics/ and deploy/"},
    )
    run_dir: Path = field(
        default_factory=lambda: _env_path("PDO_RUN_DIR", PROJECT_ROOT / "run"),
        metadata={"env": "PDO_RUN_DIR", "doc": "where the local stack keeps data, logs and pid files"},
    )
    kafka_bootstrap: str = field(
        default_factory=lambda: _env_str("PDO_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        metadata={"env": "PDO_KAFKA_BOOTSTRAP", "doc": "Kafka bootstrap servers, host:port[,host:port]"},
    )
    kafka_port: int = field(
        default_factory=lambda: _env_int("PDO_KAFKA_PORT", 9092),
        metadata={"env": "PDO_KAFKA_PORT", "doc": "client port of the local broker `pdo broker start` runs"},
    )
    kafka_controller_port: int = field(
        default_factory=lambda: _env_int("PDO_KAFKA_CONTROLLER_PORT", 9093),
        metadata={"env": "PDO_KAFKA_CONTROLLER_PORT", "doc": "KRaft controller port of the local broker"},
    )
    kafka_heap: str = field(
        default_factory=lambda: _env_str("PDO_KAFKA_HEAP", "512m"),
        metadata={"env": "PDO_KAFKA_HEAP", "doc": "maximum Java heap of the local broker (-Xmx)"},
    )
    kafka_start_timeout_s: int = field(
        default_factory=lambda: _env_int("PDO_KAFKA_START_TIMEOUT_S", 120),
        metadata={
            "env": "PDO_KAFKA_START_TIMEOUT_S",
            "doc": "seconds `pdo broker start` waits for the new broker to answer before giving up",
        },
    )
    kafka_timeout_s: int = field(
        default_factory=lambda: _env_int("PDO_KAFKA_TIMEOUT_S", 10),
        metadata={"env": "PDO_KAFKA_TIMEOUT_S", "doc": "seconds a client command waits for the broker"},
    )
    registry_url: str = field(
        default_factory=lambda: _env_str("PDO_REGISTRY_URL", "http://127.0.0.1:8081"),
        metadata={"env": "PDO_REGISTRY_URL", "doc": "schema registry the codec and clients use"},
    )
    registry_host: str = field(
        default_factory=lambda: _env_str("PDO_REGISTRY_HOST", "127.0.0.1"),
        metadata={"env": "PDO_REGISTRY_HOST", "doc": "address `pdo registry serve` listens on"},
    )
    registry_port: int = field(
        default_factory=lambda: _env_int("PDO_REGISTRY_PORT", 8081),
        metadata={"env": "PDO_REGISTRY_PORT", "doc": "port `pdo registry serve` listens on"},
    )
    database_url: str = field(
        default_factory=lambda: _env_str("PDO_DATABASE_URL", f"sqlite:///{PROJECT_ROOT / 'run' / 'pdo.db'}"),
        metadata={
            "env": "PDO_DATABASE_URL",
            "doc": "SQLAlchemy URL of the system of record (SQLite default; postgresql+psycopg://… in production)",
        },
    )

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment now (never at import), so tests and commands see what is set when they run."""
        return cls()

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value in force, meaning) for each setting, in declaration order."""
        return [(f.metadata["env"], str(getattr(self, f.name)), f.metadata["doc"]) for f in fields(self)]
