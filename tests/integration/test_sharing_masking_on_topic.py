"""A masked field never appears in clear on a tenant topic: a property over hypothesis-generated records.

Hypothesis draws a few hundred TrafficFlow records (Chinese plates, mobile numbers, districts) in the test
process; they are published to a feed that a real `pdo sharing worker` shares under a grant with
plate_number (KEEP_FIRST_LAST) and driver_phone (MASK_MIDDLE_DIGITS) and a row filter. Every record on
the tenant topic is then read as raw bytes: no clear plate or phone occurs in any of them, the decoded
values carry only granted fields, masked, and exactly the filtered rows arrived.

The sharing worker fixtures (namespace, worker processes, catalog) are test_sharing_worker's.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_sharing_worker are parameters here)
from __future__ import annotations

import re
from datetime import UTC, datetime

import avro.schema
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sharing_support import (  # noqa: F401  (fixtures)
    ACME,
    DISTRICTS,
    db_url,
    grant,
    platform,
    register_dataset,
    settings,
    topic_messages,
    wait_for,
    workers,
)

from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA
from pdo.core.kafka import producer
from pdo.core.topics import feed_topic, tenant_topic

pytestmark = pytest.mark.integration

RECORDS = 300
GRANTED = ("record_id", "district", "plate_number", "driver_phone")
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
PLATE_TAIL = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
MOBILE_PREFIXES = ("130", "133", "135", "138", "139", "150", "158", "177", "186", "189", "199")

# A plate: province, city letter, 5 characters (6 for new-energy vehicles), e.g. 京A12345, 粤B0D1234.
plates = st.builds(
    lambda province, city, tail: province + city + tail,
    st.sampled_from(PROVINCES),
    st.sampled_from(PLATE_LETTERS),
    st.text(PLATE_TAIL, min_size=5, max_size=6),
)
phones = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(MOBILE_PREFIXES),
    st.text("0123456789", min_size=8, max_size=8),
)
traffic_records = st.fixed_dictionaries(
    {
        "checkpoint_id": st.sampled_from(["cp-1", "cp-17", "cp-42"]),
        "district": st.sampled_from(DISTRICTS),
        "plate_number": plates,
        "vehicle_type": st.sampled_from(["PASSENGER_CAR", "BUS", "TRUCK", "MOTORCYCLE", "SPECIAL", "OTHER"]),
        "speed_kmh": st.floats(min_value=0, max_value=220, allow_nan=False),
        "lane": st.integers(min_value=1, max_value=8),
        "direction": st.sampled_from(["NORTHBOUND", "SOUTHBOUND", "EASTBOUND", "WESTBOUND", "UNKNOWN"]),
        "observed_at": st.just(datetime(2026, 3, 1, 8, 30, tzinfo=UTC)),
        "driver_phone": st.none() | phones,
    }
)


def generated_records(count: int) -> list[dict]:
    """`count` distinct records drawn by hypothesis (generation phase only: varied, not shrunk)."""
    drawn: list[dict] = []

    @hypothesis_settings(
        max_examples=count * 3,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(traffic_records)
    def collect(record: dict) -> None:
        if len(drawn) < count and record["plate_number"] not in {r["plate_number"] for r in drawn}:
            drawn.append(record)

    collect()
    return [{"record_id": f"r{number:04d}", **record} for number, record in enumerate(drawn)]


def test_masked_fields_never_reach_the_tenant_topic_in_clear(settings, workers, platform):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    grant(service, ACME, dataset_id, GRANTED, row_filter="district != 'Chaoyang'")
    records = generated_records(RECORDS)
    assert len(records) >= RECORDS * 0.9, "hypothesis drew too few distinct plates"
    expected = {r["record_id"]: r for r in records if r["district"] != "Chaoyang"}
    topic = feed_topic(dataset_id, settings)
    schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
    worker = workers("sharing-masking")
    kafka_producer = producer(settings)
    try:
        for record in records:
            kafka_producer.send(
                topic, key=record["record_id"].encode(), value=codec.encode(topic, schema, record)
            )
        kafka_producer.flush(timeout=30)
    finally:
        kafka_producer.close()

    tenant = tenant_topic(ACME, dataset_id, settings)
    delivered = wait_for(
        "every filtered record",
        lambda: (v := [m.value for m in topic_messages(settings, tenant)]) and len(v) >= len(expected) and v,
        [worker],
    )
    assert len(delivered) == len(expected)
    secrets = [r["plate_number"] for r in records] + [r["driver_phone"] for r in records if r["driver_phone"]]
    for raw in delivered:
        leaked = [secret for secret in secrets if secret.encode() in raw]
        assert leaked == [], f"clear values on the tenant topic: {leaked}"
    decoded = [codec.decode(raw).value for raw in delivered]
    assert sorted(v["record_id"] for v in decoded) == sorted(expected)
    for value in decoded:
        source = expected[value["record_id"]]
        assert set(value) == {*GRANTED, "pdo_provenance"}
        plate = source["plate_number"]
        assert value["plate_number"] == plate[0] + "*" * (len(plate) - 2) + plate[-1]
        phone = source["driver_phone"]
        assert value["driver_phone"] == (phone and f"{phone[:3]}****{phone[-4:]}")
        assert re.fullmatch(r".\*+.", value["plate_number"])
        assert value["plate_number"] not in secrets and value["driver_phone"] not in secrets
