"""Prometheus's configuration, alert rules and rule tests pass promtool; the Grafana dashboards are
provisioned; and every dashboard query and alert rule uses only metrics that pdo's code defines."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import WORKERS_METRICS_OFF

from pdo.core.config import PROJECT_ROOT, Settings
from pdo.stack.local_secrets import local_secrets
from pdo.stack.platform import SERVICES, prometheus_config

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
GRAFANA = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
RULES = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())

# What prometheus-client exposes for each constructor: the name's samples, with its suffixes.
EXPOSED_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "GaugeMetricFamily": ("",),
    "CounterMetricFamily": ("_total",),
}
CONSTRUCTOR = re.compile(r"\b(" + "|".join(EXPOSED_SUFFIXES) + r")\(\s*\"([a-zA-Z_:][\w:]*)\"")
BUILT_IN = {"up"}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "group_left",
    "group_right",
}  # Prometheus's own series for every scrape target


def metrics_defined_in_code() -> set[str]:
    names = set()
    for path in (PROJECT_ROOT / "services").rglob("*.py"):
        for kind, name in CONSTRUCTOR.findall(path.read_text()):
            base = name.removesuffix("_total") if kind.startswith("Counter") else name
            names.update(base + suffix for suffix in EXPOSED_SUFFIXES[kind])
    return names


def recorded_names() -> set[str]:
    return {rule["record"] for group in RULES["groups"] for rule in group["rules"] if "record" in rule}


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords,
    label matchers, label lists, ranges or durations."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if match.group(2) is None and match.group(1) not in KEYWORDS:
            names.add(match.group(1))
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and template variable of every dashboard."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            found += [(f"{path.name}: {panel['title']}", target["expr"]) for target in panel["targets"]]
        for variable in dashboard["templating"]["list"]:
            # label_values(<selector>, <label>): only the selector names a metric.
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"]).group(1)
            found.append((f"{path.name}: ${variable['name']}", selector))
    return found


def rule_queries() -> list[tuple[str, str]]:
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in RULES["groups"]
        for rule in group["rules"]
    ]


# ---------------------------------------------------------------------------------------------- promtool


def test_the_compose_prometheus_config_is_valid(promtool):
    # Syntax only: the gateway's token file exists inside the Prometheus container (a compose secret).
    checked = promtool("check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml"))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def gateway_job(config: dict) -> dict:
    return next(job for job in config["scrape_configs"] if job["job_name"] == "gateway")


def test_both_prometheus_configs_scrape_the_gateway_with_a_token_file_never_an_inline_secret(tmp_path):
    compose = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    local_settings = dataclasses.replace(Settings.from_env(), run_dir=tmp_path / "run")
    local = prometheus_config(local_settings)

    assert gateway_job(compose)["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/run/secrets/metrics_token",
    }
    assert gateway_job(local)["authorization"]["credentials_file"] == str(
        tmp_path / "run" / "secrets" / "metrics_token"
    )
    for config in (compose, local):
        for job in config["scrape_configs"]:
            assert "credentials" not in job.get("authorization", {}) and "bearer_token" not in job


def test_the_alert_rules_are_valid(promtool):
    checked = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rule_tests_pass(promtool):
    tested = promtool("test", "rules", *map(str, sorted((PROMETHEUS / "tests").glob("*.yml"))))

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_local_config_pdo_up_writes_is_valid(promtool, tmp_path):
    settings = dataclasses.replace(Settings.from_env(), run_dir=tmp_path / "run")
    local_secrets(settings)  # what `pdo up` does first: the gateway's token file exists
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(settings)))

    checked = promtool("check", "config", str(config))

    assert checked.returncode == 0, checked.stdout + checked.stderr


# ---------------------------------------------------------------------------------------------- coverage


def scrape_targets(config: dict) -> dict[str, str]:
    return {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}


def test_compose_and_local_prometheus_scrape_every_service_on_the_same_ports(monkeypatch):
    for service in WORKERS_METRICS_OFF:
        monkeypatch.delenv(f"PDO_{service}_METRICS_PORT")  # conftest turns them off for tests
    compose = scrape_targets(yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text()))
    local = scrape_targets(prometheus_config(Settings.from_env()))

    assert set(compose) == set(local) == {service.name for service in SERVICES}
    for job, target in compose.items():
        host, port = target.split(":")
        assert host == job and host in COMPOSE["services"], f"{job}: scrapes {target}"
        assert local[job] == f"127.0.0.1:{port}", f"{job}: compose port {port}, local {local[job]}"


def test_every_alert_has_a_rule_test_where_it_fires_and_one_where_it_does_not():
    alerts = {rule["alert"] for group in RULES["groups"] for rule in group["rules"] if "alert" in rule}
    fired, silent = set(), set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else silent).add(case["alertname"])

    assert fired == alerts
    assert silent == alerts


def test_grafana_provisions_the_dashboards_folder_compose_mounts():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "pdo.yml").read_text())
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in COMPOSE["services"]["grafana"]["volumes"])

    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert {path.stem for path in DASHBOARDS} == {"platform", "tenants", "control-plane"}
    uid = source["datasources"][0]["uid"]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in dashboard["panels"]:
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            assert {t["datasource"]["uid"] for t in panel["targets"]} == {uid}, (
                f"{path.name}: {panel['title']}"
            )


# ---------------------------------------------------------------------------------------------- names


def test_the_expression_reader_finds_metric_names_and_nothing_else():
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(pdo_x_seconds_bucket{tenant=~"$tenant"}[$__rate_interval])))'
        " / on (job) group_left ignoring (a) time() - max(pdo_y offset 10m) > bool 1e3 and up"
        ' or label_replace(pdo_z_total, "reason", "$1", "reason_code", "(.*)")'
    )

    assert metric_names_in(expr) == {"pdo_x_seconds_bucket", "pdo_y", "up", "pdo_z_total"}


def test_the_code_scan_adds_prometheus_client_suffixes():
    defined = metrics_defined_in_code()

    assert {"pdo_sharing_deliveries_total", "pdo_sharing_deliveries_created"} <= defined
    assert {"pdo_consumer_lag_records", "pdo_authorization_grants"} <= defined
    assert "pdo_sharing_deliveries" not in defined


@pytest.mark.parametrize("source", ["dashboards", "alert rules"])
def test_every_query_uses_only_metrics_the_code_defines(source):
    queries = dashboard_queries() if source == "dashboards" else rule_queries()
    known = metrics_defined_in_code() | recorded_names() | BUILT_IN

    unknown = {
        f"{where}: {name}" for where, expr in queries for name in metric_names_in(expr) if name not in known
    }

    assert queries
    assert not unknown, "queries use metrics no code defines:\n" + "\n".join(sorted(unknown))


def test_every_dashboard_file_is_valid_json_with_a_stable_uid():
    uids = [json.loads(Path(path).read_text())["uid"] for path in DASHBOARDS]

    assert len(uids) == len(set(uids)) and all(uid.startswith("pdo-") for uid in uids)
