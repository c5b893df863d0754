"""Every pdo service, run as `pdo ...` processes on the real broker, serves metrics that pass
`promtool check metrics`; workers report consumer lag and their last record; and the real Prometheus
server, configured as `pdo up` configures it, scrapes them and answers a query for a pdo series.
(Every dashboard panel is run against such a server in test_dashboards_on_prometheus.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from metrics_support import RunningPlatform, prometheus_scraping, running_platform, samples, wait_for

from pdo.core import topics
from pdo.core.config import PROJECT_ROOT, Settings
from pdo.core.kafka import producer
from pdo.core.topics import TopicId

pytestmark = pytest.mark.integration

WORKERS = ("catalog", "authorization", "sharing")


@pytest.fixture(scope="module")
def platform(kafka_bootstrap, tmp_path_factory) -> Iterator[RunningPlatform]:
    """Registry, the three stream workers and the gateway (metrics_support.running_platform)."""
    with running_platform(tmp_path_factory.mktemp("service-metrics"), WORKERS) as running:
        yield running


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
    with prometheus_scraping(platform, tmp_path) as prometheus:
        [grants] = wait_for(
            "pdo_authorization_grants in Prometheus",
            lambda: prometheus.query('pdo_authorization_grants{status="ACTIVE"}'),
            platform,
        )
        up = wait_for(
            "every service scraped",
            lambda: len(found := prometheus.query("up == 1")) == 5 and found,
            platform,
        )
        health = wait_for("the alert rules evaluated", lambda: rule_health(prometheus.api), platform)

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
