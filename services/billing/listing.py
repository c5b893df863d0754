"""Product listings for data exchanges: what a data group publishes about a dataset so buyers can find and
judge it, in a documented JSON form (`LISTING_FORMAT`) with a CSV companion of one row per dataset.

A listing says what the catalog holds (title, description, domain, classification, openness, the data asset
registration number, terms of use, the price plan in words and as data), the schema's fields and types with
the sensitive ones named — never a sample of any value —, how often the feed is updated, measured on the
broker from the feed's offsets (no record is read), and the usage statistics of the asset report. It depends
on the catalog's Dataset (pdo.catalog.public), the asset report (pdo.billing.assets) and, for the feed's
activity, a Kafka consumer that may describe the feed topic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from kafka import TopicPartition
from sqlalchemy import Engine

from pdo.billing.assets import AssetRow, asset_report
from pdo.billing.pricing import describe
from pdo.catalog.public import Dataset
from pdo.core.spreadsheet import csv_text
from pdo.core.vocabulary import price_plan_to_json

LISTING_FORMAT = "pdo.listing.v1"
ACTIVITY_WINDOW = timedelta(days=1)
CSV_COLUMNS = (
    "dataset_id",
    "title",
    "provider_id",
    "owner_department",
    "domain",
    "classification",
    "openness",
    "asset_registration_number",
    "fields",
    "sensitive_fields",
    "records_per_hour",
    "update_frequency",
    "price_plan",
    "terms",
    "usage_period",
    "tenants",
    "grants",
    "records",
    "revenue",
    "currency",
)


class OffsetReader(Protocol):
    """The part of kafka-python's KafkaConsumer a measure of activity needs (only DESCRIBE on the topic)."""

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[TopicPartition, Any]: ...


@dataclass(frozen=True)
class FeedActivity:
    """Records appended to a feed over a window that ends now."""

    window: timedelta
    records: int

    @property
    def records_per_hour(self) -> float:
        return round(self.records / (self.window.total_seconds() / 3600), 1)

    @property
    def mean_interval_s(self) -> float | None:
        return round(self.window.total_seconds() / self.records, 3) if self.records else None

    def in_words(self) -> str:
        hours = self.window.total_seconds() / 3600
        if not self.records:
            return f"no records in the last {hours:g} h"
        return (
            f"about every {self.mean_interval_s:g} s ({self.records_per_hour:,} records/h, "
            f"measured over the last {hours:g} h)"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "measured_over_hours": self.window.total_seconds() / 3600,
            "records": self.records,
            "records_per_hour": self.records_per_hour,
            "mean_interval_seconds": self.mean_interval_s,
            "in_words": self.in_words(),
        }


def feed_activity(
    reader: OffsetReader, topic: str, now: datetime, window: timedelta = ACTIVITY_WINDOW
) -> FeedActivity:
    """How many records the feed took in the window ending `now`: per partition, its end offset minus the
    first offset at or after the window's start (Kafka's time index; none after it: nothing new)."""
    partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
    if not partitions:
        return FeedActivity(window, 0)
    ends = reader.end_offsets(partitions)
    start_ms = int((now - window).timestamp() * 1000)
    firsts = reader.offsets_for_times(dict.fromkeys(partitions, start_ms))
    records = sum(
        ends[tp] - (firsts[tp].offset if firsts.get(tp) is not None else ends[tp]) for tp in partitions
    )
    return FeedActivity(window, records)


@dataclass(frozen=True)
class Listing:
    dataset: Dataset
    activity: FeedActivity
    usage: AssetRow | None
    usage_period: str
    generated_at: datetime

    def fields(self) -> list[dict[str, Any]]:
        sensitive = self.dataset.sensitive
        return [
            {
                "name": item["name"],
                "type": _type_name(item["type"]),
                "doc": item.get("doc"),
                "sensitive": item["name"] in sensitive,
                "masking": sensitive[item["name"]].value if item["name"] in sensitive else None,
            }
            for item in json.loads(self.dataset.record_schema)["fields"]
        ]

    def as_json(self) -> dict[str, Any]:
        dataset = self.dataset
        return {
            "listing_format": LISTING_FORMAT,
            "generated_at": self.generated_at.isoformat(),
            "dataset_id": dataset.dataset_id,
            "title": dataset.title,
            "description": dataset.description,
            "provider_id": dataset.provider_id,
            "owner_department": dataset.owner_department,
            "domain": dataset.domain.value,
            "classification": dataset.classification.value,
            "openness": dataset.openness.value,
            "asset_registration_number": dataset.asset_registration_number,
            "terms": dataset.terms,
            "retired": dataset.retired,
            "derived_from": list(dataset.derived_from),
            "schema": {
                "subject": dataset.schema_subject,
                "version_id": dataset.schema_id,
                "fields": self.fields(),
            },
            "sensitive_fields": [item.field for item in dataset.sensitive_fields],
            "update_frequency": self.activity.as_json(),
            "price_plan": {
                "in_words": describe(dataset.price_plan),
                **json.loads(price_plan_to_json(dataset.price_plan)),
            },
            "usage": self._usage_json(),
        }

    def _usage_json(self) -> dict[str, Any]:
        row = self.usage
        figures = row.as_json() if row else {"tenants": 0, "grants": 0, "records": 0, "revenue": "0.00"}
        return {
            "period": self.usage_period,
            "provisional": row.provisional if row else None,
            **{
                key: figures.get(key)
                for key in ("tenants", "grants", "records", "bytes", "revenue", "currency")
            },
        }

    def csv_row(self) -> list[Any]:
        listing = self.as_json()
        usage = listing["usage"]
        return [
            *(listing[key] for key in CSV_COLUMNS[:8]),
            "; ".join(f"{item['name']}:{item['type']}" for item in listing["schema"]["fields"]),
            "; ".join(listing["sensitive_fields"]),
            self.activity.records_per_hour,
            self.activity.in_words(),
            listing["price_plan"]["in_words"],
            listing["terms"],
            usage["period"],
            *(usage[key] for key in ("tenants", "grants", "records", "revenue", "currency")),
        ]


def listings_for(
    engine: Engine,
    datasets: Sequence[Dataset],
    period: str,
    reader: OffsetReader,
    topic_of: Callable[[str], str],
    now: datetime,
) -> list[Listing]:
    """The listings of `datasets`: usage from the period's asset report, activity from each feed's offsets."""
    ids = [dataset.dataset_id for dataset in datasets]
    usage = {row.dataset_id: row for row in asset_report(engine, period, dataset_ids=ids).rows}
    return [
        Listing(
            dataset,
            feed_activity(reader, topic_of(dataset.dataset_id), now),
            usage.get(dataset.dataset_id),
            period,
            now,
        )
        for dataset in datasets
    ]


def listings_csv(listings: list[Listing]) -> str:
    return csv_text(CSV_COLUMNS, (listing.csv_row() for listing in listings))


def _type_name(avro_type: Any) -> str:
    """An Avro field type in a word: "string", "null|double", "timestamp-millis", a record's name."""
    if isinstance(avro_type, list):
        return "|".join(_type_name(member) for member in avro_type)
    if isinstance(avro_type, dict):
        return str(avro_type.get("logicalType") or avro_type.get("name") or avro_type.get("type"))
    return str(avro_type)
