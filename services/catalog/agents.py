"""The catalog's stream processing: the `project_catalog` agent keeps catalog rows in step with pdo.catalog.

Every worker of the "catalog" consumer group projects its partitions of the catalog topic into SQL.
Decoding and SQL run in threads (asyncio.to_thread), never on the event loop. What cannot be applied —
bytes that are not framed Avro, an unknown schema, an event that breaks a rule — goes to the dead-letter
topic with its reason and source position, at once, and is counted; the agent carries on. Outages
(database, registry, broker) are retried with backoff, forever, instead: the event is valid and must not be
lost (the core's one failure policy, pdo.core.retry; the stall shows as consumer lag and in
`pdo_worker_retries_total{service="catalog"}`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine

from pdo.catalog.projection import CATALOG_EVENTS, InvalidCatalogEvent, Position, apply_catalog_event
from pdo.core import streams
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.deadletters import DEAD_LETTER, SourceMessage, dead_letter_event, source_message
from pdo.core.events import EventPublisher
from pdo.core.retry import retrying
from pdo.core.topics import TopicId

log = logging.getLogger(__name__)

SERVICE = "catalog"


@dataclass
class ProjectorMetrics:
    registry: CollectorRegistry
    events: Counter


def projector_metrics() -> ProjectorMetrics:
    registry = CollectorRegistry()
    events = Counter(
        "pdo_catalog_projected_events",
        "Catalog events the projection read, by outcome (applied, unchanged, dead_lettered) and reason",
        ["outcome", "reason"],
        registry=registry,
    )
    return ProjectorMetrics(registry, events)


class CatalogProjector:
    """Applies catalog messages to SQL; dead-letters what cannot be applied. Used by the faust agent."""

    def __init__(
        self,
        engine: Engine,
        codec: AvroCodec,
        dead_letters: Callable[[], EventPublisher],
        metrics: ProjectorMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.codec = codec
        # A factory: the producer connects only when the first dead letter is written.
        self._dead_letters_factory = dead_letters
        self._dead_letters: EventPublisher | None = None
        self.metrics = metrics or projector_metrics()

    async def handle(self, message: SourceMessage) -> str:
        """Apply one message; returns the outcome: "applied", "unchanged" or "dead_lettered"."""
        try:
            changed = await retrying("projecting a catalog event", self._decode_and_apply, message)
        except (CodecError, InvalidCatalogEvent) as error:
            return await self._dead_letter(message, error.reason_code, str(error))
        except Exception as error:  # a bug must not stop the catalog: park the message
            log.exception("catalog projection failed on %s", message.position)
            return await self._dead_letter(message, "OTHER", f"{type(error).__name__}: {error}")
        outcome = "applied" if changed else "unchanged"
        self.metrics.events.labels(outcome, "").inc()
        return outcome

    def _decode_and_apply(self, message: SourceMessage) -> bool:
        decoded = self.codec.decode(message.value)
        if decoded.schema_name not in CATALOG_EVENTS:
            raise InvalidCatalogEvent(
                f"{decoded.schema_name} is not a catalog event", reason_code="SCHEMA_MISMATCH"
            )
        return apply_catalog_event(
            self.engine,
            decoded.schema_name,
            decoded.value,
            registry=self.codec.registry,
            position=Position(message.topic, message.partition, message.offset),
        )

    async def _dead_letter(self, message: SourceMessage, reason_code: str, reason: str) -> str:
        letter = dead_letter_event(message, SERVICE, reason_code, reason)
        await retrying("dead-lettering a catalog event", self._publish_dead_letter, letter)
        self.metrics.events.labels("dead_lettered", reason_code).inc()
        log.warning("dead-lettered %s: %s %s", message.position, reason_code, reason)
        return "dead_lettered"

    def _publish_dead_letter(self, letter: dict[str, Any]) -> None:
        self._publisher().publish(TopicId.DEAD_LETTERS, DEAD_LETTER, letter)

    def _publisher(self) -> EventPublisher:
        if self._dead_letters is None:
            self._dead_letters = self._dead_letters_factory()
        return self._dead_letters

    def close(self) -> None:
        if self._dead_letters is not None:
            self._dead_letters.close()


def attach_agents(app: faust.App, settings: Settings, projector: CatalogProjector) -> faust.types.AgentT:
    """Add `project_catalog` to `app`, reading pdo.catalog; returns the agent."""

    async def project_catalog(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await projector.handle(source_message(event.message))

    return app.agent(streams.source(app, TopicId.CATALOG, settings), name="project_catalog")(project_catalog)
