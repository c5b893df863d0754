"""What the billing tests share: grants with a price plan (metering's projection) and ledger rows written straight
into SQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

import sqlalchemy as sa

from pdo.catalog.public import Dataset
from pdo.core.vocabulary import (
    Classification,
    Domain,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    PriceTier,
    SensitiveField,
    price_plan_to_json,
)
from pdo.metering import tables as t
from pdo.metering.testing import put_grant

GRANTED_AT = datetime(2026, 1, 1, tzinfo=UTC)
_numbers = count()


def per_thousand(price: str, currency: str = "CNY") -> PricePlan:
    return PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal(price), currency=currency)


def per_megabyte(price: str) -> PricePlan:
    return PricePlan(PriceKind.PER_MEGABYTE, Decimal(price))


def tiered(*tiers: tuple[int | None, str], beyond: str = "0.00") -> PricePlan:
    return PricePlan(
        PriceKind.TIERED, Decimal(beyond), tuple(PriceTier(bound, Decimal(price)) for bound, price in tiers)
    )


FREE = PricePlan(PriceKind.FREE)


def add_grant(conn: sa.Connection, grant_id: str, tenant_id: str, dataset_id: str, plan: PricePlan) -> None:
    """The grant as metering's projection holds it (its price plan is what billing prices by)."""
    put_grant(
        conn,
        grant_id,
        tenant_id,
        dataset_id,
        GRANTED_AT,
        valid_until=GRANTED_AT + timedelta(days=730),
        price_plan=price_plan_to_json(plan),
    )


def add_usage(
    conn: sa.Connection,
    grant_id: str,
    tenant_id: str,
    dataset_id: str,
    records_: int,
    bytes_: int,
    delivered_at: datetime,
    billing_period: str | None = None,
    set_aside_reason: str | None = None,
    delivery_id: str | None = None,
    source_offset: int | None = None,
    recorded_at: datetime | None = None,
) -> str:
    """One ledger row, billed in the month of `delivered_at` unless told otherwise (or set aside); its id."""
    number = next(_numbers)
    delivery_id = delivery_id or f"d{number:031d}"
    if set_aside_reason is None and billing_period is None:
        billing_period = f"{delivered_at.year:04d}-{delivered_at.month:02d}"
    offset = number if source_offset is None else source_offset
    conn.execute(
        t.ledger.insert().values(
            delivery_id=delivery_id,
            tenant_id=tenant_id,
            dataset_id=dataset_id,
            grant_id=grant_id,
            records=records_,
            bytes=bytes_,
            delivered_at=delivered_at,
            recorded_at=recorded_at or delivered_at,
            source_topic=f"pdo.feed.{dataset_id}",
            source_partition=0,
            first_offset=offset,
            last_offset=offset,
            billing_period=billing_period,
            set_aside_reason=set_aside_reason,
        )
    )
    return delivery_id


# A dataset as the catalog holds it, with listing fields set (listings and the annual disclosure).
TRAFFIC_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "TrafficFlow",
        "fields": [
            {"name": "sensor_id", "type": "string", "doc": "the sensor"},
            {"name": "plate", "type": ["null", "string"], "default": None},
            {"name": "observed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "vehicles", "type": "int"},
        ],
    }
)


def traffic(**changes) -> Dataset:
    values = {
        "dataset_id": "traffic",
        "provider_id": "provider:transport",
        "owner_department": "Transport Bureau",
        "title": "Traffic flow",
        "domain": Domain.TRANSPORT,
        "classification": Classification.IMPORTANT,
        "openness": Openness.CONDITIONAL,
        "schema_subject": "pdo.feed.traffic-TrafficFlow",
        "schema_id": 7,
        "record_schema": TRAFFIC_SCHEMA,
        "price_plan": PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("0.50")),
        "sensitive_fields": (SensitiveField("plate", MaskingRule.KEYED_HASH, "identifies a vehicle"),),
        "description": "vehicles per sensor per minute",
        "asset_registration_number": "SZ-DA-2026-0042",
        "terms": "traffic planning and research only; no re-identification",
    }
    return Dataset(**{**values, **changes})
