"""The Grafana dashboards' structure, beyond what test_monitoring_files checks (valid JSON, unique panel ids,
target datasources, known metric names): every panel names the provisioned data source, carries a Grafana
unit that fits its query, uses only template variables the dashboard declares (and each declared one is
used), and its legend names only labels its query keeps. Whether each query returns data with those labels
is proven against a real Prometheus in tests/integration/test_dashboards_on_prometheus.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pdo.core.config import PROJECT_ROOT

GRAFANA = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SOURCE_UID = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
    "datasources"
][0]["uid"]
# Grafana unit ids the dashboards may use (Grafana shows an unknown id as a bare suffix).
UNITS = {"short", "none", "reqps", "rps", "ops", "Bps", "bytes", "s", "ms", "percentunit", "percent"}
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
VARIABLE = re.compile(r"\$(\w+)")
FIRST_GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")


def panels() -> list[tuple[str, dict]]:
    return [
        (f"{path.stem}: {panel['title']}", panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    ]


PANELS = panels()


def test_there_are_panels_to_check():
    assert len(DASHBOARDS) == 3 and len(PANELS) >= 35


@pytest.mark.parametrize("where, panel", PANELS, ids=[where for where, _ in PANELS])
def test_each_panel_names_the_provisioned_data_source_and_a_fitting_unit(where, panel):
    assert panel["datasource"] == {"type": "prometheus", "uid": SOURCE_UID}, where
    unit = panel["fieldConfig"]["defaults"].get("unit")
    assert unit in UNITS, f"{where}: unit {unit!r}"
    exprs = " ".join(target["expr"] for target in panel["targets"])
    if "time() -" in exprs or "_seconds_bucket" in exprs:
        assert unit == "s", f"{where}: a duration in seconds shown as {unit}"
    if "_ratio" in exprs or "/ sum(" in exprs:
        assert unit == "percentunit", f"{where}: a ratio shown as {unit}"


@pytest.mark.parametrize("where, panel", PANELS, ids=[where for where, _ in PANELS])
def test_each_legend_names_only_labels_its_query_keeps(where, panel):
    for target in panel["targets"]:
        wanted = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
        grouping = FIRST_GROUPING.search(target["expr"])
        if grouping is None:
            continue  # no aggregation: the series keep their labels (the integration test checks them)
        kept = {label.strip() for label in grouping.group(1).split(",") if label.strip()}
        assert wanted <= kept, f"{where} [{target['refId']}]: legend {wanted - kept} not in by ({kept})"
    ref_ids = [target["refId"] for target in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids)), where


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_variables_used_are_declared_and_declared_ones_are_used(path: Path):
    dashboard = json.loads(path.read_text())
    declared = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in VARIABLE.findall(target["expr"])
        if not name.startswith("__") and not name.isdigit()  # Grafana's own, and label_replace's $1
    }
    assert used == set(declared), path.name
    for variable in declared.values():
        assert variable["datasource"]["uid"] == SOURCE_UID, f"{path.name}: ${variable['name']}"
        assert variable.get("includeAll") or variable.get("multi") or variable.get("current"), variable[
            "name"
        ]
