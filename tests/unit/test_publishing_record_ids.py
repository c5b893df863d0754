"""The feed's record_id window (pdo.publishing.record_ids) on SQLite and PostgreSQL, alone and inside
FeedPublisher with a fake producer: a record_id sent within the window is a duplicate and is not sent again; a claim whose send failed is
released, one whose outcome is unknown is settled by the producer's final outcome, one left by a dead process
is taken over. PostgreSQL and the real broker: tests/integration/test_idempotent_ingest.py."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError
from test_publishing_publisher import RECORDS, FakeProducer, dataset

from pdo.core import db
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import Conflict, Unavailable
from pdo.core.registry_client import RegistryClient
from pdo.publishing.public import FeedPublisher, RecordIdWindow
from pdo.publishing.record_ids import STALE_CLAIM_S, Claim

WINDOW_S = 3600


@dataclasses.dataclass
class Clock:
    now: datetime = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def window(database_url, clock) -> RecordIdWindow:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield RecordIdWindow(engine, WINDOW_S, clock)
    engine.dispose()


def test_a_confirmed_record_id_is_a_duplicate_within_the_window_and_fresh_after_it(window, clock):
    assert window.claim("air", [b"r1"]).by_key == {b"r1": Claim.SEND}
    window.confirm("air", [b"r1"])

    clock.advance(WINDOW_S - 1)
    assert window.claim("air", [b"r1", b"r2"]).by_key == {b"r1": Claim.DUPLICATE, b"r2": Claim.SEND}

    clock.advance(2)
    assert window.claim("air", [b"r1"]).by_key == {b"r1": Claim.SEND}


def test_record_ids_are_per_dataset(window):
    window.claim("air", [b"r1"])
    window.confirm("air", [b"r1"])

    assert window.claim("traffic", [b"r1"]).by_key == {b"r1": Claim.SEND}


def test_a_claim_not_yet_settled_is_in_flight_and_a_released_one_is_claimed_again(window):
    window.claim("air", [b"r1"])

    assert window.claim("air", [b"r1"]).by_key == {b"r1": Claim.IN_FLIGHT}

    window.release("air", [b"r1"])
    assert window.claim("air", [b"r1"]).by_key == {b"r1": Claim.SEND}


def test_release_never_forgets_a_record_already_on_the_feed(window):
    window.claim("air", [b"r1"])
    window.confirm("air", [b"r1"])

    window.release("air", [b"r1"])

    assert window.claim("air", [b"r1"]).by_key == {b"r1": Claim.DUPLICATE}


def test_a_claim_left_by_a_dead_process_is_taken_over_once_stale(window, clock):
    window.claim("air", [b"r1"])

    clock.advance(STALE_CLAIM_S + 1)

    assert window.claim("air", [b"r1"]).by_key == {b"r1": Claim.SEND}


def test_of_concurrent_claims_of_a_stale_claim_exactly_one_wins(window, clock):
    window.claim("air", [b"r1", b"r2"])
    clock.advance(STALE_CLAIM_S + 1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: window.claim("air", [b"r1", b"r2"]).by_key, range(4)))

    for key in (b"r1", b"r2"):
        assert sorted(answer[key].value for answer in answers) == ["in_flight"] * 3 + ["send"]


def test_prune_deletes_what_left_the_window_and_keeps_the_rest(window, clock):
    window.claim("air", [b"old"])
    window.confirm("air", [b"old"])
    clock.advance(WINDOW_S + 1)
    window.claim("air", [b"new"])
    window.confirm("air", [b"new"])

    assert window.prune() == 1
    assert window.claim("air", [b"new", b"old"]).by_key == {b"new": Claim.DUPLICATE, b"old": Claim.SEND}


# ---------------------------------------------------------------------------------- inside FeedPublisher


class PendingAck:
    """A send whose acknowledgement does not come in time; the producer settles it later (`settle`)."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.errbacks: list = []

    def get(self, timeout=None):
        raise KafkaTimeoutError("no acknowledgement in time")

    def add_callback(self, callback) -> None:
        self.callbacks.append(callback)

    def add_errback(self, errback) -> None:
        self.errbacks.append(errback)

    def settle(self, error: Exception | None = None) -> None:
        for call in self.errbacks if error else self.callbacks:
            call(error or "metadata")


class Producer(FakeProducer):
    """FakeProducer that can also leave sends pending."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[PendingAck] | None = None

    def send(self, topic: str, key: bytes, value: bytes):
        if self.pending is None:
            return super().send(topic, key, value)
        self.sent.append((topic, key, value))
        self.pending.append(PendingAck())
        return self.pending[-1]


@pytest.fixture
def producer() -> Producer:
    return Producer()


@pytest.fixture
def publisher(window, producer):
    codec = AvroCodec(RegistryClient("http://127.0.0.1:9"))  # never called: the id comes from the catalog
    settings = dataclasses.replace(Settings.from_env(), kafka_timeout_s=1)
    with FeedPublisher(
        settings, dataset(), codec, producer_factory=lambda: producer, record_ids=window
    ) as feed:
        yield feed


def sent_ids(producer: Producer) -> list[str]:
    return [key.decode() for _, key, _ in producer.sent]


def test_a_record_sent_again_is_reported_as_a_duplicate_and_not_sent(publisher, producer):
    first = publisher.publish_json(RECORDS[:3])
    again = publisher.publish_json(RECORDS[:5])

    assert (first.accepted, again.accepted, again.duplicates) == (3, 2, [0, 1, 2])
    assert sent_ids(producer) == [r["record_id"] for r in RECORDS[:3] + RECORDS[3:5]]


def test_a_record_id_repeated_within_one_batch_is_sent_once(publisher, producer):
    report = publisher.publish_json([RECORDS[0], {**RECORDS[0], "aqi": 1}])

    assert (report.accepted, report.duplicates) == (1, [1])
    assert sent_ids(producer) == [RECORDS[0]["record_id"]]


def test_a_send_that_failed_for_certain_is_sent_again_on_retry(publisher, producer):
    producer.fail, producer.fail_index = KafkaError("refused"), 0
    with pytest.raises(Unavailable):
        publisher.publish_json(RECORDS[:1])
    producer.fail = None

    report = publisher.publish_json(RECORDS[:1])

    assert (report.accepted, report.duplicates) == (1, [])
    assert len(producer.sent) == 2


def test_an_unknown_outcome_blocks_a_retry_until_the_producer_settles_it(publisher, producer):
    producer.pending = []
    with pytest.raises(Unavailable) as caught:
        publisher.publish_json(RECORDS[:2])
    assert "it may still arrive" in caught.value.message
    pending, producer.pending = producer.pending, None

    with pytest.raises(Conflict) as in_flight:
        publisher.publish_json(RECORDS[:2])
    assert "not yet acknowledged" in in_flight.value.message
    pending[0].settle()  # it did arrive
    pending[1].settle(KafkaTimeoutError("expired in the producer"))  # this one never did

    retry = publisher.publish_json(RECORDS[:2])

    assert (retry.accepted, retry.duplicates) == (1, [0])
    assert sent_ids(producer) == [RECORDS[0]["record_id"], RECORDS[1]["record_id"], RECORDS[1]["record_id"]]
