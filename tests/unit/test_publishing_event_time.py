"""Event-time bounds at publish (pdo.publishing.event_time): a record dated in year 0001 or 9999 is refused with
the field and the bounds — by FeedPublisher and by the HTTP ingest (422) — while records within the bounds go
out; a dataset's schema may move the bounds for its own event-time field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from test_publishing_http import RECORDS, gateway  # noqa: F401  (the gateway fixture, by name)
from test_publishing_publisher import SCHEMA_TEXT, FakeProducer, dataset

from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import InvalidInput
from pdo.core.registry_client import RegistryClient
from pdo.publishing.event_time import Bounds, EventTime
from pdo.publishing.public import FeedPublisher

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
PLATFORM = Bounds(max_past=timedelta(days=366), max_future=timedelta(days=1))
YEAR_1 = "0001-01-01T00:00:00Z"
YEAR_9999 = "9999-12-31T23:59:59Z"


def schema_with(**attribute) -> dict:
    schema = json.loads(SCHEMA_TEXT)
    for field in schema["fields"]:
        if field["name"] == "observed_at":
            field.update(attribute)
    return schema


def at(moment: datetime) -> dict:
    return {"observed_at": moment}


def test_the_first_timestamp_field_is_the_event_time_with_the_platforms_bounds():
    event_time = EventTime.of_schema(SCHEMA_TEXT, PLATFORM)

    assert event_time == EventTime("observed_at", PLATFORM)
    assert event_time.violation(at(NOW - timedelta(days=366)), NOW) is None
    assert event_time.violation(at(NOW + timedelta(days=1)), NOW) is None


def test_year_0001_and_9999_are_out_of_bounds_naming_the_field_and_the_bounds():
    event_time = EventTime.of_schema(SCHEMA_TEXT, PLATFORM)

    past = event_time.violation(at(datetime(1, 1, 1, tzinfo=UTC)), NOW)
    future = event_time.violation(at(datetime(9999, 12, 31, tzinfo=UTC)), NOW)

    bounds = "2025-11-30T03:00:00Z .. 2026-12-02T03:00:00Z (at most 366 day(s) in the past and 1 day(s)"
    assert (
        past
        == f"observed_at: event time 0001-01-01T00:00:00+00:00 is outside the bounds {bounds} in the future)"
    )
    assert future is not None and future.startswith("observed_at: event time 9999-12-31") and bounds in future


def test_a_schema_moves_the_bounds_of_its_own_event_time_field():
    archive = EventTime.of_schema(
        schema_with(**{"pdo.event_time": {"max_past_s": 100 * 366 * 86400}}), PLATFORM
    )
    live = EventTime.of_schema(schema_with(**{"pdo.event_time": {"max_future_s": 0}}), PLATFORM)

    assert archive.violation(at(datetime(1950, 1, 1, tzinfo=UTC)), NOW) is None
    assert archive.violation(at(datetime(1, 1, 1, tzinfo=UTC)), NOW) is not None
    assert live.violation(at(NOW + timedelta(seconds=1)), NOW) is not None


def test_a_marked_field_is_the_event_time_and_a_malformed_mark_is_refused_with_the_reason():
    schema = json.loads(SCHEMA_TEXT)
    schema["fields"].append(
        {
            "name": "valid_at",
            "type": {"type": "long", "logicalType": "timestamp-millis"},
            "pdo.event_time": True,
        }
    )

    assert EventTime.of_schema(schema, PLATFORM).field == "valid_at"
    with pytest.raises(InvalidInput, match="max_past_s = -1, not a whole number of seconds"):
        EventTime.of_schema(schema_with(**{"pdo.event_time": {"max_past_s": -1}}), PLATFORM)


def test_a_schema_without_a_timestamp_has_no_event_time_and_a_null_one_is_not_checked():
    schema = {"type": "record", "name": "R", "fields": [{"name": "record_id", "type": "string"}]}

    assert EventTime.of_schema(schema, PLATFORM) is None
    assert EventTime.of_schema(SCHEMA_TEXT, PLATFORM).violation({"observed_at": None}, NOW) is None


def test_feed_publisher_refuses_records_out_of_bounds_by_index_and_sends_the_others():
    producer = FakeProducer()
    codec = AvroCodec(RegistryClient("http://127.0.0.1:9"))
    now = datetime.now(UTC).isoformat()
    records = [
        {**RECORDS[0], "observed_at": YEAR_1},
        {**RECORDS[1], "observed_at": now},
        {**RECORDS[2], "observed_at": YEAR_9999},
    ]

    with FeedPublisher(Settings.from_env(), dataset(), codec, producer_factory=lambda: producer) as publisher:
        report = publisher.publish_json(records)

    assert report.accepted == 1 and [r.index for r in report.rejected] == [0, 2]
    assert all(
        "observed_at: event time" in r.reason and "outside the bounds" in r.reason for r in report.rejected
    )
    assert [key.decode() for _, key, _ in producer.sent] == [RECORDS[1]["record_id"]]


def test_http_ingest_answers_422_naming_the_field_and_the_bounds(gateway):  # noqa: F811
    response = gateway.post("ecology", "air-quality", {"records": [{**RECORDS[0], "observed_at": YEAR_9999}]})

    assert response.status_code == 422
    reason = response.json()["rejected"][0]["reason"]
    assert reason.startswith("observed_at: event time 9999-12-31T23:59:59+00:00 is outside the bounds")
    assert "at most 3653 day(s) in the past and 1 day(s) in the future" in reason
