"""Scanning the tenant topics: every record sharing delivered, by the delivery id its usage fact carries.

Every record on the tenant topics carries `pdo_provenance` (source topic, partition, offset, grant), from
which `pdo.sharing.transform.delivery_id` gives the id its usage fact carries. A record the sharing service
wrote twice (a redelivery) has one id and is kept once; the extra copies are counted apart.

The topics are read to the end offsets taken when the scan starts, with a consumer outside any group. The
topics scanned are those of every (tenant, dataset) a grant metering knows or a ledger row names
(pdo.metering.public). Tenant topics keep records for a limited time (7 days as declared): when retention
has deleted the start of a topic, the scan notes from when on the topic is complete (the latest
first-retained record over its partitions).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import TopicPartition
from kafka.errors import UnknownTopicOrPartitionError
from sqlalchemy import Connection

from pdo.core import kafka
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.events import utc_now
from pdo.core.kafka import admin_client
from pdo.core.provenance import PROVENANCE_FIELD, delivery_id
from pdo.core.topics import tenant_topic
from pdo.metering.public import tenant_dataset_pairs

UNKNOWN_TOPIC = UnknownTopicOrPartitionError.errno


@dataclass(frozen=True)
class TopicRecord:
    """One delivery as the tenant topic holds it."""

    delivery_id: str
    grant_id: str
    written_at: datetime  # the Kafka timestamp of its first copy


@dataclass
class TopicScan:
    """What the tenant topics held when the scan started: each delivery id once, and what else was seen."""

    started_at: datetime
    records: dict[str, TopicRecord] = field(default_factory=dict)
    duplicates: Counter = field(default_factory=Counter)  # delivery id -> extra copies
    unreadable: list[str] = field(default_factory=list)  # "<topic>[p]@o: reason"
    # (tenant, dataset) -> the time from which its topic still holds every record: retention deleted the
    # older ones (a topic that never lost any is not listed).
    complete_since: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def retained(self, tenant_id: str, dataset_id: str, at: datetime) -> bool:
        """Whether a record of that tenant and dataset delivered `at` would still be on its topic."""
        since = self.complete_since.get((tenant_id, dataset_id))
        return since is None or at >= since


def tenant_topics(conn: Connection, settings: Settings) -> dict[str, tuple[str, str]]:
    """Every tenant topic a grant or a ledger row names (whether or not the broker has it): its (tenant, dataset)."""
    names = {}
    for tenant_id, dataset_id in sorted(tenant_dataset_pairs(conn)):
        try:
            names[tenant_topic(tenant_id, dataset_id, settings)] = (tenant_id, dataset_id)
        except PdoError:
            continue  # an id that cannot name a topic never had one
    return names


def scan_tenant_topics(
    settings: Settings,
    codec: AvroCodec,
    names: dict[str, tuple[str, str]],
    timeout_s: float = 60.0,
    isolation_level: str = "read_committed",
) -> TopicScan:
    """Read the topics `names` maps to their (tenant, dataset) from their beginning to the end offsets of now,
    with a consumer outside any group, committed records only as a tenant reads them: sharing writes in
    transactions, and an aborted batch's records were never delivered (pdo.sharing.transactions)."""
    scan = TopicScan(started_at=utc_now())
    assigned = tenant_partitions(settings, names)
    if not assigned:
        return scan
    consumer = kafka.consumer(
        settings,
        enable_auto_commit=False,
        request_timeout_ms=max(settings.kafka_timeout_s * 1000, 5000),
        isolation_level=isolation_level,
    )
    try:
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        # A partition whose log no longer starts at 0 lost records to retention before its first one.
        truncated = {tp: start for tp, start in consumer.beginning_offsets(assigned).items() if start > 0}
        for tp, start in truncated.items():
            if start >= ends[tp]:  # nothing left: from when on it is complete is unknown, so from now
                _complete_from(scan, names[tp.topic], scan.started_at)
        deadline = time.monotonic() + timeout_s
        while any((consumer.position(tp) or 0) < ends[tp] for tp in assigned):  # None: not known yet
            if time.monotonic() > deadline:
                raise PdoError(
                    f"could not read the tenant topics to their end within {timeout_s:.0f} s",
                    hint="is the broker slow or the topics very large? try again",
                )
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for message in messages:
                    if message.offset < ends[tp]:
                        _note(scan, codec, message)
                    if message.offset == truncated.get(tp):
                        _complete_from(scan, names[tp.topic], _timestamp(message))
    finally:
        consumer.close()
    return scan


def tenant_partitions(settings: Settings, names: Iterable[str]) -> list[TopicPartition]:
    """The partitions of those of `names` the broker has, asked topic by topic (never auto-creating one).

    A consumer's metadata cache may be incomplete right after it connects; an incomplete answer here would
    show every record of a missing topic as drift, so the broker's word on each topic is required.
    """
    wanted = sorted(names)
    if not wanted:
        return []
    with admin_client(settings) as admin:
        described = {topic["name"]: topic for topic in admin.describe_topics(wanted)}
    partitions = []
    for name in wanted:
        code = described[name]["error_code"] if name in described else None
        if code == UNKNOWN_TOPIC:
            continue  # no delivery ever created it
        if code != 0:
            raise PdoError(
                f"the broker did not describe tenant topic {name} (error code {code})",
                hint="the topic may be being created or moved; try again",
            )
        partitions += [TopicPartition(name, p["partition_index"]) for p in described[name]["partitions"]]
    return sorted(partitions)


def _complete_from(scan: TopicScan, owner: tuple[str, str], moment: datetime) -> None:
    """The topic is complete only from the latest first-retained record over its partitions."""
    scan.complete_since[owner] = max(moment, scan.complete_since.get(owner, moment))


def _timestamp(message: Any) -> datetime:
    return datetime.fromtimestamp(message.timestamp / 1000, UTC)


def _note(scan: TopicScan, codec: AvroCodec, message: Any) -> None:
    position = f"{message.topic}[{message.partition}]@{message.offset}"
    try:
        provenance = codec.decode(message.value).value[PROVENANCE_FIELD]
        record = TopicRecord(
            delivery_id(
                provenance["source_topic"],
                provenance["source_partition"],
                provenance["source_offset"],
                provenance["grant_id"],
            ),
            provenance["grant_id"],
            _timestamp(message),
        )
    except (CodecError, KeyError, TypeError) as error:
        scan.unreadable.append(f"{position}: {type(error).__name__} {error}")
        return
    if record.delivery_id in scan.records:
        scan.duplicates[record.delivery_id] += 1
    else:
        scan.records[record.delivery_id] = record
