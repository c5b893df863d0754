"""What the sharing worker does with one feed record, independent of faust and of the broker.

`FeedHandler.handle(message, published_at)` is blocking (the registry for schemas, Avro) and runs in a
thread; it returns a `Prepared`: the Kafka messages to write, and the metrics to count
once they are written. For a record of dataset D, published at T:

1. D is the feed topic's dataset (the feed declaration's name template read backwards), looked up in the
   worker's view of pdo.catalog (datasets.py; the agent has caught the view up first if it lacked D: the
   ordering rule); not there → UNKNOWN_DATASET, a retired dataset → RETIRED_DATASET;
2. the value decodes with our codec (UNDECODABLE, UNKNOWN_SCHEMA, SCHEMA_MISMATCH), and its writer schema
   is D's record (else SCHEMA_MISMATCH);
3. for every grant the book says delivers D at T: keep the granted fields, apply the row filter (compiled
   once per grant version), mask, attach provenance (`pdo.sharing.transform.shape`), encode against the
   tenant's record schema to the tenant topic, key = `pdo.sharing.transform.tenant_key` (the record_id
   only where the grant delivers it in clear, else a per-grant pseudonym); and a `Delivery` (its delivery id,
   stable across redelivery, and its size). `share_batch` groups a batch's messages per feed partition (one
   Kafka transaction each, pdo.sharing.transactions) and adds ONE usage fact per grant version and tenant
   topic in it, a RecordsDeliveredBatch listing each delivery's id, offset and size: metering decodes tens
   of messages per batch instead of one per delivery, and still counts each delivery id once.

A record that fails 1–2, or whose shaped value does not fit the tenant schema, yields one dead letter
(reason, source position, original bytes) and no delivery: all or nothing per record.

A grant whose row filter cannot be used — it does not parse, or it names a field the grant does not
deliver in clear (a forged or stale grant event: the authorization service never grants one) — delivers
nothing, and the first record it withholds yields one INVALID_EVENT dead letter per grant version and
worker, naming the grant and the reason. That letter carries the record's position but none of its bytes:
the record itself is fine and went to every other grant, so there is nothing to replay, only a grant to
correct or revoke. Failures of a
backing service (transient in the sense of `pdo.core.retry.is_transient`) are raised for the caller to
retry; nothing else escapes.

Tenant topics: `pdo.tenant.{tenant_id}.{dataset_id}` cannot hold ':' — the tenant part is the tenant
id after its kind, "tenant:acme" → "acme" (an id without a colon is used whole). Two principals of
different kinds with the same name would share a topic name; tenant ids are all "tenant:<name>" today.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import avro.schema
from prometheus_client import Counter, Gauge

from pdo.authorization.public import row_filter
from pdo.catalog.public import Dataset
from pdo.core import schemas, topics
from pdo.core.codec import AvroCodec, CodecError, Decoded, SchemaMismatchError
from pdo.core.config import Settings
from pdo.core.deadletters import DEAD_LETTER, SourceMessage, dead_letter_event
from pdo.core.errors import InvalidInput, NotFound
from pdo.core.events import utc_now
from pdo.core.names import Event
from pdo.core.provenance import delivery_id
from pdo.core.retry import is_transient
from pdo.core.topics import TopicId, tenant_topic
from pdo.sharing.grants import GrantBook
from pdo.sharing.masking import pseudonym_key
from pdo.sharing.scope import GrantScope
from pdo.sharing.transform import Provenance, masking_policy_version, shape, tenant_key, tenant_record_schema

log = logging.getLogger(__name__)

SERVICE = "sharing"
# What one Kafka record may hold here: the producers' max_request_size (1 MiB) less room for the batch header.
MAX_TENANT_RECORD_BYTES = 1_000_000
RECORDS_DELIVERED_BATCH = Event.RECORDS_DELIVERED_BATCH
# Stable usage-fact event ids: uuid5 of the delivery id under this namespace.
USAGE_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pdo:sharing:records-delivered")

RECORDS_IN = Counter(
    "pdo_sharing_records_in_total",
    "Feed records the sharing worker finished (delivered, filtered out or dead-lettered), by dataset",
    ["dataset"],
)
FEED_LAST_RECORD = Gauge(
    "pdo_sharing_feed_last_record_timestamp_seconds",
    "Kafka timestamp of the newest feed record the sharing worker finished, by dataset",
    ["dataset"],
)
DELIVERIES = Counter(
    "pdo_sharing_deliveries_total",
    "Records written to tenant streams, by tenant and dataset (bounded by the catalog and the grants)",
    ["tenant", "dataset"],
)
MASKED_FIELDS = Counter(
    "pdo_sharing_masked_fields_total", "Field values masked on their way to a tenant, by rule", ["rule"]
)
DEAD_LETTERS = Counter(
    "pdo_sharing_dead_letters_total", "Feed records sent to the dead-letter topic, by reason", ["reason"]
)


@dataclass(frozen=True)
class Outgoing:
    """One Kafka message to write."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Delivery:
    """One tenant record written under one grant: what its usage fact says of it."""

    scope: GrantScope
    target: str
    policy_version: str
    source_topic: str
    source_partition: int
    source_offset: int
    size: int

    @property
    def delivery_id(self) -> str:
        return delivery_id(self.source_topic, self.source_partition, self.source_offset, self.scope.grant_id)


@dataclass
class Prepared:
    """What one feed record becomes: messages to write, and what to count once they are written."""

    dataset: str  # the feed's dataset id ("" for a topic that is not a feed): bounded by the catalog
    published_at: datetime
    outgoing: list[Outgoing] = field(default_factory=list)
    usage: list[Delivery] = field(default_factory=list)  # its usage facts go out per batch (usage_facts)
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (tenant, dataset) per delivery
    masked: list[str] = field(default_factory=list)  # the rule of each masked field value
    dead_letter_reason: str | None = None

    def count(self) -> None:
        """Count the record as written: call after the broker acknowledged every message."""
        RECORDS_IN.labels(self.dataset).inc()
        FEED_LAST_RECORD.labels(self.dataset).set(self.published_at.timestamp())
        for tenant, dataset in self.delivered:
            DELIVERIES.labels(tenant, dataset).inc()
        for rule in self.masked:
            MASKED_FIELDS.labels(rule).inc()
        if self.dead_letter_reason is not None:
            DEAD_LETTERS.labels(self.dead_letter_reason).inc()


@dataclass
class PartitionBatch:
    """What one feed partition's records of a batch became (one transaction), and the offset to commit."""

    outgoing: list[Outgoing] = field(default_factory=list)
    usage: list[Delivery] = field(default_factory=list)
    next_offset: int = 0

    def add(self, offset: int, record: Prepared) -> None:
        self.outgoing.extend(record.outgoing)
        self.usage.extend(record.usage)
        self.next_offset = max(self.next_offset, offset + 1)


class Refused(Exception):
    """A feed record that cannot be delivered; carries the dead-letter reason code."""

    def __init__(self, reason_code: str, reason: str) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason


# ---------------------------------------------------------------------------------------------- names


@cache
def _feed_regex(template: str) -> re.Pattern[str]:
    prefix, placeholder, suffix = template.partition("{dataset_id}")
    if not placeholder:
        raise ValueError(f"the feed declaration {template!r} has no {{dataset_id}}")
    return re.compile(f"^{re.escape(prefix)}(?P<dataset_id>[A-Za-z0-9._-]+){re.escape(suffix)}$")


def feed_pattern(settings: Settings | None = None) -> re.Pattern[str]:
    """Feed topic names of this deployment's namespace, from topics/feed.yaml (tests rename the namespace)."""
    return _feed_regex(topics.spec(TopicId.FEED, settings).name)


def feed_dataset_id(topic: str, settings: Settings | None = None) -> str | None:
    """The dataset a feed topic belongs to, or None for a topic that is not a feed."""
    return dataset_of_feed(feed_pattern(settings), topic)


def dataset_of_feed(pattern: re.Pattern[str], topic: str) -> str | None:
    match = pattern.match(topic)
    return match.group("dataset_id") if match else None


@cache  # one entry per dataset schema version: parsing the JSON for every record costs more than decoding it
def record_full_name(record_schema: str) -> str:
    parsed = json.loads(record_schema)
    namespace = parsed.get("namespace")
    return f"{namespace}.{parsed['name']}" if namespace and "." not in parsed["name"] else parsed["name"]


# ---------------------------------------------------------------------------------------------- handler


@dataclass(frozen=True)
class GrantPlan:
    """A grant version's delivery plan for one dataset version: compiled row filter, names, tenant schema.

    `refusal` says why the grant delivers nothing (its row filter cannot be used), None when it delivers.
    """

    rows: row_filter.Filter | None  # the compiled row filter, None for all rows
    policy_version: str
    target: str | None  # the tenant topic; None when an id breaks the id rule (created before it existed)
    tenant_schema: avro.schema.NamedSchema
    refusal: str | None = None


class FeedHandler:
    """Turns feed records into tenant deliveries, usage facts and dead letters (see the module docstring).

    Used by one agent at a time per worker: its caches are not shared between threads.
    """

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        datasets: Callable[[str], Dataset],
        book: GrantBook,
        masking_key: bytes,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.datasets = datasets  # the dataset by id; NotFound when there is none
        self.book = book
        self.masking_key = masking_key
        self._plans: dict[tuple[str, int, int, int], GrantPlan] = {}
        # Refused plan -> the record its dead letter names (a batch handled again must write it again).
        self._refusals_reported: dict[tuple[str, int, int, int], str] = {}
        self._feed_pattern = feed_pattern(settings)  # reading the declaration per record costs more than Avro
        self._deliveries_topic = topics.name(TopicId.DELIVERIES, settings)
        self._dead_letters_topic = topics.name(TopicId.DEAD_LETTERS, settings)
        # Looked up once: schemas.get reads the settings and resolves paths, too slow for every delivery.
        self._delivery_schema = schemas.get(RECORDS_DELIVERED_BATCH, settings.home / "schemas")
        self._dead_letter_schema = schemas.get(DEAD_LETTER, settings.home / "schemas")

    def handle_batch(self, batch: list[tuple[SourceMessage, datetime]]) -> list[Prepared]:
        """`handle` for each (record, published at) in order: one thread hop for a whole fetched batch."""
        return [self.handle(message, published_at) for message, published_at in batch]

    def share_batch(
        self, batch: list[tuple[SourceMessage, datetime]]
    ) -> tuple[list[Prepared], dict[tuple[str, int], PartitionBatch]]:
        """`handle_batch`, then its messages per feed partition (one transaction each) with their usage facts."""
        prepared = self.handle_batch(batch)
        partitions: dict[tuple[str, int], PartitionBatch] = {}
        for (message, _), record in zip(batch, prepared, strict=True):
            partitions.setdefault((message.topic, message.partition), PartitionBatch()).add(
                message.offset, record
            )
        for partition in partitions.values():
            partition.outgoing.extend(self.usage_facts(partition.usage))
        return prepared, partitions

    def usage_facts(self, usage: list[Delivery]) -> list[Outgoing]:
        """One RecordsDeliveredBatch per grant version and tenant topic: `usage` is one feed partition's."""
        groups: dict[tuple[str, str, str], list[Delivery]] = {}
        for delivery in usage:
            groups.setdefault((delivery.scope.grant_id, delivery.policy_version, delivery.target), []).append(
                delivery
            )
        return [
            Outgoing(
                self._deliveries_topic,
                deliveries[0].scope.grant_id.encode(),
                self.codec.encode(self._deliveries_topic, self._delivery_schema, usage_fact(deliveries)),
            )
            for deliveries in groups.values()
        ]

    def handle(self, message: SourceMessage, published_at: datetime) -> Prepared:
        """The messages one feed record becomes; raises only transient errors (retry them)."""
        try:
            return self._deliveries(message, published_at)
        except Refused as refusal:
            return self._dead_letter(message, published_at, refusal.reason_code, refusal.reason)
        except Exception as error:
            if is_transient(error):
                raise
            # A bug must not stop the worker: park the record for a person.
            log.exception("%s: could not share", message.position)
            return self._dead_letter(message, published_at, "OTHER", f"{type(error).__name__}: {error}")

    # -- steps

    def _deliveries(self, message: SourceMessage, published_at: datetime) -> Prepared:
        dataset = self._dataset_of(message.topic)
        decoded = self._decode(message, dataset)
        prepared = Prepared(dataset.dataset_id, published_at)
        for scope in self.book.active_for(dataset.dataset_id, published_at):
            self._deliver(message, decoded.value, dataset, scope, published_at, prepared)
        return prepared

    def _dataset_of(self, topic: str) -> Dataset:
        dataset_id = dataset_of_feed(self._feed_pattern, topic)
        if dataset_id is None:
            raise Refused("UNKNOWN_DATASET", f"{topic} is not a feed topic")
        try:
            dataset = self.datasets(dataset_id)
        except NotFound:
            raise Refused("UNKNOWN_DATASET", f"no dataset {dataset_id!r} in the catalog") from None
        if dataset.retired:
            raise Refused("RETIRED_DATASET", f"dataset {dataset_id!r} is retired: nothing is delivered")
        return dataset

    def _decode(self, message: SourceMessage, dataset: Dataset) -> Decoded:
        try:
            decoded = self.codec.decode(message.value)
        except CodecError as error:
            raise Refused(error.reason_code, str(error)) from None
        expected = record_full_name(dataset.record_schema)
        if decoded.schema_name != expected:
            raise Refused(
                "SCHEMA_MISMATCH",
                f"written as {decoded.schema_name} (schema id {decoded.schema_id}); "
                f"dataset {dataset.dataset_id} records are {expected}",
            )
        return decoded

    def _deliver(
        self,
        message: SourceMessage,
        record: dict[str, Any],
        dataset: Dataset,
        scope: GrantScope,
        published_at: datetime,
        prepared: Prepared,
    ) -> None:
        plan = self.plan(scope, dataset)
        if plan.refusal is not None:
            self._report_refusal(message, scope, dataset, plan.refusal, prepared)
            return  # never more rows than granted, and never a filter on what the tenant may not see
        if plan.target is None:
            return  # no topic can be named for this grant (its ids predate the id rule): it delivers nothing
        provenance = Provenance(
            dataset_id=dataset.dataset_id,
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            grant_id=scope.grant_id,
            masking_policy_version=plan.policy_version,
            published_at=published_at,
        )
        grant_key = pseudonym_key(self.masking_key, scope.tenant_id, dataset.dataset_id)
        shaped = shape(record, scope, plan.rows, provenance, grant_key)
        if shaped is None:
            return  # filtered out
        try:
            value = self.codec.encode(plan.target, plan.tenant_schema, shaped)
        except SchemaMismatchError as error:
            raise Refused("SCHEMA_MISMATCH", f"shaped for grant {scope.grant_id}: {error}") from None
        if len(value) > MAX_TENANT_RECORD_BYTES:
            # The broker would refuse it on every retry and stall the feed partition: park it instead.
            raise Refused(
                "OTHER",
                f"shaped for grant {scope.grant_id} the record is {len(value)} bytes, over the "
                f"{MAX_TENANT_RECORD_BYTES} bytes a tenant topic takes",
            )
        key = tenant_key(record, scope, self.masking_key, message.key)
        prepared.outgoing.append(Outgoing(plan.target, key, value))
        prepared.usage.append(
            Delivery(
                scope,
                plan.target,
                plan.policy_version,
                message.topic,
                message.partition,
                message.offset,
                len(value),
            )
        )
        prepared.delivered.append((scope.tenant_id, dataset.dataset_id))
        prepared.masked.extend(
            scope.masking[name].value for name in scope.fields if name in scope.masking and name in shaped
        )

    def plan(self, scope: GrantScope, dataset: Dataset) -> GrantPlan:
        """What delivering under this grant version needs, worked out once per grant and dataset version."""
        key = _plan_key(scope, dataset)
        if key not in self._plans:
            rows, refusal = self._compile_row_filter(scope, dataset)
            self._plans[key] = GrantPlan(
                rows=rows,
                policy_version=masking_policy_version(scope),
                target=self._target(scope, dataset),
                # A record schema, so a NamedSchema; avro's parse is declared to return any Schema.
                tenant_schema=avro.schema.parse(  # type: ignore[arg-type]
                    json.dumps(tenant_record_schema(json.loads(dataset.record_schema), scope))
                ),
                refusal=refusal,
            )
        return self._plans[key]

    def _target(self, scope: GrantScope, dataset: Dataset) -> str | None:
        # An id from before the id rule (pdo.core.ids) names no topic: that grant delivers nothing, and the
        # dataset's other grants deliver on (one legacy name must not stop sharing for everyone).
        try:
            return tenant_topic(scope.tenant_id, dataset.dataset_id, self.settings)
        except InvalidInput as error:
            log.error("grant %s: no tenant topic, nothing delivered: %s", scope.grant_id, error)
            return None

    @staticmethod
    def _compile_row_filter(
        scope: GrantScope, dataset: Dataset
    ) -> tuple[row_filter.Filter | None, str | None]:
        """The compiled filter, or why the grant delivers nothing: it does not parse or leaves the scope rule."""
        if not scope.row_filter:
            return None, None
        try:
            return row_filter.parse_in_scope(
                scope.row_filter, dataset.field_names, scope.fields, scope.masking
            ), None
        except InvalidInput as error:
            refusal = f"grant {scope.grant_id} (version {scope.version}) delivers nothing: {error.message}"
            log.error("%s", refusal)
            return None, refusal

    def _report_refusal(
        self, message: SourceMessage, scope: GrantScope, dataset: Dataset, refusal: str, prepared: Prepared
    ) -> None:
        """One dead letter per refused grant version in this worker, at the first record it withholds."""
        if (
            self._refusals_reported.setdefault(_plan_key(scope, dataset), message.position)
            != message.position
        ):
            return
        # No bytes of the record: it is fine and went to every other grant; the grant is what is wrong.
        withheld = SourceMessage(message.topic, message.partition, message.offset, None, None)
        reason = f"{refusal}; first record withheld here, not copied. Correct or revoke the grant"
        letter = dead_letter_event(withheld, SERVICE, "INVALID_EVENT", reason)
        value = self.codec.encode(self._dead_letters_topic, self._dead_letter_schema, letter)
        prepared.outgoing.append(Outgoing(self._dead_letters_topic, message.topic.encode(), value))
        prepared.dead_letter_reason = "INVALID_EVENT"

    def _dead_letter(
        self, message: SourceMessage, published_at: datetime, reason_code: str, reason: str
    ) -> Prepared:
        log.warning("%s dead-lettered: %s: %s", message.position, reason_code, reason)
        letter = dead_letter_event(message, SERVICE, reason_code, reason)
        value = self.codec.encode(self._dead_letters_topic, self._dead_letter_schema, letter)
        return Prepared(
            dataset_of_feed(self._feed_pattern, message.topic) or "",
            published_at,
            outgoing=[Outgoing(self._dead_letters_topic, message.topic.encode(), value)],
            dead_letter_reason=reason_code,
        )


def _plan_key(scope: GrantScope, dataset: Dataset) -> tuple[str, int, int, int]:
    """One plan per grant version and dataset version."""
    return (scope.grant_id, scope.version, dataset.schema_id, dataset.version)


def usage_fact(deliveries: list[Delivery]) -> dict[str, Any]:
    """RecordsDeliveredBatch for deliveries of one feed partition under one grant version and tenant topic;
    the same deliveries give the same event id."""
    first = deliveries[0]
    ids = [delivery.delivery_id for delivery in deliveries]
    return {
        "event_id": str(uuid.uuid5(USAGE_EVENT_NAMESPACE, f"{ids[0]}|{ids[-1]}|{len(ids)}")),
        "occurred_at": utc_now(),
        "actor": f"system:{SERVICE}",
        "tenant_id": first.scope.tenant_id,
        "dataset_id": first.scope.dataset_id,
        "grant_id": first.scope.grant_id,
        "target_topic": first.target,
        "source_topic": first.source_topic,
        "source_partition": first.source_partition,
        "masking_policy_version": first.policy_version,
        "deliveries": [
            {"delivery_id": ident, "source_offset": delivery.source_offset, "bytes": delivery.size}
            for ident, delivery in zip(ids, deliveries, strict=True)
        ],
    }
