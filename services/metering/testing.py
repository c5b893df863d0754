"""Helpers for tests and benchmarks of metering: grants as rows, usage facts as values and as events."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from pdo.authorization import tables as authz
from pdo.metering.ledger import UsageFact


def insert_grant(
    engine: Engine,
    grant_id: str,
    valid_from: datetime,
    tenant_id: str = "tenant:acme",
    dataset_id: str = "traffic",
    daily_quota_records: int | None = None,
) -> None:
    """An ACTIVE grant row as the authorization service keeps it (only what metering reads matters)."""
    with engine.begin() as conn:
        conn.execute(
            authz.grants.insert().values(
                grant_id=grant_id,
                request_id=f"r-{grant_id}",
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                fields=json.dumps(["record_id"]),
                masking="{}",
                row_filter=None,
                daily_quota_records=daily_quota_records,
                valid_from=valid_from,
                valid_until=valid_from + timedelta(days=365),
                price_plan=json.dumps({"kind": "FREE"}),
                status="ACTIVE",
                version=1,
                created_at=valid_from,
                updated_at=valid_from,
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
        delivery_id=delivery_id,
        tenant_id=tenant_id,
        dataset_id=dataset_id,
        grant_id=grant_id,
        records=records,
        bytes=size,
        delivered_at=delivered_at,
        source_topic=f"pdo.feed.{dataset_id}",
        source_partition=0,
        first_offset=offset,
        last_offset=offset + records - 1,  # a fact counts the records of the source offsets it covers
    )


def records_delivered_event(fact: UsageFact) -> dict[str, Any]:
    """The RecordsDelivered value sharing would publish for `fact`."""
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, fact.delivery_id)),
        "occurred_at": fact.delivered_at,
        "actor": "system:sharing",
        "delivery_id": fact.delivery_id,
        "tenant_id": fact.tenant_id,
        "dataset_id": fact.dataset_id,
        "grant_id": fact.grant_id,
        "target_topic": f"pdo.tenant.{fact.tenant_id.split(':')[-1]}.{fact.dataset_id}",
        "provenance": {
            "source_topic": fact.source_topic,
            "source_partition": fact.source_partition,
            "first_offset": fact.first_offset,
            "last_offset": fact.last_offset,
            "masking_policy_version": "test",
        },
        "records": fact.records,
        "bytes": fact.bytes,
    }
