"""Every Grafana dashboard panel, proven on real data: a running platform (registry, the catalog,
authorization, sharing and metering workers and the gateway as `pdo ...` processes) with records flowing,
scraped every second by the real Prometheus server (Debian's) configured as `pdo up` configures it. Each
panel's query is run as Grafana would run it, its template variables filled (`$tenant` with the values of
its own `label_values` query, `$__rate_interval` with RATE_INTERVAL), and must return data: at least one
series, each carrying every label its legend names, and a number (a panel showing NaN shows nothing).

The traffic makes every panel's event happen at least once: requests decided by the policy and by an
operator, a grant that expires by the clock, a daily quota exceeded, a cap reached, records published over
HTTP (one of them rejected), garbage on a feed and on the requests topic (dead letters), masked fields, an
HTTP stream to a tenant, and billing's gauges exported every second.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from metrics_support import Prometheus, RunningPlatform, prometheus_scraping, running_platform, wait_for

from pdo.core import db, topics
from pdo.core.config import PROJECT_ROOT
from pdo.core.kafka import producer
from pdo.core.topics import TopicId, feed_topic
from pdo.gateway.principals import PrincipalStore

pytestmark = pytest.mark.integration

WORKERS = ("catalog", "authorization", "sharing", "metering")
DASHBOARDS = sorted((PROJECT_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
EXAMPLES = PROJECT_ROOT / "deploy" / "examples"
# What Grafana's $__rate_interval comes to over a few hours' range at a 15 s scrape; 5 m holds the test's
# traffic however long the platform took to start.
RATE_INTERVAL = "5m"
WAIT_S = 180
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
PARTIES = (("provider", "air-bureau"), ("tenant", "acme"), ("tenant", "initech"), ("operator", "alice"))
QUOTA = 5


def panel_queries() -> list[tuple[str, str, str]]:
    """(where, expr, legendFormat) of every target of every panel of every dashboard."""
    return [
        (f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"], target.get("legendFormat", ""))
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


class Api:
    """The gateway over HTTP with a key per party."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.keys = keys

    def call(self, who: str, method: str, path: str, **kwargs) -> httpx.Response:
        return self.http.request(
            method, path, headers={"Authorization": f"Bearer {self.keys[who]}"}, **kwargs
        )

    def request(self, who: str, fields: list[str], valid_for: timedelta) -> httpx.Response:
        now = datetime.now(UTC)
        body = {
            "dataset_id": "air-quality",
            "purpose": "air quality dashboards",
            "fields": fields,
            "valid_from": (now - timedelta(minutes=1)).isoformat(),
            "valid_until": (now + valid_for).isoformat(),
        }
        return self.call(who, "POST", "/v1/requests", json=body)

    def status(self, who: str, request_id: str) -> dict:
        return self.call(who, "GET", f"/v1/requests/{request_id}").json()


def make_traffic(platform: RunningPlatform) -> None:
    """Drive the platform until every panel's event has happened (see the module's docstring)."""
    settings = platform.settings
    engine = db.make_engine(settings.database_url)
    store = PrincipalStore(engine)
    keys = {
        name: store.issue_key(store.create_principal(kind, name).principal_id).key for kind, name in PARTIES
    }
    engine.dispose()
    api = Api(f"http://127.0.0.1:{settings.gateway_port}", keys)
    dataset = json.loads((EXAMPLES / "air-quality.dataset.json").read_text())
    assert api.call("air-bureau", "POST", "/v1/datasets", json=dataset).status_code == 201

    # acme asks for the sensitive field too: an operator approves it with a small daily quota.
    fields = ["record_id", "district", "aqi", "station_manager_phone"]
    reviewed = api.request("acme", fields, timedelta(days=30)).json()["request_id"]
    wait_for(
        "the policy to send acme's request to review",
        lambda: api.status("acme", reviewed)["status"] == "PENDING_REVIEW",
        platform,
        WAIT_S,
    )
    approved = api.call(
        "alice", "POST", f"/v1/requests/{reviewed}/approve", json={"daily_quota_records": QUOTA}
    )
    assert approved.status_code == 201, approved.text
    # A second request on the same dataset: over the cap of live grants per tenant and dataset.
    assert api.request("acme", ["record_id"], timedelta(days=30)).status_code == 429
    # initech's open request is approved by the policy and expires by the clock seconds later.
    expiring = api.request("initech", ["record_id", "aqi"], timedelta(seconds=15)).json()["request_id"]
    wait_for(
        "the policy to approve initech's request",
        lambda: api.status("initech", expiring)["status"] == "APPROVED",
        platform,
        WAIT_S,
    )
    wait_for(
        "the sharing worker to hold acme's grant", lambda: platform_grants(platform) >= 1, platform, WAIT_S
    )

    records = [json.loads(line) for line in (EXAMPLES / "air-quality.records.jsonl").read_text().splitlines()]
    published = api.call(
        "air-bureau", "POST", "/v1/datasets/air-quality/records", json={"records": [*records, {}]}
    )
    assert published.status_code == 200 and published.json()["accepted"] == len(records), published.text
    send_garbage(platform)
    # acme reads its stream over HTTP (what it was delivered before the quota stopped it).
    with api.http.stream(
        "GET",
        "/v1/streams/air-quality",
        params={"limit": 2, "idle_timeout_s": 30},
        headers={"Authorization": f"Bearer {keys['acme']}"},
    ) as stream:
        assert stream.status_code == 200
        assert sum(1 for line in stream.iter_lines() if line.startswith("event: record")) == 2
    api.http.close()


def platform_grants(platform: RunningPlatform) -> float:
    lines = [
        line for line in platform.metrics("sharing").splitlines() if line.startswith("pdo_sharing_grants ")
    ]
    return float(lines[0].split()[1]) if lines else 0.0


def send_garbage(platform: RunningPlatform) -> None:
    """Bytes no service can decode, on the feed (a sharing dead letter) and on the requests topic (one of
    authorization's)."""
    settings = platform.settings
    send = producer(settings)
    try:
        for topic in (feed_topic("air-quality", settings), topics.name(TopicId.REQUESTS, settings)):
            send.send(topic, key=b"garbage", value=b"not framed Avro").get(timeout=10)
    finally:
        send.close()


@dataclasses.dataclass
class Scraped:
    platform: RunningPlatform
    prometheus: Prometheus


@pytest.fixture(scope="module")
def scraped(kafka_bootstrap, tmp_path_factory) -> Iterator[Scraped]:
    folder = tmp_path_factory.mktemp("dashboards")
    with (
        running_platform(
            folder, WORKERS, billing_gauges_interval_s=1, max_grants_per_tenant_dataset=1
        ) as platform,
        prometheus_scraping(platform, folder) as prometheus,
    ):
        # A rate needs a sample from before the traffic: the traffic takes seconds, and a panel whose counters
        # all rose before Prometheus's first scrape would show no rate at all.
        wait_for("a first scrape of every target", lambda: every_target_scraped(prometheus), platform, WAIT_S)
        make_traffic(platform)
        yield Scraped(platform, prometheus)


def every_target_scraped(prometheus: Prometheus) -> bool:
    jobs = {item["metric"]["job"]: item["value"][1] for item in prometheus.query("up")}
    return {"sharing", "metering", "gateway"} <= jobs.keys() and all(value == "1" for value in jobs.values())


def filled(expr: str, variables: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr.replace('"$1"', ""), f"an unfilled variable in {expr}"
    return expr


def variables_of(prometheus: Prometheus, platform: RunningPlatform) -> dict[str, str]:
    """Each dashboard variable as Grafana fills a multi-value one: its values from `label_values(m, l)`, as a
    regex alternation."""
    values: dict[str, str] = {}
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query).groups()
            found = wait_for(
                f"values of ${variable['name']}",
                lambda metric=metric, label=label: prometheus.get(
                    f"/label/{label}/values", **{"match[]": metric}
                ),
                platform,
                WAIT_S,
            )
            values[variable["name"]] = "|".join(re.escape(value) for value in found)
    return values


def answered(prometheus: Prometheus, expr: str, legend: str) -> list[dict] | None:
    """The query's series when there are some, each with a number and every label the legend names."""
    series = prometheus.query(expr)
    wanted = set(LEGEND_LABEL.findall(legend))
    if series and all(
        wanted <= set(item["metric"]) and not math.isnan(float(item["value"][1])) for item in series
    ):
        return series
    return None


def test_every_panel_of_every_dashboard_returns_data_with_its_legend_labels(scraped):
    platform, prometheus = scraped.platform, scraped.prometheus
    variables = variables_of(prometheus, platform)
    assert variables["tenant"]  # the tenants dashboard's variable found the tenant delivered to

    unanswered = []
    for where, expr, legend in panel_queries():
        query = filled(expr, variables)
        try:
            wait_for(where, lambda q=query, legend=legend: answered(prometheus, q, legend), platform, WAIT_S)
        except AssertionError:
            unanswered.append(f"{where}: {query} -> {prometheus.query(query)}")

    assert not unanswered, "panels without data:\n" + "\n".join(unanswered)


def test_the_traffic_reached_the_quota_and_the_clock(scraped):
    """The events the panels show happened for the reasons the traffic gave them."""
    exceeded = scraped.prometheus.query("sum by (tenant) (pdo_metering_quota_exceeded_total)")
    assert [item["metric"]["tenant"] for item in exceeded] == ["tenant:acme"]
    expired = scraped.prometheus.query('pdo_authorization_clock_transitions_total{to_status="EXPIRED"}')
    assert expired and float(expired[0]["value"][1]) >= 1
    capped = scraped.prometheus.query('pdo_gateway_limited_total{limit="grants_per_tenant_dataset"}')
    assert capped and float(capped[0]["value"][1]) >= 1
