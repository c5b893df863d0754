"""Idempotency-Key on the HTTP ingest: the store (pdo.gateway.idempotency) on SQLite, then the route with a fake
producer and the gateway's own record-id window: a retry gets the first answer and nothing is sent again; the
same key with another body is refused; keys are per provider; of two concurrent calls with one key only one
runs; a call that failed gives its key back. The real broker and a delivery: test_idempotent_ingest.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from conftest import ServerThread
from kafka.errors import KafkaError
from test_publishing_http import RECORDS, Catalog, dataset
from test_publishing_record_ids import Clock

from pdo.core import db
from pdo.core.config import Settings
from pdo.gateway.app import create_app
from pdo.gateway.idempotency import STALE_CLAIM_S, Answer, IdempotencyStore, KeyInUse, KeyReused
from pdo.gateway.principals import PrincipalStore
from pdo.publishing.public import FeedPublishers, RecordIdWindow

RETENTION_S = 86400


@pytest.fixture
def store(tmp_path) -> Iterator[tuple[IdempotencyStore, Clock]]:
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    clock = Clock()
    yield IdempotencyStore(engine, RETENTION_S, clock), clock
    engine.dispose()


def test_the_first_claim_runs_and_a_completed_key_gives_its_answer_back(store):
    keys, _ = store
    assert keys.claim("provider:a", "k1", "f1") is None
    keys.complete("provider:a", "k1", Answer(200, {"accepted": 3}))

    assert keys.claim("provider:a", "k1", "f1") == Answer(200, {"accepted": 3})


def test_a_key_is_refused_while_its_call_runs_and_for_another_request(store):
    keys, _ = store
    keys.claim("provider:a", "k1", "f1")

    with pytest.raises(KeyInUse, match="still running"):
        keys.claim("provider:a", "k1", "f1")
    with pytest.raises(KeyReused, match="used for another request"):
        keys.claim("provider:a", "k1", "another body")


def test_keys_are_per_principal(store):
    keys, _ = store
    keys.claim("provider:a", "k1", "f1")
    keys.complete("provider:a", "k1", Answer(200, {"secret": "a's answer"}))

    assert keys.claim("provider:b", "k1", "f1") is None


def test_a_released_key_runs_again(store):
    keys, _ = store
    keys.claim("provider:a", "k1", "f1")
    keys.release("provider:a", "k1")

    assert keys.claim("provider:a", "k1", "f1") is None


def test_release_never_drops_a_kept_answer(store):
    keys, _ = store
    keys.claim("provider:a", "k1", "f1")
    keys.complete("provider:a", "k1", Answer(200, {}))
    keys.release("provider:a", "k1")

    assert keys.claim("provider:a", "k1", "f1") == Answer(200, {})


def test_an_answer_is_kept_for_the_retention_and_then_pruned(store):
    keys, clock = store
    keys.claim("provider:a", "k1", "f1")
    keys.complete("provider:a", "k1", Answer(200, {}))

    clock.advance(RETENTION_S - 1)
    assert keys.claim("provider:a", "k1", "f1") == Answer(200, {})
    clock.advance(2)
    assert keys.prune() == 1
    assert keys.claim("provider:a", "k1", "f1") is None


def test_a_claim_left_by_a_dead_process_is_taken_over_once_stale(store):
    keys, clock = store
    keys.claim("provider:a", "k1", "f1")
    clock.advance(STALE_CLAIM_S + 1)

    assert keys.claim("provider:a", "k1", "f1") is None


def test_of_concurrent_claims_exactly_one_wins(store):
    keys, _ = store
    start = threading.Barrier(8)

    def claim(_: int) -> str:
        start.wait()
        try:
            return "ran" if keys.claim("provider:a", "k1", "f1") is None else "answer"
        except KeyInUse:
            return "in use"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(claim, range(8)))

    assert sorted(outcomes) == ["in use"] * 7 + ["ran"]


# ------------------------------------------------------------------------------------------ the route


class Ack:
    def __init__(self, gate: threading.Event | None, error: Exception | None) -> None:
        self.gate, self.error = gate, error

    def get(self, timeout=None) -> str:
        if self.gate is not None:
            self.gate.wait(timeout)
        if self.error is not None:
            raise self.error
        return "metadata"


class Producer:
    """Sends instantly, or holds acks until `gate` is set, or fails the next send's ack with `fail`."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gate: threading.Event | None = None
        self.fail: Exception | None = None

    def send(self, topic: str, key: bytes, value: bytes) -> Ack:
        self.sent.append(key)
        error, self.fail = self.fail, None
        return Ack(self.gate, error)

    def close(self, timeout=None) -> None:
        pass


@dataclass
class Gateway:
    http: httpx.Client
    producer: Producer
    keys: dict[str, str]

    def post(self, who: str, dataset_id: str, records: list, key: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.http.post(
            f"/v1/datasets/{dataset_id}/records", json={"records": records}, headers=headers
        )


@pytest.fixture
def gateway(tmp_path) -> Iterator[Gateway]:
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    principals = PrincipalStore(engine)
    keys = {}
    for name in ("ecology", "transport"):
        keys[name] = principals.issue_key(principals.create_principal("provider", name).principal_id).key
    catalog = Catalog(dataset("air-quality"), dataset("roads", provider_id="provider:transport"))
    producer = Producer()
    settings = Settings.from_env()
    feeds = FeedPublishers(settings, record_ids=RecordIdWindow(engine, settings.record_id_window_s))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pdo.publishing.publisher.kafka_producer", lambda _settings, **_config: producer)
        app = create_app(settings, catalog, None, engine, feeds=feeds)
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
            yield Gateway(http, producer, keys)
    engine.dispose()


def test_a_retry_with_the_key_gets_the_first_answer_and_sends_nothing(gateway):
    first = gateway.post("ecology", "air-quality", RECORDS[:5], key="batch-1")
    retry = gateway.post("ecology", "air-quality", RECORDS[:5], key="batch-1")

    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json() == {"accepted": 5, "rejected": [], "duplicates": []}
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(gateway.producer.sent) == 5


def test_the_key_with_another_body_is_refused_naming_the_problem(gateway):
    gateway.post("ecology", "air-quality", RECORDS[:1], key="batch-1")

    reused = gateway.post("ecology", "air-quality", RECORDS[1:2], key="batch-1")

    assert reused.status_code == 422
    assert "Idempotency-Key 'batch-1' was used for another request" in reused.json()["message"]
    assert len(gateway.producer.sent) == 1


def test_another_provider_with_the_same_key_runs_its_own_call(gateway):
    gateway.post("ecology", "air-quality", RECORDS[:1], key="shared")

    theirs = gateway.post("transport", "roads", RECORDS[1:3], key="shared")

    assert theirs.status_code == 200 and theirs.json()["accepted"] == 2
    assert "Idempotent-Replayed" not in theirs.headers


def test_a_failed_call_gives_its_key_back_and_the_retry_sends(gateway):
    gateway.producer.fail = KafkaError("the broker refused")
    failed = gateway.post("ecology", "air-quality", RECORDS[:1], key="batch-1")

    retry = gateway.post("ecology", "air-quality", RECORDS[:1], key="batch-1")

    assert failed.status_code == 503
    assert retry.status_code == 200 and retry.json()["accepted"] == 1
    assert len(gateway.producer.sent) == 2


def test_of_two_concurrent_calls_with_one_key_one_runs_and_one_is_told_to_retry(gateway):
    gateway.producer.gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(gateway.post, "ecology", "air-quality", RECORDS[:3], "batch-1")
        while not gateway.producer.sent:  # the first call holds the key and is sending
            threading.Event().wait(0.01)
        second = gateway.post("ecology", "air-quality", RECORDS[:3], key="batch-1")
        gateway.producer.gate.set()
        first_answer = first.result()

    assert second.status_code == 409 and second.headers["Retry-After"] == "2"
    assert "still running" in second.json()["message"]
    assert first_answer.status_code == 200
    assert len(gateway.producer.sent) == 3


def test_a_malformed_key_is_refused(gateway):
    response = gateway.post("ecology", "air-quality", RECORDS[:1], key="x" * 256)

    assert response.status_code == 422 and "Idempotency-Key" in response.json()["message"]
    assert gateway.producer.sent == []
