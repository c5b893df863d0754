# ruff: noqa: F811 - test parameters name the fixtures imported from sharing_support
"""The sharing worker end to end: `pdo sharing worker` (faust) as processes on the real broker, registry and
database, in an isolated topic namespace.

One worker: tenants receive only granted fields, masked, only filtered rows, with provenance; records
published after a revocation or suspension are not delivered under it, after a resumption they are;
garbage on a feed is dead-lettered with its reason and bytes; one usage fact per delivery, with stable ids.
Two workers in one group on a 3-partition feed: each record delivered exactly once per grant.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter

import avro.schema
import pytest
from kafka.admin import KafkaAdminClient
from sharing_support import (  # noqa: F401 - fixtures are imported by name
    ACME,
    CITYLAB,
    DISTRICTS,
    PROVIDER,
    WAIT_S,
    Feed,
    committed_messages,
    db_url,
    fact_delivery_ids,
    grant,
    haidian_of,
    platform,
    read_topic,
    record_ids,
    register_dataset,
    settings,
    traffic_record,
    wait_for,
    workers,
)

from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA
from pdo.catalog.public import DatasetChanges
from pdo.core import topics
from pdo.core.config import Settings
from pdo.core.kafka import kafka_python_connection, producer
from pdo.core.provenance import delivery_id
from pdo.core.topics import TopicId, tenant_topic

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_one_worker_shares_masks_filters_stops_and_dead_letters(settings, workers, platform):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    acme = grant(
        service,
        ACME,
        dataset_id,
        ("record_id", "district", "plate_number", "speed_kmh"),
        row_filter="district == 'Haidian'",
    )
    citylab = grant(service, CITYLAB, dataset_id, ("record_id", "district", "speed_kmh"))
    acme_topic = tenant_topic(ACME, dataset_id, settings)
    citylab_topic = tenant_topic(CITYLAB, dataset_id, settings)
    assert acme_topic.endswith(f".tenant.acme-logistics.{dataset_id}")
    feed = Feed(settings, codec, dataset_id)
    started = time.monotonic()
    worker = workers(f"sharing-{uuid.uuid4().hex[:8]}")
    try:
        # 1. Both grants receive the first batch: citylab everything, acme only Haidian rows.
        first = feed.publish(9, "a")
        haidian = [rid for rid in first if feed.records[rid]["district"] == "Haidian"]
        wait_for(
            "first deliveries",
            lambda: (
                len(read_topic(settings, codec, citylab_topic)) >= 9
                and len(read_topic(settings, codec, acme_topic)) >= len(haidian)
            ),
            [worker],
        )
        print(f"worker start to first deliveries: {time.monotonic() - started:.1f} s")
        delivered = read_topic(settings, codec, acme_topic)
        assert sorted(record_ids(delivered)) == sorted(haidian)
        for _, _, value in delivered:
            source = feed.records[value["record_id"]]
            assert set(value) == {"record_id", "district", "plate_number", "speed_kmh", "pdo_provenance"}
            assert value["plate_number"] != source["plate_number"]
            assert re.fullmatch(r"京\*+\d", value["plate_number"]), value["plate_number"]
            provenance = value["pdo_provenance"]
            assert (provenance["source_partition"], provenance["source_offset"]) == feed.sent[
                value["record_id"]
            ]
            assert (provenance["grant_id"], provenance["dataset_id"]) == (acme, dataset_id)
            assert provenance["source_topic"] == feed.topic
        assert sorted(record_ids(read_topic(settings, codec, citylab_topic))) == sorted(first)

        # 2. Interleaved around a revocation: records stream in while citylab's grant is revoked.
        before, after = [], []
        for number in range(30):
            (after if number >= 15 else before).extend(feed.publish(1, f"b{number}"))
            if number == 14:
                service.revoke(citylab, "operator:alice", "contract ended")
        # 3. acme suspended: nothing; resumed: delivered again.
        service.suspend(acme, "operator:alice", "audit")
        suspended = feed.publish(6, "c")
        service.resume(acme, "operator:alice")
        resumed = feed.publish(6, "d")
        garbage_position = feed.raw(b"\x07 not avro at all", 1, b"garbage")
        resumed_haidian = {rid for rid in resumed if feed.records[rid]["district"] == "Haidian"}
        wait_for(
            "deliveries after the resumption",
            lambda: resumed_haidian <= set(record_ids(read_topic(settings, codec, acme_topic))),
            [worker],
        )
        # Every partition got a resumed record, so everything published before them was processed.
        assert {feed.sent[rid][0] for rid in resumed} == {0, 1, 2}

        citylab_ids = set(record_ids(read_topic(settings, codec, citylab_topic)))
        assert citylab_ids & set(after) == set(), "delivered under a revoked grant"
        assert citylab_ids & set(suspended + resumed) == set()
        assert set(first) <= citylab_ids <= set(first) | set(before)
        acme_ids = record_ids(read_topic(settings, codec, acme_topic))
        assert set(acme_ids) & set(suspended) == set(), "delivered under a suspended grant"
        # Records published before the suspension may be dropped if processed after it (never more).
        assert set(acme_ids) >= haidian_of(feed, first + resumed)
        assert set(acme_ids) <= haidian_of(feed, first + before + after + resumed)
        assert len(acme_ids) == len(set(acme_ids))

        # 4. The garbage went to the dead-letter topic with its reason, position and bytes.
        dead_letters_topic = topics.name(TopicId.DEAD_LETTERS, settings)
        letters = wait_for("dead letter", lambda: read_topic(settings, codec, dead_letters_topic), [worker])
        assert [(v["reason_code"], v["original_value"]) for _, _, v in letters] == [
            ("UNDECODABLE", b"\x07 not avro at all")
        ]
        letter = letters[0][2]
        assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
            feed.topic,
            *garbage_position,
        )

        # 5. Each delivery in one usage fact (a batch per grant and feed partition), by a delivery id derived
        # from source and grant.
        facts = [
            {**fact, **delivery}
            for _, _, fact in read_topic(settings, codec, topics.name(TopicId.DELIVERIES, settings))
            for delivery in fact["deliveries"]
        ]
        tenant_records = [
            (v["pdo_provenance"], topic)
            for topic in (acme_topic, citylab_topic)
            for _, _, v in read_topic(settings, codec, topic)
        ]
        expected_ids = sorted(
            delivery_id(p["source_topic"], p["source_partition"], p["source_offset"], p["grant_id"])
            for p, _ in tenant_records
        )
        assert sorted(f["delivery_id"] for f in facts) == expected_ids
        assert len(set(expected_ids)) == len(expected_ids)
        assert all(f["bytes"] > 0 for f in facts)
        assert {f["target_topic"] for f in facts} == {acme_topic, citylab_topic}

        # 6. A dataset registered while the worker runs: its feed is discovered and shared.
        late_dataset = register_dataset(catalog)
        grant(service, ACME, late_dataset, ("record_id", "district"))
        late_feed = Feed(settings, codec, late_dataset)
        discovered = time.monotonic()
        late_ids = late_feed.publish(3, "late")
        late_feed.close()
        late_topic = tenant_topic(ACME, late_dataset, settings)
        wait_for(
            "deliveries from a new feed",
            lambda: set(record_ids(read_topic(settings, codec, late_topic))) == set(late_ids),
            [worker],
        )
        print(f"new feed to first deliveries: {time.monotonic() - discovered:.1f} s")
        assert worker.poll() is None
    finally:
        feed.close()


def test_two_workers_deliver_each_record_once_per_grant(settings, workers, platform):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    first = grant(service, ACME, dataset_id, ("record_id", "district"))
    second = grant(service, CITYLAB, dataset_id, ("record_id", "speed_kmh"))
    group = f"sharing-{uuid.uuid4().hex[:8]}"
    processes = [workers(group), workers(group)]
    wait_for("two workers sharing the feed", lambda: _group_is_stable(settings, group, 2), processes)
    feed = Feed(settings, codec, dataset_id)
    try:
        ids = feed.publish(60, "x")
        topics_by_grant = {
            first: tenant_topic(ACME, dataset_id, settings),
            second: tenant_topic(CITYLAB, dataset_id, settings),
        }

        def delivered() -> Counter:
            return Counter(
                (v["pdo_provenance"]["source_partition"], v["pdo_provenance"]["source_offset"], grant_id)
                for grant_id, topic in topics_by_grant.items()
                for _, _, v in read_topic(settings, codec, topic)
            )

        wait_for("every record under both grants", lambda: len(delivered()) >= 2 * len(ids), processes)
        time.sleep(2)  # a duplicate would arrive now
        counts = delivered()
        assert set(counts) == {(*feed.sent[rid], g) for rid in ids for g in topics_by_grant}
        assert set(counts.values()) == {1}
        assert all(process.poll() is None for process in processes)
    finally:
        feed.close()


def _group_is_stable(settings: Settings, group: str, members: int) -> bool:
    admin = KafkaAdminClient(**kafka_python_connection(settings))
    try:
        description = admin.describe_groups([group])[group]
        return description["group_state"] == "Stable" and len(description["members"]) == members
    finally:
        admin.close()


def test_a_killed_worker_loses_nothing_and_its_committed_facts_name_each_delivery_once(
    settings, workers, platform
):
    """SIGKILL mid-backlog, twice: the killed worker's open transaction is aborted, and the restarted worker
    redoes its batch. Every record reaches the tenant, and the committed usage facts name each delivery once
    (test_sharing_exactly_once counts duplicates under more kills)."""
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    grant_id = grant(service, ACME, dataset_id, ("record_id", "plate_number"))
    target = tenant_topic(ACME, dataset_id, settings)
    deliveries = topics.name(TopicId.DELIVERIES, settings)
    group = f"sharing-{uuid.uuid4().hex[:8]}"
    feed = Feed(settings, codec, dataset_id)
    try:
        ids = feed.publish(3000, "k")
        for delivered_before_kill in (300, 1500):
            process = workers(group)
            wait_for(
                f"{delivered_before_kill} deliveries before the kill",
                lambda wanted=delivered_before_kill: len(read_topic(settings, codec, target)) >= wanted,
                [process],
            )
            process.kill()
            process.wait()
        survivor = workers(group)
        wait_for(
            "every record after the restarts",
            lambda: set(record_ids(read_topic(settings, codec, target))) >= set(ids),
            [survivor],
        )
        expected = sorted(delivery_id(feed.topic, *feed.sent[rid], grant_id) for rid in ids)
        committed = wait_for(
            "every usage fact committed",
            lambda: (found := committed_delivery_ids(settings, codec, deliveries)) == expected and found,
            [survivor],
        )
        assert committed == expected  # sorted, so a delivery named twice would show
        assert survivor.poll() is None
    finally:
        feed.close()


def committed_delivery_ids(settings: Settings, codec, topic: str) -> list[str]:
    """The delivery ids of the usage facts on `topic` a read_committed reader sees, sorted."""
    return sorted(
        ident
        for m in committed_messages(settings, topic)
        for ident in fact_delivery_ids(codec.decode(m.value).value)
    )


def test_a_dataset_schema_evolves_under_a_live_grant(settings, workers, platform):
    """The provider adds an optional field while a grant is active: records of both schema versions reach the
    tenant, each decodes with the registry, and the new field (not granted) never does."""
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    grant(service, ACME, dataset_id, ("record_id", "district"))
    process = workers(f"sharing-{uuid.uuid4().hex[:8]}")
    feed = Feed(settings, codec, dataset_id)
    try:
        before = feed.publish(6, "v1")
        evolved = json.loads(TRAFFIC_FLOW_SCHEMA)
        evolved["fields"].append({"name": "weather", "type": ["null", "string"], "default": None})
        catalog.update(PROVIDER, dataset_id, DatasetChanges(record_schema=json.dumps(evolved)), PROVIDER)
        feed.schema = avro.schema.parse(json.dumps(evolved))
        after = []
        for number in range(6):
            record = {**traffic_record(f"v2-{number}", DISTRICTS[number % 3]), "weather": "light rain"}
            feed.raw(codec.encode(feed.topic, feed.schema, record), number % 3, record["record_id"].encode())
            after.append(record["record_id"])
        target = tenant_topic(ACME, dataset_id, settings)
        received = wait_for(
            "records of both schema versions",
            lambda: (
                (found := read_topic(settings, codec, target))
                and set(record_ids(found)) >= {*before, *after}
                and found
            ),
            [process],
        )
        assert all(set(value) == {"record_id", "district", "pdo_provenance"} for _, _, value in received)
    finally:
        feed.close()


def test_an_undecodable_authorization_stops_delivery_and_is_dead_lettered(settings, workers, platform):
    """Fail closed: the worker cannot know what the event said (a revocation?), so nothing published after it
    is delivered; the event is dead-lettered once with its reason; the worker keeps running."""
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    acme = grant(service, ACME, dataset_id, ("record_id", "district"))
    acme_topic = tenant_topic(ACME, dataset_id, settings)
    feed = Feed(settings, codec, dataset_id)
    worker = workers(f"sharing-{uuid.uuid4().hex[:8]}")
    try:
        before = feed.publish(3, "before")
        wait_for("deliveries before", lambda: len(read_topic(settings, codec, acme_topic)) >= 3, [worker])
        sender = producer(settings)
        authorizations = topics.name(TopicId.AUTHORIZATIONS, settings)
        poison = b"\x00\x7f\xff\xff\xf0 an event the registry never saw"
        sender.send(authorizations, key=acme.encode(), value=poison).get(timeout=10)
        sender.close()
        after = feed.publish(6, "after")
        dead_letters = topics.name(TopicId.DEAD_LETTERS, settings)
        letters = wait_for(
            "the dead letter",
            lambda: [
                value
                for _, _, value in read_topic(settings, codec, dead_letters)
                if value["source_topic"] == authorizations
            ],
            [worker],
        )
        time.sleep(3)  # the records after the poison had their chance to be delivered, and must not be
        assert sorted(record_ids(read_topic(settings, codec, acme_topic))) == sorted(before)
        assert not set(after) & set(record_ids(read_topic(settings, codec, acme_topic)))
        assert len(letters) == 1  # dead-lettered once, though retried every few seconds
        assert letters[0]["reason_code"] == "UNDECODABLE" and letters[0]["original_value"] == poison
        assert "delivery is stopped" in letters[0]["reason"]
        assert worker.poll() is None
    finally:
        feed.close()
