"""Publishing pdo events: the event head every event carries, and a publisher for declared topics."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka.errors import KafkaError

from pdo.core import schemas, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import Unavailable
from pdo.core.kafka import producer
from pdo.core.registry_client import RegistryClient, RegistryError
from pdo.core.topics import TopicId


def utc_now() -> datetime:
    """Now, at the millisecond precision Avro's timestamp-millis keeps, so values round-trip exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def utc(moment: datetime) -> datetime:
    """Aware UTC at millisecond precision: what Avro's timestamp-millis keeps, so rows and events agree.

    SQLite hands datetimes back naive; pdo stores only UTC, so a naive value is UTC.
    """
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def event_head(actor: str) -> dict[str, Any]:
    """The fields every pdo event begins with: a fresh id, when, and who caused it."""
    return {"event_id": str(uuid.uuid4()), "occurred_at": utc_now(), "actor": actor}


@dataclass(frozen=True)
class OutgoingEvent:
    """One event to publish: its schema's full name, its value and its key."""

    schema_name: str
    value: dict[str, Any]
    key: str


@contextmanager
def _unavailable_on_failure(topic_name: str) -> Iterator[None]:
    """The registry or the broker not taking a write becomes Unavailable, with what to check."""
    try:
        yield
    except RegistryError as error:
        raise Unavailable(str(error.message), hint=error.hint) from None
    except KafkaError as error:
        raise Unavailable(
            f"could not write to {topic_name}: {error}", hint="is the Kafka broker up? (`pdo broker status`)"
        ) from None


class EventPublisher:
    """Encodes events with the codec and writes them to declared topics, waiting for the broker's ack.

    Blocking by design (kafka-python): callers on an event loop hand it to a thread.
    """

    def __init__(self, settings: Settings, codec: AvroCodec | None = None) -> None:
        self.settings = settings
        self.codec = codec or AvroCodec(RegistryClient.for_settings(settings))
        self._producer = producer(settings)

    def publish(
        self,
        topic: TopicId,
        schema_name: str,
        value: dict[str, Any],
        key: str | None = None,
        **topic_params: str,
    ) -> tuple[str, int, int]:
        """Write `value` as `schema_name` to `topic`; returns (topic name, partition, offset).

        The key is the value's field the declaration names, unless given (e.g. a denial has no grant id).
        """
        name, spec = self._target(topic, [schema_name], topic_params)
        key_bytes = str(value[spec.key] if key is None else key).encode()
        with _unavailable_on_failure(name):
            data = self.codec.encode(name, schemas.get(schema_name), value)
            metadata = self._producer.send(name, key=key_bytes, value=data).get(
                timeout=self.settings.kafka_timeout_s
            )
        return name, metadata.partition, metadata.offset

    def publish_encoded(
        self, name: str, key: str, data: bytes, timestamp_ms: int | None = None
    ) -> tuple[int, int]:
        """Write a value the caller encoded (a dataset's record under its registered schema id) to the topic
        `name`; returns (partition, offset) once the broker acknowledged it."""
        with _unavailable_on_failure(name):
            metadata = self._producer.send(name, key=key.encode(), value=data, timestamp_ms=timestamp_ms).get(
                timeout=self.settings.kafka_timeout_s
            )
        return metadata.partition, metadata.offset

    def publish_all(self, topic: TopicId, events: Sequence[OutgoingEvent], **topic_params: str) -> None:
        """Write `events` to `topic` in order and wait until the broker acknowledged every one (sent
        together, so the producer batches them). Unavailable when any is not taken."""
        name, _ = self._target(topic, [event.schema_name for event in events], topic_params)
        with _unavailable_on_failure(name):
            futures = [
                self._producer.send(
                    name,
                    key=event.key.encode(),
                    value=self.codec.encode(name, schemas.get(event.schema_name), event.value),
                )
                for event in events
            ]
            self._producer.flush(timeout=self.settings.kafka_timeout_s)
            for future in futures:
                future.get(timeout=self.settings.kafka_timeout_s)

    def _target(
        self, topic: TopicId, schema_names: Sequence[str], topic_params: dict[str, str]
    ) -> tuple[str, topics.TopicSpec]:
        spec = topics.spec(topic, self.settings)
        for schema_name in schema_names:
            if spec.values != topics.DATASET_VALUES and schema_name not in spec.values:
                raise ValueError(f"{schema_name} is not declared on {spec.name} (topics/{spec.id}.yaml)")
        return topics.name(topic, self.settings, **topic_params), spec

    def close(self) -> None:
        self._producer.close()
        self.codec.registry.close()


class OnDemandPublisher:
    """An EventPublisher made on the first publish (and again after one could not be made), so a process
    that rarely publishes — the gateway's access acts, a CLI command — starts without a broker and pays for
    the connection only when it has something to say. Unavailable when no broker answers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._publisher: EventPublisher | None = None
        self._making = threading.Lock()  # the gateway publishes from several threads

    def publish(
        self, topic: TopicId, schema_name: str, value: dict[str, Any], key: str | None = None
    ) -> tuple[str, int, int]:
        with self._making:
            if self._publisher is None:
                self._publisher = EventPublisher(self.settings)
        return self._publisher.publish(topic, schema_name, value, key)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
