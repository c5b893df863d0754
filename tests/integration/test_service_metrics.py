"""Every pdo service, run as `pdo ...` processes on the real broker, serves metrics that pass
`promtool check metrics`; workers report consumer lag and their last record; and the real Prometheus
server, configured as `pdo up` configures it, scrapes them and answers a query for a pdo series."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import admin_credentials, free_port, require_program, scrape_headers

from pdo.authorization.testing import create_topics, isolated_home
from pdo.core import db, topics
from pdo.core.config import PROJECT_ROOT, Settings
from pdo.core.kafka import admin_client, producer
from pdo.core.topics import TopicId
from pdo.stack.local_secrets import local_secrets
from pdo.stack.platform import prometheus_config

pytestmark = pytest.mark.integration

WAIT_S = 90
WORKERS = ("catalog", "authorization", "sharing")


@dataclasses.dataclass
class RunningPlatform:
    settings: Settings
    tag: str
    processes: dict[str, subprocess.Popen]
    metrics_urls: dict[str, str]

    def group(self, service: str) -> str:
        return f"{service}-{self.tag}"

    def metrics(self, service: str) -> str:
        # The scrape token Prometheus sends: the gateway needs it, the others ignore it.
        return httpx.get(self.metrics_urls[service], headers=scrape_headers(self.settings), timeout=5).text

    def alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}"


def environment(settings: Settings) -> dict[str, str]:
    """The process environment that makes a `pdo` command see exactly `settings`."""
    return {
        **os.environ,
        **{f.metadata["env"]: str(getattr(settings, f.name)) for f in dataclasses.fields(settings)},
    }


def wait_for(what: str, check: Callable[[], object], platform: RunningPlatform | None = None) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if platform:
            platform.alive()
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {WAIT_S} s")


@pytest.fixture(scope="module")
def platform(kafka_bootstrap, tmp_path_factory) -> Iterator[RunningPlatform]:
    """Registry, the three stream workers (each in a consumer group of its own) and the gateway, on this
    module's topics, databases and free ports; the workers' metrics ports come from their settings."""
    folder = tmp_path_factory.mktemp("service-metrics")
    tag = f"t-{uuid.uuid4().hex[:10]}"
    registry_port = free_port()
    settings = dataclasses.replace(
        Settings.from_env(),
        home=isolated_home(folder, tag),
        run_dir=folder / "run",
        database_url=f"sqlite:///{folder / 'pdo.db'}",
        registry_database_url=f"sqlite:///{folder / 'registry.db'}",
        registry_port=registry_port,
        registry_url=f"http://127.0.0.1:{registry_port}",
        gateway_port=free_port(),
        catalog_metrics_port=free_port(),
        authorization_metrics_port=free_port(),
        sharing_metrics_port=free_port(),
    )
    create_topics(settings)
    db.upgrade(settings.database_url)
    db.upgrade(settings.registry_database_url)
    gateway = f"http://127.0.0.1:{settings.gateway_port}"
    commands = {
        "registry": (("registry", "serve"), f"{settings.registry_url}/subjects"),
        **{
            name: ((name, "worker", "--group", f"{name}-{tag}"), None)
            for name in WORKERS  # ready when their metrics answer
        },
        "gateway": (("gateway", "serve"), f"{gateway}/healthz"),
    }
    running = RunningPlatform(
        settings,
        tag,
        processes={},
        metrics_urls={
            "registry": f"{settings.registry_url}/metrics",
            **{name: f"http://127.0.0.1:{settings.metrics_port(name)}/metrics" for name in WORKERS},
            "gateway": f"{gateway}/metrics",
        },
    )
    logs: dict[str, Path] = {}
    try:
        for name, (command, ready_url) in commands.items():
            logs[name] = folder / f"{name}.log"
            with logs[name].open("wb") as log:
                running.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "pdo.cli.main", *command],
                    env=environment(settings),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            url = ready_url or running.metrics_urls[name]
            wait_for(
                f"answer from {name}",
                lambda url=url: httpx.get(url, auth=admin_credentials(), timeout=2).status_code == 200,
                running,
            )
        yield running
    finally:
        for process in running.processes.values():
            process.terminate()
        for name, process in running.processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            print(f"--- {name}\n{logs[name].read_text(errors='replace')[-3000:]}")  # shown on failure
        with admin_client(settings) as admin:
            admin.delete_topics([name for name in admin.list_topics() if name.startswith(f"pdo.{tag}.")])


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of `name` whose labels include `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + ("{" if labels else "")) and all(label in line for label in wanted)
    ]


# A sample each service exports once it is up, before anything happens on its topics.
FIRST_SAMPLE = {
    "registry": ("pdo_registry_http_requests_total", {"route": "/subjects", "status": "200"}),
    "catalog": ("pdo_consumer_lag_records", {"service": "catalog-{tag}"}),
    "authorization": ("pdo_authorization_grants", {"status": "ACTIVE"}),
    "sharing": ("pdo_sharing_grants", {}),
    "gateway": ("pdo_gateway_http_requests_total", {"route": "/healthz", "status": "200"}),
}


@pytest.mark.parametrize("service", list(FIRST_SAMPLE))
def test_each_service_metrics_pass_promtool_check_metrics(platform, promtool, service):
    name, labels = FIRST_SAMPLE[service]
    labels = {key: value.format(tag=platform.tag) for key, value in labels.items()}
    text = wait_for(
        f"{name} from {service}",
        lambda: (found := platform.metrics(service)) and samples(found, name, **labels) and found,
        platform,
    )

    checked = promtool("check", "metrics", stdin=text)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # no lint findings either


def test_the_authorization_worker_counts_requests_and_grants_from_sql(platform):
    text = wait_for(
        "authorization gauges",
        lambda: (
            (found := platform.metrics("authorization"))
            and samples(found, "pdo_authorization_grants", status="EXPIRED")
            and found
        ),
        platform,
    )

    assert samples(text, "pdo_authorization_pending_requests") == [0.0]
    assert {
        status: samples(text, "pdo_authorization_grants", status=status)
        for status in ("ACTIVE", "SUSPENDED", "REVOKED", "EXPIRED")
    } == {"ACTIVE": [0.0], "SUSPENDED": [0.0], "REVOKED": [0.0], "EXPIRED": [0.0]}


def test_a_worker_reports_the_lag_of_its_partitions_and_when_it_last_received_a_record(platform):
    settings, service = platform.settings, platform.group("catalog")
    catalog_topic = topics.name(TopicId.CATALOG, settings)
    before = time.time()
    send = producer(settings)
    try:
        send.send(catalog_topic, key=b"garbage", value=b"not framed Avro", partition=0).get(timeout=10)
    finally:
        send.close()

    def caught_up() -> str | None:
        text = platform.metrics("catalog")
        lag = samples(text, "pdo_consumer_lag_records", service=service, topic=catalog_topic)
        received = samples(text, "pdo_consumer_last_record_timestamp_seconds", service=service)
        dead = samples(text, "pdo_catalog_projected_events_total", outcome="dead_lettered")
        return text if received and dead and lag and not any(lag) else None

    text = wait_for("the garbage record dead-lettered and committed", caught_up, platform)

    partitions = settings_partitions(settings, catalog_topic)
    lines = [line for line in text.splitlines() if line.startswith("pdo_consumer_lag_records{")]
    assert len([line for line in lines if f'topic="{catalog_topic}"' in line]) == partitions
    [received] = samples(text, "pdo_consumer_last_record_timestamp_seconds", service=service)
    assert before - 1 <= received <= time.time()


def settings_partitions(settings: Settings, topic: str) -> int:
    return next(spec.partitions for spec in topics.declared(settings).values() if spec.name == topic)


def test_the_prometheus_server_scrapes_the_services_and_answers_a_query(platform, tmp_path):
    prometheus = require_program("prometheus", "prometheus")
    local_secrets(platform.settings)  # as `pdo up` does: the gateway's scrape token in its file
    config = prometheus_config(platform.settings, scrape_interval="1s")
    # The test's home has only topics and schemas: point at the project's own alert rules.
    config["rule_files"] = [str(PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    api = f"http://127.0.0.1:{free_port()}/api/v1"
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={api.split('/')[2]}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def query(expr: str) -> list[dict]:
        assert server.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        response = httpx.get(f"{api}/query", params={"query": expr}, timeout=5)
        if response.status_code == 503:  # still starting
            return []
        answer = response.json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    try:
        [grants] = wait_for(
            "pdo_authorization_grants in Prometheus",
            lambda: query('pdo_authorization_grants{status="ACTIVE"}'),
            platform,
        )
        up = wait_for(
            "every service scraped", lambda: len(found := query("up == 1")) == 5 and found, platform
        )
        health = wait_for("the alert rules evaluated", lambda: rule_health(api), platform)
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert grants["metric"]["job"] == "authorization"
    assert grants["value"][1] == "0"
    assert {series["metric"]["job"] for series in up} == set(FIRST_SAMPLE)
    rules = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    declared = [rule.get("alert") or rule["record"] for group in rules["groups"] for rule in group["rules"]]
    assert set(health) == set(declared) and set(health.values()) == {"ok"}


def rule_health(api: str) -> dict[str, str] | None:
    """Each loaded rule's health, once every one of them has been evaluated without error."""
    groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
    health = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    return health if health and set(health.values()) == {"ok"} else None
