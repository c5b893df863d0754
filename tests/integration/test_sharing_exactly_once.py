# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Exactly once to the tenant under SIGKILL: a `pdo sharing worker` is killed several times while it works
through a feed (more records arrive between kills) and restarted each time. A tenant reading its topic with
`isolation_level="read_committed"` (plain kafka-python, as a tenant would) then holds every record exactly
once under each grant — no duplicate, none missing — the committed usage facts on pdo.deliveries name each
delivery exactly once, and the ledger a metering worker fills from them holds exactly those deliveries."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition
from metering_support import ledger_count, pdo_workers  # noqa: F401
from sharing_support import (  # noqa: F401
    ACME,
    CITYLAB,
    Feed,
    committed_messages,
    db_url,
    fact_delivery_ids,
    grant,
    platform,
    register_dataset,
    settings,
    topic_messages,
)

from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.kafka import kafka_python_connection
from pdo.core.provenance import delivery_id
from pdo.core.topics import TopicId, tenant_topic
from pdo.metering import tables as t

pytestmark = pytest.mark.integration

BACKLOG_PER_KILL = 3_000  # records published before each worker starts
KILLS = 4
DEADLINE_S = 240


class CommittedEnds:
    """The read_committed end offsets (last stable offsets) of some topics: they move when a transaction
    commits."""

    def __init__(self, settings, names: list[str]) -> None:
        self.consumer = KafkaConsumer(**kafka_python_connection(settings), isolation_level="read_committed")
        self.names = names

    def total(self) -> int:
        # The tenant topics appear when a worker's follower first sees the grants.
        partitions = [
            TopicPartition(name, p)
            for name in self.names
            for p in self.consumer.partitions_for_topic(name) or ()
        ]
        return sum(self.consumer.end_offsets(partitions).values()) if partitions else 0

    def close(self) -> None:
        self.consumer.close()


def deliveries_by_grant(settings, codec: AvroCodec, topics_by_grant: dict[str, str]) -> Counter:
    """(grant, source partition, source offset) -> copies a read_committed tenant sees."""
    return Counter(
        (grant_id, value["pdo_provenance"]["source_partition"], value["pdo_provenance"]["source_offset"])
        for grant_id, topic in topics_by_grant.items()
        for value in (codec.decode(m.value).value for m in committed_messages(settings, topic))
    )


def test_a_read_committed_tenant_sees_every_record_once_across_sigkills(settings, platform, pdo_workers):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    topics_by_grant = {
        grant(service, ACME, dataset_id, ("record_id", "district", "plate_number")): tenant_topic(
            ACME, dataset_id, settings
        ),
        grant(service, CITYLAB, dataset_id, ("record_id", "speed_kmh")): tenant_topic(
            CITYLAB, dataset_id, settings
        ),
    }
    feed = Feed(settings, codec, dataset_id)
    group = f"sharing-{uuid.uuid4().hex[:8]}"
    command = ("sharing", "worker", "--group", group, "--loglevel", "info")
    deadline = time.monotonic() + DEADLINE_S
    committed = CommittedEnds(settings, list(topics_by_grant.values()))
    try:
        ids: list[str] = []
        kills_while_working = 0
        for kill in range(KILLS):
            ids += feed.publish(BACKLOG_PER_KILL, f"eos{kill}")  # a backlog for the next worker
            worker = pdo_workers(*command)
            before = committed.total()
            # Kill as soon as this worker committed a transaction of its own: it is mid-stream.
            while committed.total() <= before:
                assert worker.poll() is None, f"the worker exited with {worker.returncode}"
                assert time.monotonic() < deadline, "no progress before the deadline"
                time.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            if sum(deliveries_by_grant(settings, codec, topics_by_grant).values()) < 2 * len(ids):
                kills_while_working += 1
        survivor = pdo_workers(*command)
        expected = {(g, *feed.sent[rid]) for rid in ids for g in topics_by_grant}
        seen = deliveries_by_grant(settings, codec, topics_by_grant)
        while set(seen) != expected and time.monotonic() < deadline:
            assert survivor.poll() is None, f"the worker exited with {survivor.returncode}"
            time.sleep(1)
            seen = deliveries_by_grant(settings, codec, topics_by_grant)
        uncommitted = sum(len(topic_messages(settings, topic)) for topic in topics_by_grant.values())
        print(
            f"{kills_while_working} SIGKILLs while working, {len(expected)} deliveries; a read_uncommitted "
            f"reader sees {uncommitted - len(expected)} extra copies from aborted transactions"
        )
        assert kills_while_working >= 3

        duplicates = {key: copies for key, copies in seen.items() if copies > 1}
        assert duplicates == {}
        assert set(seen) == expected  # none missing, none extra

        # The committed usage facts name each delivery exactly once: no delivery without its fact, no fact
        # without its delivery, whatever the kills interrupted.
        facts = Counter(
            ident
            for m in committed_messages(settings, topics.name(TopicId.DELIVERIES, settings))
            for ident in fact_delivery_ids(codec.decode(m.value).value)
        )
        wanted = {delivery_id(feed.topic, partition, offset, g) for g, partition, offset in expected}
        assert set(facts) == wanted
        assert set(facts.values()) == {1}

        # Metering, reading committed facts only, holds exactly the deliveries.
        metering = pdo_workers("metering", "worker", "--group", f"metering-{uuid.uuid4().hex[:8]}")
        engine = db.make_engine(settings.database_url)
        try:
            while ledger_count(engine) < len(wanted) and time.monotonic() < deadline:
                assert metering.poll() is None, f"metering exited with {metering.returncode}"
                time.sleep(0.5)
            with engine.connect() as conn:
                ledger = set(
                    conn.execute(t.ledger.select().with_only_columns(t.ledger.c.delivery_id)).scalars()
                )
        finally:
            engine.dispose()
        assert ledger == wanted
    finally:
        committed.close()
        feed.close()
