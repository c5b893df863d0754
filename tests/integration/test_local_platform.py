"""`pdo up` on a fresh run folder: broker, topics, database and every service come up; Ctrl-C takes them down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from conftest import admin_credentials, free_port
from process_support import default_sigint

from pdo.core.config import PROJECT_ROOT

pytestmark = pytest.mark.integration


def wait_until_answering(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pdo up exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within the time allowed")


def test_pdo_up_brings_the_platform_up_and_ctrl_c_stops_what_it_started(tmp_path):
    kafka_port, registry_port, gateway_port = free_port(), free_port(), free_port()
    metrics_ports = {service: free_port() for service in ("catalog", "authorization", "sharing")}
    # As on a fresh checkout: no secret set and not in development mode; `pdo up` makes its own secrets.
    unset = ("PDO_MASKING_KEY", "PDO_METRICS_TOKEN", "PDO_ENVIRONMENT")
    env = {
        **{name: value for name, value in os.environ.items() if name not in unset},
        "PDO_RUN_DIR": str(tmp_path / "run"),
        "PDO_KAFKA_PORT": str(kafka_port),
        "PDO_KAFKA_CONTROLLER_PORT": str(free_port()),
        "PDO_KAFKA_TLS_PORT": "0",  # the suite's broker holds the TLS port
        "PDO_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "PDO_REGISTRY_PORT": str(registry_port),
        "PDO_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
        "PDO_GATEWAY_PORT": str(gateway_port),
        "PDO_DATABASE_URL": f"sqlite:///{tmp_path / 'pdo.db'}",
        "PDO_REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        **{f"PDO_{service.upper()}_METRICS_PORT": str(port) for service, port in metrics_ports.items()},
        "PDO_AGGREGATION_METRICS_PORT": str(free_port()),
    }
    registry = f"http://127.0.0.1:{registry_port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "pdo.cli.main", "up"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{gateway_port}/healthz", process)
        catalog = httpx.get(f"http://127.0.0.1:{gateway_port}/v1/datasets", timeout=5)
        registered = httpx.post(
            f"{registry}/subjects/pdo.catalog-probe/versions",
            json={"schema": '"string"'},
            auth=admin_credentials(),  # the admin of the broker this pdo up started
            timeout=5,
        )
        anonymous = httpx.get(f"{registry}/subjects", timeout=5)
        worker_metrics = {
            service: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for service, port in metrics_ports.items()
        }
        secrets = tmp_path / "run" / "secrets"
        token = (secrets / "metrics_token").read_text().strip()
        gateway_metrics = {
            "anonymous": httpx.get(f"http://127.0.0.1:{gateway_port}/metrics", timeout=5).status_code,
            "token": httpx.get(
                f"http://127.0.0.1:{gateway_port}/metrics",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            ).status_code,
        }
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)

    assert registered.status_code == 200
    assert anonymous.status_code == 401  # the registry pdo up runs checks passwords against Kafka
    assert gateway_metrics == {"anonymous": 401, "token": 200}
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in secrets.iterdir()}
    assert {"masking_key", "metrics_token", "kafka-controller", "kafka-service.sharing"} <= modes.keys()
    assert set(modes.values()) == {"0o600"}, modes
    assert catalog.status_code == 401  # the gateway answers, and asks for a key
    for service in ("registry", "catalog", "authorization", "sharing", "metering", "aggregation", "gateway"):
        assert f"started {service}" in output
        assert f"stopped {service}" in output
    for service, port in metrics_ports.items():
        assert f"metrics http://127.0.0.1:{port}/metrics" in output
        assert "# TYPE pdo_consumer_lag_records gauge" in worker_metrics[service]
    assert f"prometheus --config.file={tmp_path / 'run' / 'prometheus.yml'}" in output
    assert "127.0.0.1:" + str(metrics_ports["sharing"]) in (tmp_path / "run" / "prometheus.yml").read_text()
    assert "created   pdo.catalog" in output
    assert "created   pdo.authorizations" in output
    assert process.returncode == 130, output  # interrupted, as shells expect after Ctrl-C
    assert not (tmp_path / "run" / "kafka" / "broker.pid").exists()
    status = subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", "broker", "status"], env=env, capture_output=True, text=True
    )
    assert status.returncode == 3, status.stdout
