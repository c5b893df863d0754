"""The metering worker's steps without faust or a broker: refusals with their reason, dead letters with the
original bytes, metrics counting only new rows, QuotaExceeded kept pending until published, and closed
windows published once per version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import admin_credentials
from prometheus_client import REGISTRY

from pdo.authorization.testing import RecordingPublisher
from pdo.core import schemas
from pdo.core.codec import AvroCodec
from pdo.core.deadletters import SourceMessage
from pdo.core.registry_client import RegistryClient
from pdo.metering import tables as t
from pdo.metering.handler import MeteringHandler
from pdo.metering.ledger import Ledger
from pdo.metering.testing import insert_grant, records_delivered_event, usage_fact
from pdo.metering.usage import pending_notices

NOW = datetime(2026, 3, 15, 12, 0, 30, tzinfo=UTC)
TOPIC = "pdo.deliveries"


@pytest.fixture
def handler(sqlite_url, registry_url):
    from pdo.core import db

    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    insert_grant(engine, "g-1", NOW - timedelta(days=1), tenant_id="tenant:handler", daily_quota_records=3)
    codec = AvroCodec(RegistryClient(registry_url, auth=admin_credentials()))
    yield MeteringHandler(Ledger(engine, lambda: NOW), RecordingPublisher(), codec, lambda: 0, lambda: NOW)
    codec.registry.close()
    engine.dispose()


def message(value: bytes, offset: int = 0) -> SourceMessage:
    return SourceMessage(TOPIC, 0, offset, b"g-1", value)


def encoded_fact(handler: MeteringHandler, delivery_id: str, **changes) -> bytes:
    value = records_delivered_event(usage_fact(delivery_id, "g-1", NOW, tenant_id="tenant:handler"))
    schema = schemas.get("pdo.sharing.v1.RecordsDelivered")
    return handler.codec.encode(TOPIC, schema, {**value, **changes})


def facts_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("pdo_metering_facts_total", {"outcome": outcome}) or 0.0


def test_bad_messages_are_refused_with_their_reason_and_dead_lettered_with_their_bytes(handler):
    quota_event = handler.codec.encode(
        "pdo.quota-exceeded",
        schemas.get("pdo.metering.v1.QuotaExceeded"),
        {
            "event_id": "e",
            "occurred_at": NOW,
            "actor": "system:test",
            "grant_id": "g-1",
            "tenant_id": "tenant:handler",
            "dataset_id": "traffic",
            "day": NOW.date(),
            "quota_records": 1,
            "used_records": 1,
        },
    )
    messages = [
        message(encoded_fact(handler, "good"), 0),
        message(b"\x07 garbage", 1),
        message(quota_event, 2),
        message(encoded_fact(handler, "bad", grant_id="g" * 200), 3),
    ]
    batch = handler.decode(messages)
    assert [d.delivery_id for fact in batch.facts for d in fact.deliveries] == ["good"]
    assert [(r.message.offset, r.reason_code) for r in batch.refused] == [
        (1, "UNDECODABLE"),
        (2, "SCHEMA_MISMATCH"),
        (3, "INVALID_EVENT"),
    ]
    assert "pdo.metering.v1.QuotaExceeded" in batch.refused[1].reason
    before = facts_total("dead_letter")
    handler.dead_letter(batch.refused)
    letters = handler.publisher.of("pdo.deadletter.v1.DeadLetter")
    assert [(letter["source_offset"], letter["original_value"]) for letter in letters] == [
        (m.offset, m.value) for m in messages[1:]
    ]
    assert {letter["service"] for letter in letters} == {"metering"}
    assert facts_total("dead_letter") == before + 3


def test_metrics_count_new_rows_and_duplicates(handler):
    recorded, duplicates = facts_total("recorded"), facts_total("duplicate")
    records = {"tenant": "tenant:handler", "dataset": "traffic"}
    records_before = REGISTRY.get_sample_value("pdo_metering_records_total", records) or 0.0
    batch = handler.decode([message(encoded_fact(handler, f"d-{n % 2}"), n) for n in range(3)])
    handler.record(batch.facts)
    handler.record(batch.facts)
    assert facts_total("recorded") == recorded + 2
    assert facts_total("duplicate") == duplicates + 1 + 3
    assert REGISTRY.get_sample_value("pdo_metering_records_total", records) == records_before + 2
    assert REGISTRY.get_sample_value("pdo_metering_quota_used_ratio", records) == pytest.approx(2 / 3)


def test_quota_exceeded_stays_pending_until_the_broker_takes_it(handler):
    batch = handler.decode([message(encoded_fact(handler, f"q-{n}"), n) for n in range(3)])
    result = handler.record(batch.facts)
    assert [notice.grant_id for notice in result.notices] == ["g-1"]
    handler.publisher.fail_next = True
    assert handler.announce(result.notices) == 0
    assert pending_notices(handler.ledger.engine) == result.notices
    assert handler.publisher.of("pdo.metering.v1.QuotaExceeded") == []
    windows, notices = handler.publish_due(NOW)  # the timer: the notice goes out now, windows are still open
    assert (windows, notices) == (0, 1)
    [event] = handler.publisher.of("pdo.metering.v1.QuotaExceeded")
    assert (event["grant_id"], event["quota_records"], event["used_records"]) == ("g-1", 3, 3)
    assert pending_notices(handler.ledger.engine) == []
    assert handler.publish_due(NOW) == (0, 0)


def test_closed_windows_are_published_once(handler):
    handler.record(handler.decode([message(encoded_fact(handler, "w-1"))]).facts)
    assert handler.publish_due(NOW)[0] == 0  # the minute is still open
    after_the_day = NOW + timedelta(days=1)
    assert handler.publish_due(after_the_day)[0] == 2  # its MINUTE and its DAY window
    events = handler.publisher.of("pdo.metering.v1.UsageRecorded")
    assert sorted((e["window"], e["records"]) for e in events) == [("DAY", 1), ("MINUTE", 1)]
    assert handler.publish_due(after_the_day)[0] == 0


def test_a_ledger_write_failing_for_a_bug_dead_letters_the_facts_as_other_and_the_worker_goes_on(handler):
    """The core's failure policy in metering: not transient, not the fact's fault → dead letter OTHER."""
    import asyncio

    from sqlalchemy.exc import IntegrityError

    from pdo.metering.app import meter

    def broken_record(facts):
        raise IntegrityError("INSERT INTO metering_ledger", {}, Exception("a bug"))

    handler.record = broken_record
    batch = [message(encoded_fact(handler, "d-bug-1"), 0), message(b"\x00junk", 1)]  # junk: no such schema
    asyncio.run(meter(handler, batch))
    letters = handler.publisher.of("pdo.deadletter.v1.DeadLetter")
    assert sorted((letter["source_offset"], letter["reason_code"]) for letter in letters) == [
        (0, "OTHER"),
        (1, "UNKNOWN_SCHEMA"),
    ]
    assert "IntegrityError" in next(letter["reason"] for letter in letters if letter["source_offset"] == 0)


def test_a_ledger_that_does_not_answer_is_waited_for_not_dead_lettered(handler, monkeypatch):
    import asyncio

    from sqlalchemy.exc import OperationalError

    from pdo.metering.app import meter

    record, failures = handler.record, []

    def flaky_record(facts):
        if len(failures) < 3:
            failures.append(1)
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        return record(facts)

    sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda seconds: sleep(0))  # the backoff, without waiting
    handler.record = flaky_record
    asyncio.run(meter(handler, [message(encoded_fact(handler, "d-wait-1"), 0)]))
    assert handler.publisher.of("pdo.deadletter.v1.DeadLetter") == []
    with handler.ledger.engine.connect() as conn:
        ids = conn.execute(sa.select(t.ledger.c.delivery_id)).scalars().all()
    assert len(failures) == 3 and ids == ["d-wait-1"]


# ---------------------------------------------------------------------------------------------- batched facts


def encoded_batch(handler: MeteringHandler, deliveries: list[tuple[str, int, int]], **changes) -> bytes:
    value = {
        "event_id": "e-batch",
        "occurred_at": NOW,
        "actor": "system:sharing",
        "tenant_id": "tenant:handler",
        "dataset_id": "traffic",
        "grant_id": "g-1",
        "target_topic": "pdo.tenant.handler.traffic",
        "source_topic": "pdo.feed.traffic",
        "source_partition": 2,
        "masking_policy_version": "m2-000000000000",
        "deliveries": [{"delivery_id": d, "source_offset": o, "bytes": b} for d, o, b in deliveries],
    }
    return handler.codec.encode(
        TOPIC, schemas.get("pdo.sharing.v1.RecordsDeliveredBatch"), {**value, **changes}
    )


def test_a_batched_fact_counts_each_of_its_deliveries_once_beside_single_facts(handler):
    batch = handler.decode(
        [
            message(encoded_batch(handler, [("b-1", 10, 100), ("b-2", 11, 200)]), 0),
            message(encoded_fact(handler, "single"), 1),
            # A redelivered transaction cut differently: b-2 again, with b-3.
            message(encoded_batch(handler, [("b-2", 11, 200), ("b-3", 12, 300)]), 2),
        ]
    )
    assert batch.refused == []
    assert [
        (d.delivery_id, d.records, d.bytes, d.first_offset) for f in batch.facts for d in f.deliveries
    ] == [
        ("b-1", 1, 100, 10),
        ("b-2", 1, 200, 11),
        ("single", 1, 100, 0),
        ("b-2", 1, 200, 11),
        ("b-3", 1, 300, 12),
    ]
    result = handler.record(batch.facts)
    assert result.new_delivery_ids == ["b-1", "b-2", "b-3", "single"]
    assert result.duplicates == 1
    assert handler.record(batch.facts).new == []  # the whole batch again: nothing new


def test_a_batched_fact_with_one_bad_delivery_or_none_is_refused_whole(handler):
    batch = handler.decode(
        [
            message(encoded_batch(handler, [("ok", 1, 10), ("bad", 2, -5)]), 0),
            message(encoded_batch(handler, []), 1),
        ]
    )
    assert batch.facts == []
    assert [(r.message.offset, r.reason_code) for r in batch.refused] == [
        (0, "INVALID_EVENT"),
        (1, "INVALID_EVENT"),
    ]
