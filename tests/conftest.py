"""Fixtures shared by every tier: settings, the real broker and database, and a live schema registry."""

from __future__ import annotations

import dataclasses
import hmac
import os
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from pdo.core import topics
from pdo.core.config import Settings, local_secret_path
from pdo.core.kafka import admin_client
from pdo.core.serving import ServerThread, free_port

# In CI every backing service is started by .ci/run, so a missing one is a failure, not a skip.
REQUIRE_ALL = os.environ.get("PDO_TEST_REQUIRE_ALL") == "1"

# Tests start workers side by side, and other runs share the machine: on the default metrics ports they
# would collide. Worker processes inherit this; a test that wants an endpoint gives it a free port.
WORKERS_METRICS_OFF = ("CATALOG", "AUTHORIZATION", "SHARING", "METERING", "AGGREGATION", "AUDIT")
for _variable in WORKERS_METRICS_OFF:
    os.environ[f"PDO_{_variable}_METRICS_PORT"] = "0"

# Outside development mode the published default masking key is refused (pdo.core.config): the suite runs
# as production does, with a random master key of its own that every worker it starts inherits.
os.environ.setdefault("PDO_MASKING_KEY", secrets.token_urlsafe(48))
# Fail closed (pdo.audit.liveness) needs a running audit worker before anything may be approved; most tests
# run none, so the guard is off unless a test turns it on (tests/*/test_audit_fail_closed*.py do).
os.environ.setdefault("PDO_AUDIT_FAIL_CLOSED_AFTER_S", "0")
# The gateway's /metrics answers only operators and this scrape token (tests send it as a bearer token).
os.environ.setdefault("PDO_METRICS_TOKEN", secrets.token_urlsafe(48))


def scrape_headers(settings: Settings) -> dict[str, str]:
    """What Prometheus sends to read the gateway's /metrics."""
    return {"Authorization": f"Bearer {settings.metrics_token}"}


# The suite talks to the broker and the registries as its admin. Tests move run_dir into temporary folders
# and start child processes, so the local broker's generated password is handed on explicitly, as a
# deployment would; without a local broker (unit tests alone) a made-up one serves the in-process registries.
if not os.environ.get("PDO_KAFKA_PASSWORD"):
    _admin_secret = local_secret_path(Settings.from_env().run_dir, "kafka-admin")
    os.environ["PDO_KAFKA_PASSWORD"] = (
        _admin_secret.read_text().strip() if _admin_secret.exists() else f"unit-{uuid.uuid4().hex}"
    )


def admin_credentials() -> tuple[str, str]:
    """The suite's user and password, for its own registry and Kafka clients."""
    settings = Settings.from_env()
    return settings.kafka_username, settings.kafka_password


def static_guard(metrics):
    """A registry Guard knowing only the suite's admin, checked without Kafka: for registries that tests run
    in-process, unit tests included. (`pdo registry serve` checks passwords by logging in to Kafka.)"""
    from pdo.registry.auth import Guard

    username, password = admin_credentials()
    known = {username: password}
    return Guard(
        lambda user, given: hmac.compare_digest(known.get(user, "\0"), given),
        lambda user, topic: False,
        metrics,
    )


def _unavailable(what: str) -> None:
    if REQUIRE_ALL:
        pytest.fail(f"{what} is not available, but PDO_TEST_REQUIRE_ALL=1 says it must be")
    pytest.skip(f"{what} is not available (start it with .ci/run or `pdo broker start`)")


__all__ = [
    "ServerThread",
    "free_port",
    "fresh_postgres_database",
    "require_program",
    "scrape_headers",
    "serving_registry",
    "unique_name",
]


def unique_name(prefix: str) -> str:
    """A topic or subject name no other test uses, so tests never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def require_program(name: str, package: str) -> str:
    """The path of an installed program (deploy/setup.sh installs `package`), or skip / fail the test."""
    path = shutil.which(name)
    if path is None:
        _unavailable(f"{name} (Debian package {package})")
    return path


@pytest.fixture(scope="session")
def promtool() -> Callable[..., subprocess.CompletedProcess]:
    """Runs Prometheus's promtool on files or on text given as standard input."""
    path = require_program("promtool", "prometheus")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([path, *args], input=stdin, capture_output=True, text=True, timeout=120)

    return run


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The real broker, with the platform's declared topics in place as after a deployment's `pdo topics apply`."""
    settings = Settings.from_env()
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        _unavailable(f"the Kafka broker at {settings.kafka_bootstrap}")
    with admin_client(settings) as admin:
        topics.apply(admin, [spec for spec in topics.declared(settings).values() if not spec.templated])
    return settings.kafka_bootstrap


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """PostgreSQL for integration tests, from PDO_TEST_POSTGRES_URL (set by .ci/run)."""
    url = os.environ.get("PDO_TEST_POSTGRES_URL")
    if not url:
        _unavailable("PostgreSQL (PDO_TEST_POSTGRES_URL)")
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'pdo.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """Each database pdo supports, empty: SQLite in a temp folder, PostgreSQL in a fresh database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pdo.db'}"
        return
    yield from fresh_postgres_database(request.getfixturevalue("postgres_url"))


def fresh_postgres_database(server_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"pdo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def registry_url(tmp_path) -> Iterator[str]:
    """A live pdo schema registry over HTTP, on its own SQLite file (a test's writes never lock it)."""
    with serving_registry(f"sqlite:///{tmp_path / 'registry.db'}") as url:
        yield url


@contextmanager
def serving_registry(database_url: str, guard=static_guard) -> Iterator[str]:
    """pdo's schema registry over HTTP on `database_url` (migrated here), each request checked by `guard`."""
    from pdo.core import db
    from pdo.registry.app import create_app

    db.upgrade(database_url)
    with ServerThread(create_app(database_url, guard=guard)) as server:
        yield server.url


@contextmanager
def isolated_namespace(base: Settings, folder) -> Iterator[Settings]:
    """`base` in a topic namespace of its own (`pdo.<tag>.…`, created), with its run folder in `folder`; on
    exit every topic of the namespace goes, feeds and tenant streams included. Tests on the shared broker
    thus never read another test's events, and leave nothing a developer's `pdo up` on that broker would see."""
    from pdo.authorization.testing import create_topics, isolated_home

    tag = f"t-{uuid.uuid4().hex[:10]}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(base, home=isolated_home(folder, tag), run_dir=folder / "run")
    create_topics(settings)
    try:
        yield settings
    finally:
        with admin_client(settings) as admin:
            admin.delete_topics([name for name in admin.list_topics() if name.startswith(f"pdo.{tag}.")])
