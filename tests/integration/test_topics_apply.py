"""`pdo topics apply` on the real broker: creates what is missing, is idempotent, reports drift."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import free_port, unique_name

from pdo.core import topics
from pdo.core.config import PROJECT_ROOT, Settings
from pdo.core.kafka import admin_client

pytestmark = pytest.mark.integration


def declaration(tmp_path, **overrides) -> topics.TopicSpec:
    path = tmp_path / "example.yaml"
    path.write_text(
        "name: pdo.example\ndescription: test topic\npartitions: 2\nreplication: 1\n"
        "cleanup_policy: compact\nretention_ms: 3600000\nkey: example_id\nvalues: [pdo.x.v1.X]\n"
    )
    return replace(topics.parse_declaration(path), name=unique_name("pdo.test"), **overrides)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
    )


def test_apply_creates_a_missing_topic_with_its_declared_layout(kafka_bootstrap, tmp_path):
    spec = declaration(tmp_path)

    with admin_client(Settings.from_env()) as admin:
        report = topics.apply(admin, [spec])
        partitions = admin.describe_topics([spec.name])[0]["partitions"]

    assert report.created == [spec.name]
    assert len(partitions) == 2


def test_apply_creates_a_topic_with_its_minimum_compaction_lag(kafka_bootstrap, tmp_path):
    spec = declaration(tmp_path, min_compaction_lag_ms=604800000)

    with admin_client(Settings.from_env()) as admin:
        topics.apply(admin, [spec])
        again = topics.apply(admin, [spec])
        lagging = topics.apply(admin, [replace(spec, min_compaction_lag_ms=1000)])

    assert again.unchanged == [spec.name]  # the broker holds the declared lag
    assert "min.compaction.lag.ms=604800000 (declared 1000)" in lagging.drift[0]


def test_apply_twice_changes_nothing_the_second_time(kafka_bootstrap, tmp_path):
    spec = declaration(tmp_path)

    with admin_client(Settings.from_env()) as admin:
        topics.apply(admin, [spec])
        second = topics.apply(admin, [spec])

    assert second.created == []
    assert second.unchanged == [spec.name]
    assert second.clean


def test_apply_reports_drift_without_altering_the_topic(kafka_bootstrap, tmp_path):
    spec = declaration(tmp_path)
    with admin_client(Settings.from_env()) as admin:
        topics.apply(admin, [spec])
        changed = replace(spec, partitions=4, retention_ms=7200000)
        report = topics.apply(admin, [changed])
        partitions = admin.describe_topics([spec.name])[0]["partitions"]

    assert len(report.drift) == 1
    assert "partitions 2 (declared 4)" in report.drift[0]
    assert "retention.ms=3600000 (declared 7200000)" in report.drift[0]
    assert len(partitions) == 2


def test_replication_beyond_the_cluster_is_capped_and_said(kafka_bootstrap, tmp_path):
    three = topics.Replication(factor=3, min_insync=2)
    spec = declaration(tmp_path, replication=topics.ReplicationPlan(production=three, local=three))

    with admin_client(Settings.from_env()) as admin:
        report = topics.apply(admin, [spec])

    assert report.created == [spec.name]
    assert any("replication 3 declared" in note for note in report.notes)


def test_the_cli_applies_the_project_declarations_idempotently(kafka_bootstrap):
    first = run_cli("topics", "apply", "--check")
    second = run_cli("topics", "apply", "--check")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "  created " not in second.stdout
    for spec in topics.declared().values():
        if not spec.templated:
            assert f"ok        {spec.name}" in second.stdout


def test_the_cli_fails_fast_and_clearly_when_no_broker_answers():
    closed_port = free_port()
    started = time.monotonic()

    result = run_cli(
        "topics", "apply", PDO_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed_port}", PDO_KAFKA_TIMEOUT_S="3"
    )

    assert result.returncode == 2
    assert f"cannot reach the Kafka broker at 127.0.0.1:{closed_port}" in result.stderr
    assert "pdo broker start" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
