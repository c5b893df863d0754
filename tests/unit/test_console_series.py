"""The console's time series: the grid (pdo.gateway.series), the in-memory history of refusals and lag
(pdo.gateway.history), the /v1/series routes over HTTP with metering's real tables and fakes for the rest,
and the vendored charting library's pinned files."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources

import httpx
import pytest
from conftest import ServerThread, free_port
from gateway_support import gateway_database
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from test_gateway_api import FakeAuthorization
from test_gateway_console import FakeDeadLetters, stored
from test_gateway_usage import register

from pdo.authorization.public import DataRequest, RequestStatus
from pdo.core.config import Settings
from pdo.core.vocabulary import TenantKind
from pdo.gateway.app import create_app
from pdo.gateway.history import History, counter_reading, local_worker_endpoints, worker_lag_reading
from pdo.gateway.series import Grid, answer, bucket_latest, bucket_sums
from pdo.metering.ledger import Ledger
from pdo.metering.testing import insert_grant, usage_fact

MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# ------------------------------------------------------------------------------------------------- grid


def test_a_grid_ends_with_the_bucket_now_falls_in_and_steps_evenly():
    grid = Grid.ending_at(T0 + timedelta(minutes=4, seconds=31), MINUTE, 5)
    assert grid.start == T0 and grid.end == T0 + 5 * MINUTE
    times = grid.times()
    assert times[0] == int(T0.timestamp()) and {b - a for a, b in zip(times, times[1:], strict=False)} == {60}
    assert grid.index(T0 - timedelta(seconds=1)) is None and grid.index(grid.end) is None
    assert grid.index(T0 + timedelta(minutes=4, seconds=59)) == 4


def test_sums_fill_every_bucket_drop_what_lies_outside_and_keep_label_order():
    grid = Grid(T0, MINUTE, 3)
    points = [
        (T0, {"tenant": "acme", "dataset": "trips"}, 1.5),
        (T0 + timedelta(seconds=59), {"tenant": "acme", "dataset": "trips"}, 1.0),
        (T0 + 2 * MINUTE, {"tenant": "globex", "dataset": "trips"}, 4),
        (T0 - MINUTE, {"tenant": "acme", "dataset": "trips"}, 100),  # before the grid
        (T0 + 3 * MINUTE, {"tenant": "globex", "dataset": "trips"}, 100),  # after it
    ]
    lines = bucket_sums(grid, points)
    assert [(line["label"], line["values"]) for line in lines] == [
        ("acme · trips", [2.5, 0, 0]),
        ("globex · trips", [0, 0, 4]),
    ]
    assert lines[0]["labels"] == {"tenant": "acme", "dataset": "trips"}
    shaped = answer(grid, "records/s", lines)
    assert shaped["step_s"] == 60 and len(shaped["times"]) == 3
    assert all(len(line["values"]) == len(shaped["times"]) for line in shaped["series"])


def test_levels_keep_the_last_sample_of_each_bucket():
    grid = Grid(T0, MINUTE, 2)
    points = [(T0 + timedelta(seconds=s), {"service": "sharing"}, v) for s, v in ((0, 7), (30, 3), (70, 9))]
    assert bucket_latest(grid, points)[0]["values"] == [3, 9]


# ---------------------------------------------------------------------------------------------- history


def test_counter_increases_between_samples_and_a_reset_counts_from_zero():
    registry = CollectorRegistry()
    refusals = Counter("refusals", "test", ["reason"], registry=registry)
    history = History(counter_reading(refusals))
    refusals.labels(reason="conflict").inc()  # before the first sample: counted from the counter's start
    history.sample(T0)
    refusals.labels(reason="forbidden").inc(3)
    history.sample(T0 + timedelta(seconds=10))
    refusals.labels(reason="forbidden").inc(2)
    history.sample(T0 + timedelta(seconds=20))
    assert list(history.increases()) == [
        (T0, {"reason": "conflict"}, 1.0),
        (T0 + timedelta(seconds=10), {"reason": "forbidden"}, 3.0),
        (T0 + timedelta(seconds=20), {"reason": "forbidden"}, 2.0),
    ]
    values = iter([{(("reason", "x"),): 5.0}, {(("reason", "x"),): 1.0}, {(("reason", "x"),): 1.0}])
    restarted = History(lambda: next(values), keep=2)  # the oldest sample was dropped: no baseline
    for minutes in range(3):
        restarted.sample(T0 + minutes * MINUTE)
    assert list(restarted.increases()) == []
    values = iter([{(("reason", "x"),): 5.0}, {(("reason", "x"),): 1.0}])
    reset = History(lambda: next(values))
    reset.sample(T0)
    reset.sample(T0 + MINUTE)
    assert list(reset.increases()) == [(T0, {"reason": "x"}, 5.0), (T0 + MINUTE, {"reason": "x"}, 1.0)]


def test_a_reading_taken_when_asked_counts_but_is_not_kept():
    registry = CollectorRegistry()
    refusals = Counter("refusals", "test", ["reason"], registry=registry)
    history = History(counter_reading(refusals))
    history.sample(T0)
    refusals.labels(reason="forbidden").inc()
    asked = T0 + timedelta(seconds=3)
    assert list(history.increases(asked)) == [(asked, {"reason": "forbidden"}, 1.0)]
    assert list(history.increases()) == []  # nothing kept from the reading
    assert [at for at, _, _ in history.levels(asked)] == [asked]


def test_history_keeps_only_the_newest_samples():
    counter = iter(range(100))
    history = History(lambda: {(("k", "v"),): float(next(counter))}, keep=3)
    for second in range(5):
        history.sample(T0 + timedelta(seconds=second))
    assert [value for _, _, value in history.levels()] == [2.0, 3.0, 4.0]


def test_lag_is_summed_per_service_from_the_workers_endpoints_and_a_silent_one_is_absent():
    registry = CollectorRegistry()
    lag = Gauge("pdo_consumer_lag_records", "test", ["service", "topic", "partition"], registry=registry)
    lag.labels("sharing", "pdo.feed.x", "0").set(5)
    lag.labels("sharing", "pdo.feed.x", "1").set(7)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        read = worker_lag_reading(
            {
                "sharing": f"http://127.0.0.1:{port}/metrics",
                "metering": f"http://127.0.0.1:{free_port()}/metrics",
            }
        )
        assert read() == {(("service", "sharing"),): 12.0}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_lag_is_read_on_loopback_from_the_workers_that_have_a_port():
    ports = {"catalog": 0, "authorization": 0, "sharing": 9403, "metering": 9404, "audit": 0}
    assert local_worker_endpoints("0.0.0.0", ports.__getitem__) == {
        "sharing": "http://127.0.0.1:9403/metrics",
        "metering": "http://127.0.0.1:9404/metrics",
    }


# ----------------------------------------------------------------------------------------- the routes


@dataclass
class Gateway:
    http: httpx.Client
    keys: dict[str, str]

    def get(self, who: str, path: str, **params) -> httpx.Response:
        return self.http.get(path, params=params, headers={"Authorization": f"Bearer {self.keys[who]}"})


def decided(request_id: str, status: RequestStatus, rule: str | None, at: datetime) -> DataRequest:
    return DataRequest(
        request_id=request_id,
        tenant_id="tenant:acme",
        tenant_kind=TenantKind.COMPANY,
        dataset_id="trips",
        purpose="study",
        fields=("record_id",),
        row_filter=None,
        valid_from=at,
        valid_until=at + timedelta(days=1),
        expected_daily_records=None,
        status=status,
        created_at=at,
        updated_at=at,
        decided_by_rule=rule,
        decided_by=None if rule else "operator:alice",
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    from test_gateway_api import FakeCatalog

    engine, keys = gateway_database(tmp_path_factory.mktemp("series"))
    catalog = FakeCatalog()
    register(catalog, "provider:transport", "trips")
    now = datetime.now(UTC)
    insert_grant(engine, "g-acme", now - timedelta(days=1), tenant_id="tenant:acme", dataset_id="trips")
    insert_grant(engine, "g-globex", now - timedelta(days=1), tenant_id="tenant:globex", dataset_id="trips")
    Ledger(engine).record(
        [
            usage_fact("a1", "g-acme", now - timedelta(minutes=3), "tenant:acme", "trips", records=120),
            usage_fact("g1", "g-globex", now - timedelta(minutes=3), "tenant:globex", "trips", records=60),
        ]
    )
    authorization = FakeAuthorization()
    for request in (
        decided("r-1", RequestStatus.APPROVED, "auto-approve", now - timedelta(hours=2)),
        decided("r-2", RequestStatus.DENIED, None, now - timedelta(hours=2)),
        decided("r-3", RequestStatus.PENDING_REVIEW, "review", now),
    ):
        authorization.requests[request.request_id] = request
    letters = FakeDeadLetters([stored(0, 0)])
    letters.letters[0].value["failed_at"] = now - timedelta(minutes=1)
    app = create_app(Settings.from_env(), catalog, authorization, engine, dead_letters=letters)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Gateway(http, keys)
    engine.dispose()


def lines_of(response: httpx.Response) -> dict[str, float]:
    assert response.status_code == 200, response.text
    return {line["label"]: sum(line["values"]) for line in response.json()["series"]}


def test_deliveries_are_records_per_second_and_a_tenant_sees_only_its_own(gateway):
    assert lines_of(gateway.get("alice", "/v1/series/deliveries")) == {
        "tenant:acme · trips": 2.0,
        "tenant:globex · trips": 1.0,
    }
    assert lines_of(gateway.get("acme", "/v1/series/deliveries", minutes=10)) == {"tenant:acme · trips": 2.0}
    assert lines_of(gateway.get("health", "/v1/series/deliveries")) == {}  # a provider of other data


def test_decisions_per_hour_say_the_outcome_and_who_decided(gateway):
    assert lines_of(gateway.get("alice", "/v1/series/decisions", hours=6)) == {
        "APPROVED · policy": 1,
        "DENIED · operator": 1,
    }


def test_dead_letters_and_refusals_per_minute(gateway):
    assert lines_of(gateway.get("alice", "/v1/series/dead-letters")) == {"sharing · UNDECODABLE": 1}
    assert gateway.get("acme", "/v1/series/decisions").status_code == 403
    refused = lines_of(gateway.get("alice", "/v1/series/refusals"))
    assert refused.get("forbidden", 0) >= 1, refused


def test_lag_names_the_workers_it_reads(gateway):
    response = gateway.get("alice", "/v1/series/lag", minutes=5)
    assert response.status_code == 200 and response.json()["unit"] == "records"
    assert isinstance(response.json()["sources"], list)


def test_revenue_this_month_is_priced_from_the_ledger(gateway):
    response = gateway.get("alice", "/v1/series/revenue")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"] == datetime.now(UTC).strftime("%Y-%m")
    assert [(d["dataset_id"], d["records"], d["tenants"]) for d in body["datasets"]] == [("trips", 180, 2)]
    assert gateway.get("acme", "/v1/series/revenue").status_code == 403


@pytest.mark.parametrize("params", [{"minutes": 0}, {"minutes": 100_000}, {"minutes": "x"}])
def test_bad_windows_are_refused(gateway, params):
    assert gateway.get("alice", "/v1/series/deliveries", **params).status_code == 422


def test_me_names_the_key_holder(gateway):
    assert gateway.get("acme", "/v1/me").json()["principal_id"] == "tenant:acme"
    assert gateway.http.get("/v1/me").status_code == 401


# ------------------------------------------------------------------------------------- vendored uPlot


def test_the_vendored_chart_library_is_the_pinned_version():
    """The files are byte for byte those the VERSION note names (an upgrade updates the note)."""
    folder = resources.files("pdo.gateway").joinpath("console").joinpath("vendor")
    note = folder.joinpath("VERSION").read_text()
    pinned = dict(re.findall(r"^sha256 (\S+)\s+([0-9a-f]{64})$", note, re.MULTILINE))
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        assert hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest() == pinned[name], name
    assert "MIT" in folder.joinpath("uPlot.LICENSE").read_text()
