"""Dead letters: a record a service could not process, kept with the reason and its exact original bytes."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pdo.core import topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.events import event_head, utc_now
from pdo.core.kafka import consumer as kafka_consumer
from pdo.core.names import Event
from pdo.core.topics import TopicId

DEAD_LETTER = Event.DEAD_LETTER


@dataclass(frozen=True)
class SourceMessage:
    """One record as read from Kafka: enough to decode it, and to dead-letter it exactly as it came."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def source_message(message: Any) -> SourceMessage:
    """From a faust (aiokafka) or kafka-python message; values stay bytes (pdo's apps use raw serializers)."""
    return SourceMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple(_headers(message.headers)),
    )


def _headers(
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
) -> Iterable[tuple[str, bytes | None]]:
    # faust hands headers over as a mapping or a list of pairs, kafka-python as a list of pairs.
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return ((str(key), value) for key, value in pairs)


def dead_letter_event(message: SourceMessage, service: str, reason_code: str, reason: str) -> dict[str, Any]:
    """A DeadLetter event holding the message exactly as read, with why and where it failed."""
    return {
        **event_head(f"system:{service}"),
        "reason_code": reason_code,
        "reason": reason,
        "service": service,
        "source_topic": message.topic,
        "source_partition": message.partition,
        "source_offset": message.offset,
        "original_key": message.key,
        "original_value": message.value or b"",
        "headers": [{"key": key, "value": value} for key, value in message.headers],
        "failed_at": utc_now(),
        "replay_count": 0,
    }


# ---------------------------------------------------------------------------------------------- reading

# Headers a replay adds to the message it puts back on its source topic (earlier ones are replaced).
REPLAYED_FROM_HEADER = "pdo-replayed-from"
REPLAY_COUNT_HEADER = "pdo-replay-count"


@dataclass(frozen=True)
class StoredDeadLetter:
    """One DeadLetter event as found on the dead-letter topic, with where it sits there."""

    topic: str
    partition: int
    offset: int
    value: dict[str, Any]

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def source_position(self) -> str:
        v = self.value
        return f"{v['source_topic']}[{v['source_partition']}]@{v['source_offset']}"


def read_dead_letters(
    settings: Settings, codec: AvroCodec, timeout_s: float = 30.0, newest: int | None = None
) -> list[StoredDeadLetter]:
    """Every dead letter on the topic now (or only the `newest` of each partition), oldest first per partition.

    A consumer without a group (nothing committed, nothing to clean up) reads from the beginning up to
    the end offsets taken at the start, so the call terminates while services keep dead-lettering.
    With `newest` it starts that many offsets before each end instead, so the read stays bounded however
    long the topic grows (the gateway's console asks for the latest few every few seconds).
    """
    name = topics.name(TopicId.DEAD_LETTERS, settings)
    consumer = kafka_consumer(
        settings, enable_auto_commit=False, request_timeout_ms=max(settings.kafka_timeout_s * 1000, 5000)
    )
    try:
        assigned = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        if not assigned:
            return []
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        if newest is not None:
            _seek_back(consumer, assigned, ends, newest)
        return _drain(consumer, assigned, ends, codec, timeout_s)
    finally:
        consumer.close()


def _seek_back(
    consumer: KafkaConsumer, assigned: list[TopicPartition], ends: dict[TopicPartition, int], count: int
) -> None:
    """Move each partition to `count` offsets before its end, never before its first kept offset."""
    firsts = consumer.beginning_offsets(assigned)
    for tp in assigned:
        consumer.seek(tp, max(firsts[tp], ends[tp] - count))


def _drain(
    consumer: KafkaConsumer,
    assigned: list[TopicPartition],
    ends: dict[TopicPartition, int],
    codec: AvroCodec,
    timeout_s: float,
) -> list[StoredDeadLetter]:
    found: list[StoredDeadLetter] = []
    deadline = time.monotonic() + timeout_s
    # A position not known yet (its lookup timed out) counts as the start: keep reading until the deadline.
    while any((consumer.position(tp) or 0) < ends[tp] for tp in assigned):
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read the dead-letter topic to its end within {timeout_s} s")
        for tp, messages in consumer.poll(timeout_ms=500).items():
            found.extend(
                StoredDeadLetter(m.topic, m.partition, m.offset, codec.decode(m.value).value)
                for m in messages
                if m.offset < ends[tp]
            )
    return sorted(found, key=lambda letter: (letter.partition, letter.offset))


def select(
    letters: Iterable[StoredDeadLetter],
    reason: str | None = None,
    source_topic: str | None = None,
    service: str | None = None,
) -> list[StoredDeadLetter]:
    """The dead letters matching every filter given (None matches all)."""
    wanted = {"reason_code": reason, "source_topic": source_topic, "service": service}
    return [
        letter
        for letter in letters
        if all(expected is None or letter.value[field] == expected for field, expected in wanted.items())
    ]


# ---------------------------------------------------------------------------------------------- replaying


class ReplayLedger:
    """Dead-letter positions already replayed, in a JSON file: `{"topic[p]@o": {"at": ..., "to": ...}}`.

    Kept under PDO_RUN_DIR/deadletters/replayed.json, keyed by the dead letter's own position (topic
    names include the namespace, so two deployments on one broker never mix). It is local to the machine
    that replays: operators replay from one place. Written after each acknowledged replay.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, str]] = self._load()

    @classmethod
    def for_settings(cls, settings: Settings) -> ReplayLedger:
        return cls(settings.run_dir / "deadletters" / "replayed.json")

    def __contains__(self, letter: StoredDeadLetter) -> bool:
        return letter.position in self.entries

    def record(self, letter: StoredDeadLetter, replayed_to: str) -> None:
        self.entries[letter.position] = {"at": utc_now().isoformat(), "to": replayed_to}
        self._save()

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise PdoError(
                f"{self.path} is not valid JSON: {error}",
                hint="it records which dead letters were replayed; repair it rather than delete it",
            ) from None
        return dict(loaded)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".json.tmp")
        scratch.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(scratch, self.path)  # atomic: a crash never leaves half a ledger


def replay_count(letter: StoredDeadLetter) -> int:
    """How many times the message was replayed before: the event's field, or the header of a replay."""
    counts = [letter.value.get("replay_count") or 0]
    for header in letter.value["headers"]:
        if header["key"] == REPLAY_COUNT_HEADER and header["value"]:
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                counts.append(int(header["value"].decode()))
    return max(counts)


def replay_headers(letter: StoredDeadLetter) -> list[tuple[str, bytes]]:
    """The original headers in order (earlier replay markers dropped), then where and how often it came back."""
    kept = [
        (header["key"], header["value"] or b"")
        for header in letter.value["headers"]
        if header["key"] not in (REPLAYED_FROM_HEADER, REPLAY_COUNT_HEADER)
    ]
    return [
        *kept,
        (REPLAYED_FROM_HEADER, letter.position.encode()),
        (REPLAY_COUNT_HEADER, str(replay_count(letter) + 1).encode()),
    ]


def replay(letter: StoredDeadLetter, kafka_producer: KafkaProducer, timeout_s: float) -> str:
    """Put the original key, value and headers back on the source topic and partition; the new position."""
    value = letter.value
    metadata = kafka_producer.send(
        value["source_topic"],
        key=value["original_key"],
        value=value["original_value"],
        headers=replay_headers(letter),
        partition=value["source_partition"],
    ).get(timeout=timeout_s)
    return f"{metadata.topic}[{metadata.partition}]@{metadata.offset}"
