"""Helpers for tests and benchmarks of metering: grants in its projection, usage facts as values and as events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine

from pdo.metering import tables as t
from pdo.metering.ledger import Delivery, UsageFact
from pdo.metering.projection import TopicEvent

FREE_PLAN = '{"currency": "CNY", "kind": "FREE", "tiers": [], "unit_price": "0.00"}'


def insert_grant(
    engine: Engine,
    grant_id: str,
    valid_from: datetime,
    tenant_id: str = "tenant:acme",
    dataset_id: str = "traffic",
    daily_quota_records: int | None = None,
) -> None:
    """A grant as metering's projection holds it once its AuthorizationGranted was applied."""
    with engine.begin() as conn:
        put_grant(conn, grant_id, tenant_id, dataset_id, valid_from, daily_quota_records=daily_quota_records)


def put_grant(
    conn: Connection,
    grant_id: str,
    tenant_id: str,
    dataset_id: str,
    valid_from: datetime,
    valid_until: datetime | None = None,
    daily_quota_records: int | None = None,
    price_plan: str = FREE_PLAN,
    version: int = 1,
) -> None:
    """A row of metering_grants, in the caller's transaction."""
    conn.execute(
        t.grants.insert().values(
            grant_id=grant_id,
            tenant_id=tenant_id,
            dataset_id=dataset_id,
            valid_from=valid_from,
            valid_until=valid_until or valid_from + timedelta(days=365),
            daily_quota_records=daily_quota_records,
            price_plan=price_plan,
            version=version,
        )
    )


def usage_fact(
    delivery_id: str,
    grant_id: str,
    delivered_at: datetime,
    tenant_id: str = "tenant:acme",
    dataset_id: str = "traffic",
    records: int = 1,
    size: int = 100,
    offset: int = 0,
) -> UsageFact:
    return UsageFact(
        tenant_id=tenant_id,
        dataset_id=dataset_id,
        grant_id=grant_id,
        delivered_at=delivered_at,
        source_topic=f"pdo.feed.{dataset_id}",
        source_partition=0,
        # A fact counts the records of the source offsets it covers.
        deliveries=(Delivery(delivery_id, records, size, offset, offset + records - 1),),
    )


def records_delivered_event(fact: UsageFact) -> dict[str, Any]:
    """The RecordsDelivered value sharing would publish for `fact` (a fact of one delivery)."""
    [delivery] = fact.deliveries
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, delivery.delivery_id)),
        "occurred_at": fact.delivered_at,
        "actor": "system:sharing",
        "delivery_id": delivery.delivery_id,
        "tenant_id": fact.tenant_id,
        "dataset_id": fact.dataset_id,
        "grant_id": fact.grant_id,
        "target_topic": f"pdo.tenant.{fact.tenant_id.split(':')[-1]}.{fact.dataset_id}",
        "provenance": {
            "source_topic": fact.source_topic,
            "source_partition": fact.source_partition,
            "first_offset": delivery.first_offset,
            "last_offset": delivery.last_offset,
            "masking_policy_version": "test",
        },
        "records": delivery.records,
        "bytes": delivery.bytes,
    }


class ListTopicLog:
    """A followed topic held in memory (pdo.metering.projection.TopicLog): events appended per partition get
    the next offset; `reads` records each read's start positions, so a test sees where a catch-up resumed."""

    def __init__(self, topic: str = "pdo.authorizations", partitions: int = 3) -> None:
        self.topic = topic
        self.partitions: dict[int, list[TopicEvent]] = {p: [] for p in range(partitions)}
        self.reads: list[dict[int, int]] = []

    def append(self, partition: int, schema_name: str | None, value: Mapping[str, Any]) -> None:
        events = self.partitions[partition]
        events.append(TopicEvent(partition, len(events), schema_name, value))

    def end_offsets(self) -> dict[int, int]:
        return {partition: len(events) for partition, events in self.partitions.items()}

    def read(self, start: Mapping[int, int], end: Mapping[int, int]) -> Iterator[TopicEvent]:
        self.reads.append(dict(start))
        for partition, events in self.partitions.items():
            yield from events[start[partition] : end[partition]]


def granted_event(
    grant_id: str,
    valid_from: datetime,
    tenant_id: str = "tenant:acme",
    dataset_id: str = "traffic",
    daily_quota_records: int | None = None,
    price_plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An AuthorizationGranted value as decoded (only the fields metering reads matter)."""
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": valid_from,
        "actor": "operator:test",
        "grant_id": grant_id,
        "request_id": f"r-{grant_id}",
        "tenant_id": tenant_id,
        "dataset_id": dataset_id,
        "fields": ["record_id"],
        "masking": {},
        "row_filter": None,
        "daily_quota_records": daily_quota_records,
        "valid_from": valid_from,
        "valid_until": valid_from + timedelta(days=365),
        "price_plan": price_plan
        or {"kind": "FREE", "unit_price": Decimal("0.00"), "tiers": [], "currency": "CNY"},
    }
