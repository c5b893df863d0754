"""FeedPublisher: how a provider's system puts records of one dataset on its feed (pdo.feed.<dataset id>).

    from pdo.publishing.publisher import FeedPublisher

    with FeedPublisher.from_catalog(settings, engine, "air-quality") as publisher:
        report = publisher.publish(records)        # dicts of Python values: datetime, Decimal, bytes
        report = publisher.publish_json(records)   # dicts as JSON decodes them: ISO 8601 text, "12.30"…
    for rejection in report.rejected:
        print(rejection.index, rejection.reason)   # e.g. 3 "pm25: expected double, got 'high'"

Each record is checked against the dataset's registered schema — the text and the schema id the catalog
holds: the catalog registered exactly that text and was given that id — then encoded in Confluent framing
under that id (nothing new is registered: a provider changes its schema through the catalog, where
compatibility is checked), keyed by its `record_id`, and sent; `publish` returns once the broker has
acknowledged every record it sent. Checking needs neither the registry nor the broker, so a batch of
records that do not fit is answered even while they are down; the producer connects on the first record
that fits.

With a record-id window (`from_catalog`, and the gateway's), a record whose record_id reached the feed within
PDO_RECORD_ID_WINDOW_S is reported in `duplicates` and not sent again (pdo.publishing.record_ids).

A record whose event time lies outside the bounds (pdo.publishing.event_time: by default at most
PDO_EVENT_TIME_MAX_PAST_S in the past and PDO_EVENT_TIME_MAX_FUTURE_S in the future) does not fit either.

A record that does not fit is not sent; it is reported by its index and reason, and the batch's other
records are sent. One bad reading should not hold back the good ones, and the report gives the provider
the exact list to fix and resend. A broker that does not acknowledge is not a record's fault: that raises
Unavailable, saying how many records were acknowledged before it.

Thread-safe: one publisher may serve many threads (the gateway shares one per dataset).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from sqlalchemy import Engine

from pdo.catalog.public import Dataset, get_dataset
from pdo.core.codec import AvroCodec, SchemaMismatchError
from pdo.core.config import Settings
from pdo.core.errors import Conflict, InvalidInput, PdoError, Unavailable
from pdo.core.kafka import producer as kafka_producer
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import feed_topic
from pdo.publishing import conversion
from pdo.publishing.event_time import Bounds, EventTime
from pdo.publishing.record_ids import Claim, RecordIdWindow

log = logging.getLogger(__name__)

# topics/feed.yaml keys every feed record by this field (the catalog refuses schemas without it).
KEY_FIELD = "record_id"
# Key and value together; below kafka-python's max_request_size and the broker's message.max.bytes
# (both 1 MiB by default), so an oversized record is refused here by its index, not by the broker.
MAX_RECORD_BYTES = 1_000_000
# Sent records awaiting acknowledgement at most; bounds memory when a caller streams a large iterable.
ACK_BATCH = 1000
# Bytes per record batch of a feed partition (kafka-python's default is 16 KiB). An acknowledgement batch's
# records for one partition then travel in one or a few batches, not one per 16 KiB, and the producer (one
# request in flight per connection, for order) waits on fewer round trips: a 1,000-record HTTP call from
# 71-77 to 60-67 ms in the gateway (send 26 -> 21 ms, acknowledgements 7-9 -> 4-5 ms), alternating runs.
FEED_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True)
class Rejection:
    """A record that was not sent: its position in the batch (from 0) and what was wrong with it."""

    index: int
    reason: str


@dataclass
class PublishReport:
    """What one `publish` call did: records acknowledged on `topic`, and those refused, in index order."""

    topic: str
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # Positions of records not sent again: their record_id is on the feed within the window (record_ids).
    duplicates: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.accepted + len(self.rejected) + len(self.duplicates)


@dataclass(frozen=True)
class _Outgoing:
    index: int
    key: bytes
    data: bytes


Convert = Callable[[Any, Any], Any]


class RecordsInFlight(Conflict):
    """Records of the batch are being sent by another call, or an earlier send is unsettled (HTTP 409)."""

    retry_after_s = 2


@dataclass
class _Outcome:
    """Keys of a batch whose send the broker acknowledged, and those it refused (not written, for certain)."""

    acknowledged: list[bytes] = field(default_factory=list)
    failed: list[bytes] = field(default_factory=list)


class FeedPublisher:
    """Publishes records of one dataset to its feed; see the module's description."""

    def __init__(
        self,
        settings: Settings,
        dataset: Dataset,
        codec: AvroCodec | None = None,
        *,
        producer_factory: Callable[[], KafkaProducer] | None = None,
        record_ids: RecordIdWindow | None = None,
    ) -> None:
        """A shared `codec`, and a `producer_factory` giving a shared producer, are not closed by `close`.

        With `record_ids`, a record whose record_id reached the feed within its window is reported as a
        duplicate and not sent again (pdo.publishing.record_ids); without, every record that fits is sent.
        """
        if dataset.retired:
            raise Conflict(
                f"dataset {dataset.dataset_id!r} is retired: its feed takes no more records",
                hint="register a new dataset for new records",
            )
        self.settings = settings
        self.dataset = dataset
        self.topic = feed_topic(dataset.dataset_id, settings)
        self.schema = conversion.parse_schema(dataset.record_schema)
        self.event_time = EventTime.of_schema(dataset.record_schema, Bounds.from_settings(settings))
        # Encoding under a known id never calls the registry; the client is there for the codec's shape.
        self._own_codec = codec is None
        self.codec = codec or AvroCodec(RegistryClient.for_settings(settings))
        self._own_producer = producer_factory is None
        self._producer_factory = producer_factory or (lambda: _feed_producer(settings))
        self._producer: KafkaProducer | None = None
        self._producer_lock = threading.Lock()
        self.record_ids = record_ids

    @classmethod
    def from_catalog(
        cls, settings: Settings, engine: Engine, dataset_id: str, codec: AvroCodec | None = None
    ) -> FeedPublisher:
        """A publisher for the dataset as the catalog holds it now, remembering record ids in `engine`'s
        window; NotFound, or Conflict if retired."""
        window = RecordIdWindow(engine, settings.record_id_window_s)
        return cls(settings, get_dataset(engine, dataset_id), codec, record_ids=window)

    def __enter__(self) -> FeedPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def publish(self, records: Iterable[dict[str, Any]]) -> PublishReport:
        """Send the records that fit (Python values); wait for the broker's acks; report the others."""
        return self._publish(records, conversion.conform)

    def publish_json(self, records: Iterable[Any]) -> PublishReport:
        """As `publish`, for records as JSON decodes them (conversion.from_json says how types are written)."""
        return self._publish(records, conversion.from_json)

    def close(self) -> None:
        if self._own_producer and self._producer is not None:
            self._producer.close(timeout=self.settings.kafka_timeout_s)
            self._producer = None
        if self._own_codec:
            self.codec.registry.close()

    # -- the steps of a publish

    def _publish(self, records: Iterable[Any], convert: Convert) -> PublishReport:
        report = PublishReport(self.topic)
        batch: list[_Outgoing] = []
        for index, record in enumerate(records):
            try:
                key, data = self._encoded(record, convert)
            except InvalidInput as error:
                report.rejected.append(Rejection(index, error.message))
                continue
            batch.append(_Outgoing(index, key, data))
            if len(batch) >= ACK_BATCH:
                self._send_batch(batch, report)
                batch = []
        self._send_batch(batch, report)
        report.rejected.sort(key=lambda rejection: rejection.index)
        return report

    def _send_batch(self, batch: list[_Outgoing], report: PublishReport) -> None:
        """Send the batch's records not on the feed yet and wait for their acks; settle their claims."""
        fresh = self._claimed(batch, report)
        futures: list[tuple[_Outgoing, Any]] = []
        outcome = _Outcome()
        try:
            for item in fresh:
                futures.append((item, self._send(item.key, item.data, report)))
            self._await_acks(futures, report, outcome)
        finally:
            self._settle(fresh, futures, outcome)

    def _claimed(self, batch: list[_Outgoing], report: PublishReport) -> list[_Outgoing]:
        """The records this call sends: all, or (with a record-id window) those it claimed."""
        if self.record_ids is None:
            return batch
        claims = self.record_ids.claim(self.dataset.dataset_id, [item.key for item in batch])
        in_flight = [item for item in batch if claims.by_key[item.key] is Claim.IN_FLIGHT]
        if in_flight:
            self.record_ids.release(self.dataset.dataset_id, claims.held())
            raise RecordsInFlight(
                f"{len(in_flight)} record(s) of this batch are being sent by another call, or an earlier send "
                f"of them is not yet acknowledged (the first: record {in_flight[0].index}); nothing was sent",
                hint="send the batch again in a few seconds: records that reached the feed meanwhile come "
                "back as duplicates, the others are sent",
            )
        fresh, seen = [], set()
        for item in batch:
            if claims.by_key[item.key] is Claim.SEND and item.key not in seen:
                fresh.append(item)
                seen.add(item.key)
            else:  # on the feed already, or repeated within this batch
                report.duplicates.append(item.index)
        return fresh

    def _settle(
        self, fresh: list[_Outgoing], futures: list[tuple[_Outgoing, Any]], outcome: _Outcome
    ) -> None:
        """Confirm acknowledged claims, release failed and unsent ones; the unknown wait for the producer."""
        if self.record_ids is None:
            return
        dataset_id, window = self.dataset.dataset_id, self.record_ids
        sent = {item.key for item, _ in futures}
        window.confirm(dataset_id, outcome.acknowledged)
        window.release(dataset_id, outcome.failed + [item.key for item in fresh if item.key not in sent])
        settled = set(outcome.acknowledged) | set(outcome.failed)
        for item, future in futures:
            if item.key not in settled:
                # "It may still arrive": the producer's final outcome decides (its IO thread calls back).
                future.add_callback(lambda _metadata, key=item.key: window.confirm(dataset_id, [key]))
                future.add_errback(lambda _error, key=item.key: window.release(dataset_id, [key]))

    def _encoded(self, record: Any, convert: Convert) -> tuple[bytes, bytes]:
        """(key, framed Avro value) of a record that fits, or InvalidInput saying why it does not."""
        try:
            value = convert(self.schema, record)
        except RecursionError:
            raise InvalidInput("the record is nested too deeply to check") from None
        if value[KEY_FIELD] is None:
            raise InvalidInput(f"{KEY_FIELD}: must not be null: the feed is keyed by it")
        if self.event_time is not None:
            self.event_time.check(value, datetime.now(UTC))
        key = _key_bytes(value[KEY_FIELD])
        try:
            data = self.codec.encode_with_id(self.dataset.schema_id, self.schema, value)
        except SchemaMismatchError as error:
            # Conversion checks every field first, so this is a safety net, not the usual refusal.
            raise InvalidInput(str(error)) from None
        size = len(key) + len(data)
        if size > MAX_RECORD_BYTES:
            raise InvalidInput(
                f"the record is {size} bytes encoded; a feed record may have at most {MAX_RECORD_BYTES}"
            )
        return key, data

    def _send(self, key: bytes, data: bytes, report: PublishReport) -> Any:
        try:
            return self._connected().send(self.topic, key=key, value=data)
        except KafkaError as error:
            raise self._unavailable(error, report) from None

    def _connected(self) -> KafkaProducer:
        with self._producer_lock:
            if self._producer is None:
                self._producer = self._producer_factory()
            return self._producer

    def _await_acks(
        self, futures: list[tuple[_Outgoing, Any]], report: PublishReport, outcome: _Outcome
    ) -> None:
        timeout = self.settings.kafka_timeout_s * 3
        for item, future in futures:
            try:
                future.get(timeout=timeout)
            except MessageSizeTooLargeError:
                outcome.failed.append(item.key)
                report.rejected.append(Rejection(item.index, "the broker refused the record as too large"))
                continue
            except KafkaTimeoutError:
                raise self._unavailable(
                    f"record {item.index} was not acknowledged within {timeout} s (it may still arrive)",
                    report,
                ) from None
            except KafkaError as error:
                outcome.failed.append(item.key)
                raise self._unavailable(f"record {item.index} was refused: {error}", report) from None
            outcome.acknowledged.append(item.key)
            report.accepted += 1

    def _unavailable(self, error: object, report: PublishReport) -> Unavailable:
        return Unavailable(
            f"could not publish to {self.topic}: {error}; {report.accepted} record(s) of this batch "
            "were acknowledged before that",
            hint="is the Kafka broker up (`pdo broker status`)? resend the records not acknowledged",
        )


class FeedPublishers:
    """One FeedPublisher per dataset, built on first use, all sharing one producer and one codec.

    For the gateway's HTTP ingest. A dataset whose schema changed in the catalog gets a new publisher
    (the old one is dropped: it owns nothing to close). Nothing connects to Kafka before the first use,
    so a gateway that never ingests needs no broker.
    """

    def __init__(
        self, settings: Settings, codec: AvroCodec | None = None, record_ids: RecordIdWindow | None = None
    ) -> None:
        self.settings = settings
        self.record_ids = record_ids
        self._own_codec = codec is None
        self._codec = codec
        self._producer: KafkaProducer | None = None
        self._publishers: dict[str, FeedPublisher] = {}
        self._lock = threading.Lock()
        self._producer_lock = threading.Lock()

    def for_dataset(self, dataset: Dataset) -> FeedPublisher:
        """The publisher for `dataset` as the caller just read it from the catalog; Conflict if retired."""
        if dataset.retired:
            raise Conflict(f"dataset {dataset.dataset_id!r} is retired: its feed takes no more records")
        with self._lock:
            cached = self._publishers.get(dataset.dataset_id)
            if cached is not None and cached.dataset.schema_id == dataset.schema_id:
                return cached
            # Built under the lock: it only parses the schema, once per dataset and schema version.
            publisher = FeedPublisher(
                self.settings,
                dataset,
                self._shared_codec(),
                producer_factory=self._shared_producer,
                record_ids=self.record_ids,
            )
            self._publishers[dataset.dataset_id] = publisher
            return publisher

    def close(self) -> None:
        with self._lock, self._producer_lock:
            self._publishers.clear()
            if self._producer is not None:
                self._producer.close(timeout=self.settings.kafka_timeout_s)
                self._producer = None
            if self._own_codec and self._codec is not None:
                self._codec.registry.close()
                self._codec = None

    def _shared_codec(self) -> AvroCodec:
        if self._codec is None:
            self._codec = AvroCodec(RegistryClient.for_settings(self.settings))
        return self._codec

    def _shared_producer(self) -> KafkaProducer:
        # Called by a publisher under its own lock, never under ours (for_dataset does not send).
        with self._producer_lock:
            if self._producer is None:
                self._producer = _feed_producer(self.settings)
            return self._producer


def _feed_producer(settings: Settings) -> KafkaProducer:
    try:
        return kafka_producer(settings, batch_size=FEED_BATCH_BYTES)
    except PdoError as error:
        # pdo.core.kafka.producer says "cannot reach the broker" as a plain PdoError; callers answer 503 for it.
        raise Unavailable(error.message, hint=error.hint) from None


def _key_bytes(record_id: Any) -> bytes:
    # A string id is the key as is; another type (a schema may declare record_id a long) as its text.
    return (record_id if isinstance(record_id, str) else str(record_id)).encode()
