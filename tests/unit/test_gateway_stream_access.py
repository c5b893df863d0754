"""The tenant stream endpoint serves records only under a live grant, and within its caps.

Revoked means revoked over HTTP too: after a revocation, suspension or expiry the retained records are not
served, and an open stream ends before its next batch. Streams per tenant and per gateway are capped (429
with Retry-After), and a stream ends at its maximum duration. Kafka is replaced by a consumer that hands
out scripted batches; everything else (keys, routes, error shape, metrics) is the real gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
from aiokafka import TopicPartition
from conftest import ServerThread
from gateway_support import gateway_database

from pdo.authorization.public import Grant
from pdo.core.config import Settings
from pdo.core.vocabulary import GrantStatus, PriceKind, PricePlan
from pdo.gateway import routes_streams as rs
from pdo.gateway.app import create_app

DATASET = "transport-trips"
NOW = datetime.now(UTC)
Batch = Callable[[], dict]


def grant(tenant: str = "tenant:acme", status: GrantStatus = GrantStatus.ACTIVE, **changes) -> Grant:
    base = Grant(
        grant_id=f"g-{tenant.split(':')[1]}",
        request_id="r-1",
        tenant_id=tenant,
        dataset_id=DATASET,
        fields=("record_id",),
        masking={},
        row_filter=None,
        daily_quota_records=None,
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
        price_plan=PricePlan(kind=PriceKind.FREE, unit_price=Decimal("0")),
        status=status,
        version=1,
        created_at=NOW - timedelta(days=1),
        updated_at=NOW,
    )
    return dataclasses.replace(base, **changes)


class Grants:
    """The authorization service as the stream route sees it: list_grants over a mutable list."""

    def __init__(self, *grants: Grant) -> None:
        self.grants = list(grants)

    def list_grants(self, tenant_id=None, dataset_id=None, status=None):
        return [g for g in self.grants if g.tenant_id == tenant_id and g.dataset_id == dataset_id]

    def revoke_all(self) -> None:
        self.grants = [dataclasses.replace(g, status=GrantStatus.REVOKED) for g in self.grants]


class ScriptedConsumer:
    """Hands out `batches` (each a callable making one getmany answer), then nothing, like an idle topic."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = list(batches)
        self._client = SimpleNamespace(fetch_all_metadata=self._metadata)

    async def _metadata(self):
        return SimpleNamespace(partitions_for_topic=lambda topic: {0})

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, partitions) -> None: ...

    def seek(self, partition, offset) -> None: ...

    async def seek_to_beginning(self, *partitions) -> None: ...

    async def seek_to_end(self, *partitions) -> None: ...

    async def end_offsets(self, partitions):
        return {partition: 1000 for partition in partitions}

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if self.batches:
            return self.batches.pop(0)()
        await asyncio.sleep(timeout_ms / 1000)
        return {}


class ScriptedHub(rs.StreamHub):
    """Every stream gets a consumer over `batches`; values decode to {"record_id": <bytes as text>}."""

    def __init__(self, settings: Settings, batches: list[Batch]) -> None:
        super().__init__(settings, heartbeat_s=0.2)
        self.batches = batches

    def consumer(self):
        return ScriptedConsumer(self.batches)

    @property
    def codec(self):
        return SimpleNamespace(decode=lambda value: SimpleNamespace(value={"record_id": value.decode()}))


def batch(*offsets: int) -> Batch:
    messages = [SimpleNamespace(partition=0, offset=o, value=f"r-{o}".encode()) for o in offsets]
    return lambda: {TopicPartition("t", 0): messages}


@dataclasses.dataclass
class Gateway:
    http: httpx.Client
    keys: dict[str, str]
    grants: Grants
    app: object

    def stream(self, who: str = "acme", **params):
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return self.http.stream("GET", f"/v1/streams/{DATASET}", params=params, headers=headers)

    def limited(self, limit: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(
            "pdo_gateway_limited_total", {"limit": limit}
        )
        return value or 0.0


@pytest.fixture
def make_gateway(tmp_path) -> Iterator[Callable[..., Gateway]]:
    engine, keys = gateway_database(tmp_path)
    with contextlib.ExitStack() as stack:

        def make(grants: Grants, batches: list[Batch] = (), **settings_changes) -> Gateway:
            settings = dataclasses.replace(Settings.from_env(), **settings_changes)
            hub = ScriptedHub(settings, list(batches))
            app = create_app(settings, None, grants, engine, feeds=SimpleNamespace(), streams=hub)
            server = stack.enter_context(ServerThread(app))
            http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
            return Gateway(http, keys, grants, app)

        yield make
    engine.dispose()


def events_of(response: httpx.Response) -> list[dict]:
    """The SSE events of a finished stream: {'event', 'id', 'data'} as present (comments left out)."""
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return [e for e in events if "event" in e]


# ---------------------------------------------------------------------------------- revoked means revoked


@pytest.mark.parametrize(
    ("held", "state"),
    [
        (grant(status=GrantStatus.REVOKED), "is revoked"),
        (grant(status=GrantStatus.SUSPENDED), "is suspended"),
        (grant(status=GrantStatus.EXPIRED), "is expired"),
        (grant(valid_until=NOW - timedelta(seconds=1)), "expired at"),  # the clock ran out before expiry ran
        (grant(valid_from=NOW + timedelta(days=1)), "not valid before"),
    ],
)
def test_no_record_is_served_without_a_live_grant(make_gateway, held, state):
    gateway = make_gateway(Grants(held), [batch(0, 1, 2)])
    with gateway.stream() as response:
        response.read()
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden" and state in body["message"] and "g-acme" in body["message"]
    assert "r-0" not in response.text


def test_a_revoked_grant_next_to_a_live_one_still_reads(make_gateway):
    revoked = grant(status=GrantStatus.REVOKED, grant_id="g-old")
    gateway = make_gateway(Grants(revoked, grant()), [batch(0)])
    with gateway.stream(limit=1) as response:
        records = [e for e in events_of(response) if e["event"] == "record"]
    assert response.status_code == 200 and [json.loads(e["data"]) for e in records] == [{"record_id": "r-0"}]


def test_an_open_stream_ends_at_revocation_and_sends_nothing_after(make_gateway):
    grants = Grants(grant())

    def revoked_then_more() -> dict:
        grants.revoke_all()  # the operator revokes between two batches
        return batch(2, 3)()

    gateway = make_gateway(grants, [batch(0, 1), revoked_then_more])
    with gateway.stream(limit=4) as response:  # without the re-check it would end after r-3
        events = events_of(response)
    assert [e["event"] for e in events] == ["record", "record", "error"]
    assert [json.loads(e["data"])["record_id"] for e in events[:2]] == ["r-0", "r-1"]
    ended = json.loads(events[-1]["data"])
    assert ended["error"] == "access_ended" and "revoked" in ended["message"]


def test_a_stream_ends_when_the_grants_state_cannot_be_read(make_gateway):
    grants = Grants(grant())

    def broken_then_more() -> dict:
        def fail(**_):
            raise RuntimeError("database down")

        grants.list_grants = fail
        return batch(1)()

    gateway = make_gateway(grants, [batch(0), broken_then_more])
    with gateway.stream(limit=2) as response:
        events = events_of(response)
    assert [e["event"] for e in events] == ["record", "error"]
    assert json.loads(events[-1]["data"])["error"] == "unavailable"


# --------------------------------------------------------------------------------------------------- caps


def assert_429(response: httpx.Response, fragment: str) -> None:
    response.read()
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "too_many_requests" and fragment in body["message"] and body["hint"]
    assert int(response.headers["Retry-After"]) > 0


def wait_until(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def test_a_tenant_holds_at_most_its_share_of_streams(make_gateway):
    gateway = make_gateway(Grants(grant()), gateway_max_streams_per_tenant=2)
    with gateway.stream() as first, gateway.stream() as second:
        assert (first.status_code, second.status_code) == (200, 200)
        with gateway.stream() as third:
            assert_429(third, "you have 2 streams open already")
        assert gateway.limited("streams_per_tenant") == 1
    # Closing its streams gives the tenant its slots back.
    wait_until(lambda: not gateway.app.state.caps.streams.open_by_tenant)
    with gateway.stream() as again:
        assert again.status_code == 200


def test_the_gateway_serves_at_most_its_total_of_streams(make_gateway):
    grants = Grants(grant(), grant("tenant:globex"))
    gateway = make_gateway(grants, gateway_max_streams=1)
    with gateway.stream("acme") as first:
        assert first.status_code == 200
        with gateway.stream("globex") as second:
            assert_429(second, "the gateway serves 1 streams already")
    assert gateway.limited("streams") == 1


def test_a_refused_stream_takes_no_slot(make_gateway):
    gateway = make_gateway(Grants(grant(status=GrantStatus.REVOKED)), gateway_max_streams_per_tenant=1)
    for _ in range(3):
        with gateway.stream() as response:
            response.read()
        assert response.status_code == 403
    assert gateway.app.state.caps.streams.open_by_tenant == {}


def test_a_stream_ends_at_its_maximum_duration_with_the_id_to_resume_from(make_gateway):
    gateway = make_gateway(Grants(grant()), [batch(0, 1)], gateway_max_stream_s=1)
    with gateway.stream(idle_timeout_s=30) as response:  # bounded should the cap be gone
        events = events_of(response)
    assert [e["event"] for e in events] == ["record", "record", "end"]
    assert events[-1]["id"] == "0-1" and json.loads(events[-1]["data"])["reason"] == "max_duration"
    assert gateway.limited("stream_duration") == 1
