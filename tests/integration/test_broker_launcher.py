"""The launcher starts a real Kafka broker of its own (a second one, on free ports), and stops it again."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from pdo.core.config import Settings
from pdo.stack import broker

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_start_is_idempotent_and_stop_shuts_the_broker_down(tmp_path):
    if broker.shutil.which("java") is None or broker.shutil.which("mvn") is None:
        pytest.skip("Java and Maven are needed to run a Kafka broker")
    settings = dataclasses.replace(
        Settings.from_env(),
        run_dir=tmp_path,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_tls_port=0,  # the suite's broker holds the TLS port
    )
    paths = broker.BrokerPaths.from_settings(settings)
    lines: list[str] = []
    started = broker.start(settings, report=lines.append)
    try:
        assert started.running and started.pid is not None
        assert broker.answers_api_versions(settings.kafka_port)
        assert paths.pid_file.read_text().strip() == str(started.pid)
        assert any("ready in" in line for line in lines)

        again = broker.start(settings, report=lines.append)
        assert again.pid == started.pid
        assert "already running" in lines[-1]
        assert broker.status(settings).running
    finally:
        assert broker.stop(settings, report=lines.append)

    assert not broker.answers_api_versions(settings.kafka_port, timeout_s=0.5)
    assert not paths.pid_file.exists()
    assert not broker.status(settings).running
    assert "shut down" in paths.server_log.read_text()
