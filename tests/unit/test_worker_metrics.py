"""Every faust worker exports its consumer lag and when it last received a record; the worker commands
serve them on their configured port."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import socket
import uuid

import faust
import pytest
from faust.types import TP
from prometheus_client import REGISTRY, generate_latest

from pdo.cli.main import build_parser
from pdo.core import streams, worker_metrics
from pdo.core.config import Settings

FEED_0, FEED_1, REQUESTS_0 = TP("pdo.feed", 0), TP("pdo.feed", 1), TP("pdo.requests", 0)


class FakeConsumer:
    """The parts of faust's consumer the lag sample reads."""

    def __init__(self, ends, committed, positions) -> None:
        self.ends, self._committed_offset, self.positions = ends, committed, positions

    def assignment(self):
        return set(self.ends)

    async def highwaters(self, *partitions):
        return {tp: self.ends[tp] for tp in partitions}

    async def position(self, tp):
        return self.positions.get(tp)


def make_app(settings, folder) -> faust.App:
    """An app with a group no other test uses (apps of earlier tests may not be collected yet)."""
    return streams.make_app(f"svc-{uuid.uuid4().hex[:8]}", dataclasses.replace(settings, run_dir=folder))


@pytest.fixture
def app(settings, tmp_path) -> faust.App:
    return make_app(settings, tmp_path)


def exported(name: str, service: str) -> list[str]:
    """The samples of metric `name` labelled with `service`, as the default registry exports them."""
    lines = generate_latest(REGISTRY).decode().splitlines()
    return [line for line in lines if line.startswith(name + "{") and f'service="{service}"' in line]


def of(app: faust.App, name: str) -> list[str]:
    return exported(name, app.conf.id)


def test_lag_is_end_offset_minus_committed_or_position_where_nothing_was_committed():
    consumer = FakeConsumer(
        ends={FEED_0: 120, FEED_1: 40, REQUESTS_0: 7},
        committed={FEED_0: 100},
        positions={FEED_1: 40, REQUESTS_0: 9},  # a position past the end (a truncated log) is no debt
    )

    lag = asyncio.run(worker_metrics.sample_lag(consumer))

    assert lag == {FEED_0: 20, FEED_1: 0, REQUESTS_0: 0}


def test_no_assignment_means_no_lag_series():
    consumer = FakeConsumer(ends={}, committed={}, positions={})

    assert asyncio.run(worker_metrics.sample_lag(consumer)) == {}


class FakeGroupConsumer:
    """The parts of an aiokafka group consumer the lag sample reads (the sharing worker's)."""

    def __init__(self, ends, committed, positions) -> None:
        self.ends, self.committed_offsets, self.positions = ends, committed, positions

    def assignment(self):
        return set(self.ends)

    async def end_offsets(self, partitions):
        return {tp: self.ends[tp] for tp in partitions}

    async def committed(self, tp):
        return self.committed_offsets.get(tp)

    async def position(self, tp):
        return self.positions[tp]


def test_a_plain_group_consumers_lag_is_end_minus_committed_and_is_exported_under_its_group():
    consumer = FakeGroupConsumer(
        ends={FEED_0: 120, FEED_1: 40}, committed={FEED_0: 100}, positions={FEED_1: 41}
    )
    service = f"sharing-{uuid.uuid4().hex[:6]}"
    progress = worker_metrics.watch_consumer(consumer, service)

    progress.lag = asyncio.run(worker_metrics.sample_group_lag(consumer))
    progress.last_record_at = 1_800_000_000.0

    assert progress.lag == {FEED_0: 20, FEED_1: 0}
    assert exported("pdo_consumer_lag_records", service) == [
        f'pdo_consumer_lag_records{{partition="0",service="{service}",topic="pdo.feed"}} 20.0',
        f'pdo_consumer_lag_records{{partition="1",service="{service}",topic="pdo.feed"}} 0.0',
    ]
    assert exported("pdo_consumer_last_record_timestamp_seconds", service) == [
        f'pdo_consumer_last_record_timestamp_seconds{{service="{service}"}} 1.8e+09'
    ]
    assert asyncio.run(worker_metrics.sample_group_lag(FakeGroupConsumer({}, {}, {}))) == {}


def test_every_app_exports_its_lag_and_last_record_time_under_its_group(app):
    worker_metrics.progress_of(app).lag = {FEED_1: 5, FEED_0: 3}
    sensors = [sensor for sensor in app.sensors if isinstance(sensor, worker_metrics.LastRecordSensor)]
    sensors[0].clock = lambda: 1_800_000_000.0

    sensors[0].on_message_in(FEED_0, 17, message=None)

    assert of(app, "pdo_consumer_lag_records") == [
        f'pdo_consumer_lag_records{{partition="0",service="{app.conf.id}",topic="pdo.feed"}} 3.0',
        f'pdo_consumer_lag_records{{partition="1",service="{app.conf.id}",topic="pdo.feed"}} 5.0',
    ]
    assert of(app, "pdo_consumer_last_record_timestamp_seconds") == [
        f'pdo_consumer_last_record_timestamp_seconds{{service="{app.conf.id}"}} 1.8e+09'
    ]


def test_a_worker_that_saw_no_record_exports_no_last_record_time(app):
    assert of(app, "pdo_consumer_last_record_timestamp_seconds") == []


def test_a_dropped_app_leaves_no_series_behind(settings, tmp_path):
    app = make_app(settings, tmp_path)
    worker_metrics.progress_of(app).lag = {FEED_0: 3}
    service = app.conf.id
    assert exported("pdo_consumer_lag_records", service)

    del app
    gc.collect()

    assert exported("pdo_consumer_lag_records", service) == []


def test_the_worker_commands_default_to_their_service_metrics_port(monkeypatch):
    monkeypatch.setenv("PDO_SHARING_METRICS_PORT", "")  # conftest turns them off for tests
    monkeypatch.delenv("PDO_CATALOG_METRICS_PORT")
    monkeypatch.setenv("PDO_AUTHORIZATION_METRICS_PORT", "19402")
    settings = Settings.from_env()
    parser = build_parser()

    ports = {
        service: settings.metrics_port(parser.parse_args([service, "worker"]).service)
        for service in ("catalog", "authorization", "sharing")
    }
    given = parser.parse_args(["sharing", "worker", "--metrics-port", "0", "--group", "elsewhere"])

    assert ports == {"catalog": 9401, "authorization": 19402, "sharing": 9403}
    assert (given.metrics_port, given.service) == (0, "sharing")


def test_a_taken_metrics_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(worker_metrics.MetricsPortUnavailable, match=f"127.0.0.1:{port}") as raised:
            worker_metrics.serve(port, "127.0.0.1")

    assert "PDO_*_METRICS_PORT" in raised.value.hint
