"""Listings for data exchanges: the feed's activity measured from offsets, the schema with its sensitive
fields named (never a value), prices in words, usage from the asset report, CSV a spreadsheet cannot run."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing_support import traffic
from kafka import TopicPartition
from kafka.structs import OffsetAndTimestamp

from pdo.billing.assets import AssetRow
from pdo.billing.listing import LISTING_FORMAT, FeedActivity, Listing, feed_activity, listings_csv

NOW = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
TOPIC = "pdo.feed.traffic"


class Offsets:
    """Stands in for a KafkaConsumer: end offsets, and the first offset at or after a time per partition."""

    def __init__(self, ends: dict[int, int], firsts: dict[int, int | None]) -> None:
        self.ends, self.firsts = ends, firsts
        self.asked_for: dict[TopicPartition, int] = {}

    def partitions_for_topic(self, topic):
        return set(self.ends) if topic == TOPIC else None

    def end_offsets(self, partitions):
        return {tp: self.ends[tp.partition] for tp in partitions}

    def offsets_for_times(self, timestamps):
        self.asked_for = timestamps
        return {
            tp: None
            if self.firsts[tp.partition] is None
            else OffsetAndTimestamp(self.firsts[tp.partition], 0, -1)
            for tp in timestamps
        }


def usage_row() -> AssetRow:
    row = AssetRow("2026-05", "traffic", "Traffic flow", "provider:transport", "CNY", provisional=False)
    row.tenants, row.grants, row.records, row.bytes, row.revenue = 2, 3, 3_510, 6_000_000, Decimal("5.70")
    return row


def test_activity_counts_the_records_appended_in_the_window_from_offsets_alone():
    offsets = Offsets(ends={0: 100, 1: 50, 2: 7}, firsts={0: 40, 1: None, 2: 7})

    activity = feed_activity(offsets, TOPIC, NOW)

    assert activity.records == 60  # 100 - 40, nothing new on 1 (no offset after the start), 0 on 2
    assert activity.records_per_hour == 2.5 and activity.mean_interval_s == 1440.0
    assert activity.in_words() == "about every 1440 s (2.5 records/h, measured over the last 24 h)"
    start_ms = int((NOW - timedelta(days=1)).timestamp() * 1000)
    assert set(offsets.asked_for.values()) == {start_ms}


def test_a_quiet_feed_and_a_missing_topic_say_so():
    assert feed_activity(Offsets({0: 5}, {0: None}), TOPIC, NOW).in_words() == "no records in the last 24 h"
    missing = feed_activity(Offsets({0: 5}, {0: 0}), "pdo.feed.other", NOW)
    assert (missing.records, missing.mean_interval_s) == (0, None)


def listing(**changes) -> Listing:
    return Listing(traffic(**changes), FeedActivity(timedelta(days=1), 86_400), usage_row(), "2026-05", NOW)


def test_a_listing_names_sensitive_fields_with_their_masking_and_never_a_value():
    document = listing().as_json()

    assert document["listing_format"] == LISTING_FORMAT
    fields = {item["name"]: item for item in document["schema"]["fields"]}
    assert fields["plate"] == {
        "name": "plate",
        "type": "null|string",
        "doc": None,
        "sensitive": True,
        "masking": "KEYED_HASH",
    }
    assert fields["observed_at"]["type"] == "timestamp-millis" and not fields["vehicles"]["sensitive"]
    assert document["sensitive_fields"] == ["plate"]
    assert not {"sample", "samples", "example", "examples"} & set(json.dumps(document).split('"'))


def test_a_listing_carries_registration_terms_price_frequency_and_usage():
    document = listing().as_json()

    assert document["asset_registration_number"] == "SZ-DA-2026-0042"
    assert document["derived_from"] == [] and listing(derived_from=("air",)).as_json()["derived_from"] == [
        "air"
    ]
    assert document["terms"].startswith("traffic planning")
    assert document["price_plan"]["in_words"] == "0.50 CNY per 1,000 records"
    assert document["price_plan"]["kind"] == "PER_THOUSAND_RECORDS"
    assert document["update_frequency"]["records_per_hour"] == 3600.0
    assert document["update_frequency"]["mean_interval_seconds"] == 1.0
    assert document["usage"] == {
        "period": "2026-05",
        "provisional": False,
        "tenants": 2,
        "grants": 3,
        "records": 3_510,
        "bytes": 6_000_000,
        "revenue": "5.70",
        "currency": "CNY",
    }


def test_a_dataset_without_usage_lists_zeros_not_a_guess():
    document = Listing(traffic(), FeedActivity(timedelta(days=1), 0), None, "2026-05", NOW).as_json()
    assert (document["usage"]["records"], document["usage"]["revenue"], document["usage"]["provisional"]) == (
        0,
        "0.00",
        None,
    )


def test_the_csv_companion_has_one_row_per_dataset_and_defuses_formulas():
    text = listings_csv([listing(), listing(dataset_id="air", title='=HYPERLINK("http://x")')])

    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["dataset_id"] for row in rows] == ["traffic", "air"]
    assert rows[1]["title"] == '\'=HYPERLINK("http://x")'
    assert (
        rows[0]["fields"] == "sensor_id:string; plate:null|string; observed_at:timestamp-millis; vehicles:int"
    )
    assert (rows[0]["sensitive_fields"], rows[0]["revenue"], rows[0]["records_per_hour"]) == (
        "plate",
        "5.70",
        "3600.0",
    )
