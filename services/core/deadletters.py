"""Dead letters: a record a service could not process, kept with the reason and its exact original bytes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pdo.core.events import event_head, utc_now

DEAD_LETTER = "pdo.deadletter.v1.DeadLetter"


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
