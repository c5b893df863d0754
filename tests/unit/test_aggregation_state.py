"""The aggregation worker's SQL state on SQLite: windows close on event time plus the allowed lateness, each
window is published once even across a restart, a late record is dead-lettered with its reason, small groups
are never published, one usage fact is staged per window delivered, and a stopped grant publishes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError

from pdo.aggregation import tables as t
from pdo.aggregation.grants import AggregateGrants
from pdo.aggregation.state import Aggregator, FeedRecord, TopicNames
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage
from pdo.core.names import Event
from pdo.core.vocabulary import AggregateFunction, AggregateSpec, aggregate_spec_to_avro

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DATASET = "traffic-flow"
FEED = f"pdo.feed.{DATASET}"
SPEC = AggregateSpec(60, ("district",), ("speed_kmh",), (AggregateFunction.COUNT, AggregateFunction.MEAN))
K = 3
SCHEMAS = {DATASET: '{"type": "record", "name": "T", "fields": []}'}
FEEDS = {DATASET: [(FEED, 0), (FEED, 1)]}


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


def granted(book: AggregateGrants, status: str = "ACTIVE", version: int = 1) -> None:
    snapshot = {
        "grant_id": "g-1",
        "request_id": "r-1",
        "tenant_id": "tenant:acme",
        "dataset_id": DATASET,
        "valid_from": START - timedelta(days=1),
        "valid_until": START + timedelta(days=1),
        "status": status,
        "version": version,
        "kind": "AGGREGATE",
        "aggregate": aggregate_spec_to_avro(SPEC),
    }
    if version == 1:
        book.apply(Event.AUTHORIZATION_GRANTED, snapshot)
    else:
        book.apply(Event.AUTHORIZATION_SUSPENDED, {"grant": snapshot})


def aggregator(engine) -> Aggregator:
    made = Aggregator(engine, lateness_s=10, floor=K, names=TopicNames(Settings.from_env()))
    made.load()
    return made


class Feed:
    """Feed records with increasing offsets."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, seconds: float, district: str = "Haidian", speed: float = 50.0) -> FeedRecord:
        self.offset += 1
        source = SourceMessage(FEED, 0, self.offset - 1, b"k", b"\x00raw-bytes")
        value = {"district": district, "speed_kmh": speed, "plate_number": "京A12345"}
        return FeedRecord(source, DATASET, START + timedelta(seconds=seconds), value)


def outbox(engine) -> list[tuple[str, dict]]:
    with engine.connect() as conn:
        return t.OUTBOX.unsent(conn)


def step(engine, book, batch) -> Aggregator:
    """A worker that starts from SQL, applies one batch and commits it."""
    worker = aggregator(engine)
    changes = worker.apply(batch, book, SCHEMAS, FEEDS, lambda where: True)
    worker.save(changes)
    return worker


def test_a_window_closes_once_its_end_plus_the_lateness_has_passed_and_only_big_groups_are_published(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    first = [feed(s) for s in (1, 2, 3, 4)] + [feed(5, "Chaoyang")] + [feed(65, "Haidian")]
    step(engine, book, first)
    assert outbox(engine) == []  # 60 s window + 10 s lateness: nothing closes at event time 65 s
    step(engine, book, [feed(70, "Haidian")])
    published = [value for name, value in outbox(engine) if name == Event.WINDOW_AGGREGATED]
    assert [(v["group"], v["count"], v["suppressed_groups"], v["min_group_size"]) for v in published] == [
        ({"district": "Haidian"}, 4, 1, K)
    ]
    assert published[0]["measures"] == [{"field": "speed_kmh", "function": "MEAN", "value": 50.0}]
    assert "京A12345" not in repr(published)  # nothing of a single record
    (fact,) = [value for name, value in outbox(engine) if name == Event.RECORDS_DELIVERED]
    assert (fact["records"], fact["grant_id"], fact["delivery_id"]) == (
        1,
        "g-1",
        f"agg-g-1-{int(START.timestamp() * 1000)}",
    )
    assert fact["target_topic"] == "pdo.tenant.acme.traffic-flow.aggregates"
    assert fact["provenance"]["last_offset"] - fact["provenance"]["first_offset"] + 1 == 5 >= fact["records"]
    assert fact["bytes"] > 0


def test_a_restart_mid_window_neither_loses_nor_doubles_it(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    step(engine, book, [feed(1), feed(2)])
    restarted = step(engine, book, [feed(3)])  # a new worker: state and positions from SQL
    assert restarted.positions == {(FEED, 0): 3}
    step(engine, book, [feed(200)])
    step(engine, book, [feed(300)])  # a later window closes; the first is not published again
    counts = [v["count"] for name, v in outbox(engine) if name == Event.WINDOW_AGGREGATED]
    assert counts == [3]


def test_a_window_cannot_be_closed_twice(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    worker = aggregator(engine)
    changes = worker.apply([feed(1), feed(2), feed(3), feed(100)], book, SCHEMAS, FEEDS, lambda where: True)
    worker.save(changes)
    with pytest.raises(IntegrityError):
        worker.save(changes)  # the same closing again: refused whole, nothing more staged
    assert len([name for name, _ in outbox(engine) if name == Event.WINDOW_AGGREGATED]) == 1


def test_a_late_record_goes_to_the_dead_letter_topic_with_its_reason(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    step(engine, book, [feed(1), feed(2), feed(3), feed(100)])
    worker = step(engine, book, [feed(30)])
    (letter,) = [value for name, value in outbox(engine) if name == Event.DEAD_LETTER]
    assert letter["reason"].startswith("late record: event time 2026-03-01T09:00:30")
    assert "allowed lateness 10 s" in letter["reason"] and "g-1" in letter["reason"]
    assert letter["original_value"] == b"\x00raw-bytes" and letter["source_offset"] == 4
    assert worker.positions == {(FEED, 0): 5}  # read past, not stuck


def test_a_suspended_grant_publishes_nothing_for_its_open_windows(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    step(engine, book, [feed(1), feed(2), feed(3)])
    granted(book, status="SUSPENDED", version=2)
    step(engine, book, [feed(100)])
    assert outbox(engine) == []
    with engine.connect() as conn:
        (window,) = conn.execute(sa.select(t.windows)).mappings()
    assert (window["records"], window["groups_published"]) == (3, 0)


def on_partition(record: FeedRecord, partition: int) -> FeedRecord:
    source = SourceMessage(FEED, partition, record.source.offset, record.source.key, record.source.value)
    return FeedRecord(source, record.dataset_id, record.event_time, record.value)


def test_the_order_partitions_are_read_in_makes_no_record_late(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    # Partition 1 is read first and is already past the window; partition 0's older records still count.
    batch = [on_partition(feed(100), 1)] + [on_partition(feed(s), 0) for s in (1, 2, 3)]
    step(engine, book, batch)
    assert [v["count"] for name, v in outbox(engine) if name == Event.WINDOW_AGGREGATED] == [3]
    assert [name for name, _ in outbox(engine) if name == Event.DEAD_LETTER] == []


def test_a_partition_with_records_still_to_read_holds_the_watermark_back(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    worker = aggregator(engine)
    lagging = {(FEED, 0)}
    batch = [on_partition(feed(s), 0) for s in (1, 2, 3)] + [on_partition(feed(100), 1)]
    worker.save(worker.apply(batch, book, SCHEMAS, FEEDS, lambda where: where not in lagging))
    assert worker.watermarks[DATASET] == START + timedelta(seconds=3)  # partition 0's latest, not 100 s
    assert outbox(engine) == []
    lagging.clear()  # partition 0 read to its end: the watermark moves to the latest of all
    worker.save(worker.apply([], book, SCHEMAS, FEEDS, lambda where: where not in lagging))
    assert [v["count"] for name, v in outbox(engine) if name == Event.WINDOW_AGGREGATED] == [3]


def test_a_group_key_too_long_to_keep_is_dead_lettered_not_retried_forever(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    worker = step(engine, book, [feed(1, district="x" * 2000), feed(2)])
    (letter,) = [value for name, value in outbox(engine) if name == Event.DEAD_LETTER]
    assert letter["reason_code"] == "INVALID_EVENT" and "group key of 2004 characters" in letter["reason"]
    assert worker.positions == {(FEED, 0): 2}


def private_grant(book: AggregateGrants, epsilon: float, grant_id: str = "g-1") -> None:
    spec = AggregateSpec(60, ("district",), (), (AggregateFunction.COUNT,), epsilon=epsilon)
    book.apply(
        Event.AUTHORIZATION_GRANTED,
        {
            "grant_id": grant_id,
            "tenant_id": "tenant:acme",
            "dataset_id": DATASET,
            "valid_from": START - timedelta(days=1),
            "valid_until": START + timedelta(days=60),
            "kind": "AGGREGATE",
            "aggregate": aggregate_spec_to_avro(spec),
        },
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    epsilon=st.sampled_from([0.3, 1.0, 2.5, 4.0]),
    budget=st.sampled_from([1.0, 5.0, 10.0]),
    windows=st.integers(1, 12),
)
def test_the_privacy_budget_never_goes_below_zero_and_exhaustion_stops_releases_in_stream_order(
    tmp_path_factory, epsilon, budget, windows
):
    url = f"sqlite:///{tmp_path_factory.mktemp('budget') / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    book, feed = AggregateGrants(), Feed()
    private_grant(book, epsilon)
    released = []
    for number in range(
        windows
    ):  # one window a minute, each with 60 records of one district (noise of scale 1/0.3 hides no such count below k: p < 1e-7), then closed
        worker = Aggregator(engine, 10, K, TopicNames(Settings.from_env()), epsilon_budget=budget)
        worker.load()
        batch = [feed(60 * number + s % 50 + 1) for s in range(60)] + [feed(60 * (number + 1) + 11)]
        worker.save(worker.apply(batch, book, SCHEMAS, FEEDS, lambda where: True))
        released.append(
            len(
                [
                    1
                    for name, v in outbox(engine)
                    if name == Event.WINDOW_AGGREGATED and v["window_start"].minute == number
                ]
            )
        )
    with engine.connect() as conn:
        (spent,) = conn.execute(sa.select(t.privacy_budgets.c.spent)).scalars()
    payable = int(budget // epsilon + 1e-9)
    assert spent <= budget  # what is left never goes below zero
    assert released == [1] * min(windows, payable) + [0] * (
        windows - min(windows, payable)
    )  # a stop, no resumption
    notices = [v for name, v in outbox(engine) if name == Event.PRIVACY_BUDGET_EXHAUSTED]
    assert len(notices) == windows - min(windows, payable)
    assert all(n["epsilon_spent"] <= n["epsilon_budget"] == budget for n in notices)
    engine.dispose()
