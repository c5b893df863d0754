"""Retrying HTTP ingest after an ambiguous failure publishes once and delivers once, on the real broker with a
real `pdo sharing worker`: (1) the first call's answer is lost on the way back (a proxy that times out), the
retry with the same Idempotency-Key gets the first answer; (2) the broker stalls so the first call answers 503
"it may still arrive" (it does: the idempotent producer keeps retrying), and the retry finds the records on the
feed by their record_id. Each time the feed holds each record once and the tenant receives it once."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import ServerThread
from sharing_support import (  # noqa: F401  (fixtures by name)
    ACME,
    PROVIDER,
    db_url,
    grant,
    platform,
    register_dataset,
    settings,
    topic_messages,
    wait_for,
    workers,
)

from pdo.core import db
from pdo.core.config import Settings
from pdo.core.topics import feed_topic, tenant_topic
from pdo.gateway.app import create_app
from pdo.gateway.principals import PrincipalStore
from pdo.stack.broker import BrokerPaths, running_pid

CLEAR_FIELDS = ("record_id", "district", "speed_kmh", "observed_at")


def records(label: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "record_id": f"{label}-{number}",
            "checkpoint_id": "cp-17",
            "district": "Haidian",
            "plate_number": "京A12345",
            "vehicle_type": "PASSENGER_CAR",
            "speed_kmh": 40.0 + number,
            "lane": 1,
            "direction": "NORTHBOUND",
            "observed_at": datetime.now(UTC).isoformat(),
            "driver_phone": "13812345678",
        }
        for number in range(count)
    ]


class LosesAnAnswer:
    """An ASGI proxy in front of the gateway; once `lose_next` is set, it lets the next POST through but loses
    its answer (504 instead), as a load balancer does whose timeout is shorter than the call."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lose_next = False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.lose_next or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        self.lose_next = False

        async def drop(_message) -> None:
            pass

        await self.app(scope, receive, drop)
        await send({"type": "http.response.start", "status": 504, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "gateway_timeout"}'})


@dataclasses.dataclass
class Ingest:
    settings: Settings
    dataset_id: str
    http: httpx.Client
    key: str
    proxy: LosesAnAnswer

    def post(self, batch: list[dict[str, Any]], idempotency_key: str) -> httpx.Response:
        return self.http.post(
            f"/v1/datasets/{self.dataset_id}/records",
            content=json.dumps({"records": batch}),
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
                "Idempotency-Key": idempotency_key,
            },
        )

    def retry_until_answered(self, batch: list[dict[str, Any]], idempotency_key: str) -> httpx.Response:
        """What a careful client does: the same key and body again, after Retry-After, until it is answered."""
        for _ in range(60):
            response = self.post(batch, idempotency_key)
            if response.status_code != 409:
                return response
            time.sleep(float(response.headers["Retry-After"]))
        raise AssertionError(f"the retry was told to wait for a minute: {response.text}")


@pytest.fixture
def ingest(settings, platform, workers) -> Iterator[Ingest]:  # noqa: F811
    dataset_id = register_dataset(platform["catalog"])
    grant(platform["service"], ACME, dataset_id, CLEAR_FIELDS)
    engine = db.make_engine(settings.database_url)
    principals = PrincipalStore(engine)
    key = principals.issue_key(
        principals.create_principal("provider", PROVIDER.split(":")[1]).principal_id
    ).key
    # A short wait for acknowledgements, so that a stalled broker makes the call answer 503 within 3 s.
    gateway_settings = dataclasses.replace(settings, kafka_timeout_s=1)
    proxy = LosesAnAnswer(create_app(gateway_settings, platform["catalog"], None, engine))
    workers("sharing")
    with ServerThread(proxy) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        yield Ingest(settings, dataset_id, http, key, proxy)
    engine.dispose()


def copies(config: Settings, topic: str, ids: list[str]) -> dict[str, int]:
    """Messages per record id (the key of the feed and, granted in clear, of the tenant's topic)."""
    found: dict[str, int] = dict.fromkeys(ids, 0)
    for message in topic_messages(config, topic):
        if message.key.decode() in found:
            found[message.key.decode()] += 1
    return found


def delivered_once(ingest: Ingest, ids: list[str]) -> dict[str, int]:
    """Copies per record id on the tenant's topic, once every id has arrived."""
    topic = tenant_topic(ACME, ingest.dataset_id, ingest.settings)
    return wait_for(
        "every record on the tenant's topic",
        lambda: (found := copies(ingest.settings, topic, ids)) and all(found.values()) and found,
        [],
    )


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_retry_after_the_answer_was_lost_gets_the_first_answer_and_delivers_once(ingest):
    batch = records("lost", 5)
    ids = [r["record_id"] for r in batch]

    ingest.proxy.lose_next = True
    lost = ingest.post(batch, "call-1")
    retry = ingest.retry_until_answered(batch, "call-1")

    assert lost.status_code == 504
    assert retry.status_code == 200 and retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json() == {"accepted": 5, "rejected": [], "duplicates": []}
    assert delivered_once(ingest, ids) == dict.fromkeys(ids, 1)
    assert copies(ingest.settings, feed_topic(ingest.dataset_id, ingest.settings), ids) == dict.fromkeys(
        ids, 1
    )


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_retry_after_503_it_may_still_arrive_publishes_once_and_delivers_once(ingest):
    broker = running_pid(BrokerPaths.from_settings(Settings.from_env()))
    if broker is None:
        pytest.skip("needs a broker `pdo broker start` runs (it is paused to make the call time out)")
    ingest.post(records("warm-up", 1), "warm-up")  # the producer is connected before the broker stalls
    batch = records("stalled", 5)
    ids = [r["record_id"] for r in batch]

    os.kill(broker, signal.SIGSTOP)
    try:
        stalled = ingest.post(batch, "call-2")
    finally:
        os.kill(broker, signal.SIGCONT)
    retry = ingest.retry_until_answered(batch, "call-2")

    assert stalled.status_code == 503 and "it may still arrive" in stalled.json()["message"]
    assert retry.status_code == 200
    assert retry.json()["accepted"] + len(retry.json()["duplicates"]) == 5
    assert delivered_once(ingest, ids) == dict.fromkeys(ids, 1)
    assert copies(ingest.settings, feed_topic(ingest.dataset_id, ingest.settings), ids) == dict.fromkeys(
        ids, 1
    )


def test_a_record_id_sent_again_within_the_window_is_delivered_once(ingest):
    batch = records("again", 3)
    ids = [r["record_id"] for r in batch]

    first = ingest.post(batch, "call-a")
    # The provider resends the same records in a new request (a new key): the record ids are known.
    again = ingest.post([{**record, "speed_kmh": 99.0} for record in batch], "call-b")

    assert first.json() == {"accepted": 3, "rejected": [], "duplicates": []}
    assert again.status_code == 200 and again.json() == {
        "accepted": 0,
        "rejected": [],
        "duplicates": [0, 1, 2],
    }
    assert delivered_once(ingest, ids) == dict.fromkeys(ids, 1)
    assert copies(ingest.settings, feed_topic(ingest.dataset_id, ingest.settings), ids) == dict.fromkeys(
        ids, 1
    )
