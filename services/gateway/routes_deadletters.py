"""GET /v1/dead-letters: operators see the newest records the services gave up on, and why.

Read from the dead-letter topic with the core helpers (`pdo.core.deadletters`), the same reading
`pdo deadletters list` does, but bounded: only the newest `limit` offsets of each partition are read, so
the console can ask every few seconds however long the topic grows. The read blocks on Kafka, so the route
is a plain `def` and runs in FastAPI's threadpool. The original key and value are not returned, only the
value's size: they may hold anything a provider sent (`pdo deadletters list --json` shows them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from kafka.errors import KafkaError
from pydantic import BaseModel, Field

from pdo.core.codec import CodecError
from pdo.core.deadletters import StoredDeadLetter, read_dead_letters, replay_count
from pdo.core.errors import Unavailable
from pdo.core.registry_client import RegistryError
from pdo.gateway.auth import Operator
from pdo.gateway.models import ERROR_RESPONSES

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

router = APIRouter(prefix="/v1/dead-letters", responses=ERROR_RESPONSES, tags=["operations"])

# Given a limit, the newest dead letters on the topic (at most `limit` per partition).
DeadLetterSource = Callable[[int], list[StoredDeadLetter]]


class DeadLetterOut(BaseModel):
    position: str = Field(description="where it sits on the dead-letter topic: topic[partition]@offset")
    failed_at: datetime
    service: str = Field(description="the service that gave up on the record")
    reason_code: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_size_bytes: int = Field(description="size of the original value (the bytes are not shown)")
    replay_count: int


def topic_reader(settings: Any, codec: Callable[[], Any]) -> DeadLetterSource:
    """A DeadLetterSource over the dead-letter topic of `settings`; `codec()` gives the Avro codec."""

    def newest(limit: int) -> list[StoredDeadLetter]:
        return read_dead_letters(settings, codec(), timeout_s=settings.kafka_timeout_s, newest=limit)

    return newest


def dead_letter_view(letter: StoredDeadLetter) -> DeadLetterOut:
    value = letter.value
    return DeadLetterOut(
        position=letter.position,
        failed_at=value["failed_at"],
        service=value["service"],
        reason_code=value["reason_code"],
        reason=value["reason"],
        source_topic=value["source_topic"],
        source_partition=value["source_partition"],
        source_offset=value["source_offset"],
        original_size_bytes=len(value["original_value"] or b""),
        replay_count=replay_count(letter),
    )


@router.get("", summary="The newest dead letters, newest first (operators)")
def list_dead_letters(
    request: Request,
    operator: Operator,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="how many at most")] = DEFAULT_LIMIT,
) -> list[DeadLetterOut]:
    source: DeadLetterSource = request.app.state.dead_letters
    try:
        letters = source(limit)
    except (KafkaError, TimeoutError, RegistryError, CodecError) as error:
        raise Unavailable(
            f"could not read the dead-letter topic: {error}",
            hint="check the broker and the schema registry; `pdo deadletters list` reads the same topic",
        ) from None
    newest_first = sorted(letters, key=lambda letter: letter.value["failed_at"], reverse=True)
    return [dead_letter_view(letter) for letter in newest_first[:limit]]
