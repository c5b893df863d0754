"""A grant's scope holds on the real tenant topics, read the way a tenant reads them (kafka-python, raw).

1. Under every masking rule: the Kafka key, the headers and the value of every tenant record carry no clear
   value of a field the grant masks or leaves out — `record_id` included, which used to be the key in clear.
   For each rule a TrafficFlow dataset marks record_id, plate_number and driver_phone sensitive with that
   rule; one tenant is granted all three (masked), another none of them. Hypothesis draws the records.
2. A forged grant event whose row filter reads a field it does not deliver (the issue's attack: record_id
   only, filtered on the driver's phone) is written to pdo.authorizations with public clients, as the
   admin (no party may write there: test_hostile_clients shows that; this is defence in depth against a
   stale or broken grant): the real worker delivers nothing under it, keeps delivering under the honest grant, and dead-letters the
   refusal once, naming the grant and the field, without the record's bytes.

The sharing worker fixtures (namespace, worker processes, catalog) are sharing_support's.
"""

# ruff: noqa: F811  (pytest fixtures imported from sharing_support are parameters here)
from __future__ import annotations

import io
import json
import re
import struct
import uuid
from collections import Counter
from datetime import UTC

import avro.schema
import fastavro
import httpx
import pytest
from conftest import admin_credentials
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from sharing_support import (  # noqa: F401  (fixtures)
    ACME,
    CITYLAB,
    DISTRICTS,
    db_url,
    grant,
    platform,
    settings,
    topic_messages,
    wait_for,
    workers,
)

from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA, register_traffic_dataset
from pdo.core import topics
from pdo.core.kafka import kafka_python_connection
from pdo.core.topics import TopicId, feed_topic, tenant_topic
from pdo.core.vocabulary import MaskingRule, SensitiveField
from pdo.sharing.masking import mask

pytestmark = pytest.mark.integration

RECORDS_PER_RULE = 30
HIDDEN = ("record_id", "plate_number", "driver_phone")
MASKED_GRANT = ("record_id", "district", "plate_number", "driver_phone")  # the three hidden ones masked
LEFT_OUT_GRANT = ("district", "speed_kmh")  # none of them
PSEUDONYM = re.compile(rb"[0-9a-f]{32}")

record_ids = st.text("0123456789abcdef", min_size=12, max_size=12).map(lambda hexa: f"rid-{hexa}")
plates = st.builds(
    lambda province, city, tail: province + city + tail,
    st.sampled_from("京津沪渝冀豫云辽黑湘皖鲁新苏浙"),
    st.sampled_from("ABCDEFGHJKLMN"),
    st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=5, max_size=6),
)
phones = st.builds(
    lambda second, rest: "1" + second + rest,
    st.sampled_from("3456789"),
    st.text("0123456789", min_size=9, max_size=9),
)
records = st.fixed_dictionaries(
    {
        "record_id": record_ids,
        "checkpoint_id": st.sampled_from(["cp-1", "cp-17", "cp-42"]),
        "district": st.sampled_from(DISTRICTS),
        "plate_number": plates,
        "vehicle_type": st.sampled_from(["PASSENGER_CAR", "BUS", "TRUCK"]),
        "speed_kmh": st.floats(min_value=0, max_value=220, allow_nan=False),
        "lane": st.integers(min_value=1, max_value=8),
        "direction": st.sampled_from(["NORTHBOUND", "SOUTHBOUND"]),
        "observed_at": st.datetimes(timezones=st.just(UTC)).filter(
            lambda moment: 2000 <= moment.year <= 2030
        ),
        "driver_phone": phones,
    }
)


def generated_records(count: int) -> list[dict]:
    """`count` records with distinct ids, plates and phones, drawn by hypothesis (generation phase only)."""
    drawn: list[dict] = []

    @hypothesis_settings(
        max_examples=count * 4,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(records)
    def collect(record: dict) -> None:
        if len(drawn) < count and all(record[name] not in {r[name] for r in drawn} for name in HIDDEN):
            drawn.append(record)

    collect()
    return drawn


def publish(settings, codec, dataset_id: str, batch: list[dict]) -> None:
    """As a provider does: keyed by the clear record_id on the feed (which only the platform reads)."""
    topic = feed_topic(dataset_id, settings)
    schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
    producer = KafkaProducer(**kafka_python_connection(settings))
    try:
        for record in batch:
            producer.send(topic, key=record["record_id"].encode(), value=codec.encode(topic, schema, record))
        producer.flush(timeout=30)
    finally:
        producer.close()


def delivered(settings, tenant: str, dataset_id: str, count: int, processes) -> list:
    topic = tenant_topic(tenant, dataset_id, settings)
    return wait_for(
        f"{count} records on {topic}",
        lambda: (found := topic_messages(settings, topic)) and len(found) >= count and found,
        processes,
    )


def leaks(message, secrets: list[str]) -> list[str]:
    """Secrets found anywhere in a raw Kafka message: its key, each header's name and value, its value."""
    parts = [message.key or b"", message.value or b""]
    parts += [part for name, value in message.headers for part in (name.encode(), value or b"")]
    return [secret for secret in secrets if any(secret.encode() in part for part in parts)]


# ---------------------------------------------------------------------------------------------- 1


def test_no_key_header_or_value_carries_a_masked_or_left_out_value_under_any_masking_rule(
    settings, workers, platform
):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    cases = []
    for rule in MaskingRule:
        sensitive = tuple(SensitiveField(name, rule) for name in HIDDEN)
        dataset_id = register_traffic_dataset(catalog, title=f"Traffic ({rule})", sensitive_fields=sensitive)
        grant(service, ACME, dataset_id, MASKED_GRANT, row_filter="district != 'Chaoyang'")
        grant(service, CITYLAB, dataset_id, LEFT_OUT_GRANT)
        cases.append((rule, dataset_id, generated_records(RECORDS_PER_RULE)))
    worker = workers("sharing-grant-scope")
    for _, dataset_id, batch in cases:
        publish(settings, codec, dataset_id, batch)

    for rule, dataset_id, batch in cases:
        secrets = [record[name] for record in batch for name in HIDDEN]
        wanted = [record for record in batch if record["district"] != "Chaoyang"]
        masked = delivered(settings, ACME, dataset_id, len(wanted), [worker])
        left_out = delivered(settings, CITYLAB, dataset_id, len(batch), [worker])
        assert (len(masked), len(left_out)) == (len(wanted), len(batch)), rule

        for message in masked + left_out:
            assert leaks(message, secrets) == [], f"{rule}: clear values on {message.topic}"
            assert PSEUDONYM.fullmatch(message.key), f"{rule}: key {message.key!r} is no pseudonym"
        # Per-grant pseudonyms: stable per record, one per record, and unlinkable between the two grants.
        masked_keys, left_out_keys = {m.key for m in masked}, {m.key for m in left_out}
        assert (len(masked_keys), len(left_out_keys)) == (len(wanted), len(batch))
        assert masked_keys.isdisjoint(left_out_keys)

        # The values: the hidden fields masked by the rule, the same multiset as the source records give.
        shown = [codec.decode(m.value).value for m in masked]
        assert all(set(value) == {*MASKED_GRANT, "pdo_provenance"} for value in shown)
        expected = Counter(tuple(mask_or_hash(record[name], rule) for name in HIDDEN) for record in wanted)
        assert Counter(tuple(normalised(value[name], rule) for name in HIDDEN) for value in shown) == expected
        for value in (codec.decode(m.value).value for m in left_out):
            assert set(value) == {*LEFT_OUT_GRANT, "pdo_provenance"}
            assert value["pdo_provenance"]["dataset_id"] == dataset_id


def mask_or_hash(clear: str, rule: MaskingRule) -> str | None:
    """What the tenant should see; a KEYED_HASH pseudonym (key-dependent) is compared by its form only."""
    return "<pseudonym>" if rule is MaskingRule.KEYED_HASH else mask(clear, rule, b"")


def normalised(shown: str | None, rule: MaskingRule) -> str | None:
    if rule is MaskingRule.KEYED_HASH:
        assert shown is not None and re.fullmatch(r"[0-9a-f]{16}", shown), shown
        return "<pseudonym>"
    return shown


# ---------------------------------------------------------------------------------------------- 2


def test_a_forged_grant_whose_filter_reads_a_hidden_field_delivers_nothing_and_is_dead_lettered(
    settings, workers, platform, registry_url
):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_traffic_dataset(catalog)
    honest = grant(service, ACME, dataset_id, ("record_id", "district"))
    mallory = f"tenant:mallory-{uuid.uuid4().hex[:6]}"
    forge_grant(
        settings,
        registry_url,
        honest,
        grant_id=f"g-forged-{uuid.uuid4().hex[:6]}",
        tenant_id=mallory,
        fields=["record_id"],
        masking={},
        row_filter="driver_phone >= '13800000000' and driver_phone < '13900000000'",
    )
    worker = workers("sharing-forged")
    batch = generated_records(20)
    publish(settings, codec, dataset_id, batch)

    assert len(delivered(settings, ACME, dataset_id, len(batch), [worker])) == len(batch)
    letters = wait_for(
        "the refused grant's dead letter",
        lambda: [
            value
            for value in (
                codec.decode(m.value).value
                for m in topic_messages(settings, topics.name(TopicId.DEAD_LETTERS, settings))
            )
            if value["reason_code"] == "INVALID_EVENT"
        ],
        [worker],
    )
    assert len(letters) == 1
    (letter,) = letters
    assert "g-forged-" in letter["reason"] and "'driver_phone' is not granted" in letter["reason"]
    assert (letter["original_key"], letter["original_value"]) == (None, b"")
    assert topic_messages(settings, tenant_topic(mallory, dataset_id, settings)) == []


def forge_grant(settings, registry_url: str, honest_grant_id: str, **forged) -> None:
    """Copy the honest AuthorizationGranted off the topic and write it back changed, as an attacker with
    write access to pdo.authorizations (or a stale copy) would: kafka-python, the registry's HTTP API, fastavro."""
    topic = topics.name(TopicId.AUTHORIZATIONS, settings)
    subject = f"{topic}-pdo.authorizations.v1.AuthorizationGranted"
    latest = httpx.get(
        f"{registry_url}/subjects/{subject}/versions/latest", auth=admin_credentials(), timeout=10
    ).json()
    parsed = fastavro.parse_schema(json.loads(latest["schema"]))
    (original,) = [m for m in topic_messages(settings, topic) if m.key == honest_grant_id.encode()]
    event = fastavro.schemaless_reader(io.BytesIO(original.value[5:]), parsed, None)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, {**event, **forged, "event_id": str(uuid.uuid4())})
    producer = KafkaProducer(**kafka_python_connection(settings), acks="all")
    try:
        value = b"\x00" + struct.pack(">I", latest["id"]) + body.getvalue()
        producer.send(topic, key=forged["grant_id"].encode(), value=value).get(timeout=10)
    finally:
        producer.close()
