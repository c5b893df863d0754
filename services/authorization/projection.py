"""Rebuild the authorization tables from the events: what a new worker, or one whose database was wiped, runs.

`project` is pure: it folds decoded events into requests, grants and grant history. `rebuild_from_topics`
reads pdo.requests and pdo.authorizations from the beginning (no consumer group, so nothing is committed)
and replaces the tables with the projection in one transaction.

Every column of a request comes from its events: DataRequestSubmitted carries the tenant's kind (events
written before it had the field read as a company), and DataRequestReferred puts a request the policy sent
to operator review back in PENDING_REVIEW with its rule and reason. A request referred before
DataRequestReferred existed has no such event and comes back SUBMITTED; the worker's sweep sends it to
review again. When compaction has removed a grant's older events, its snapshot still restores the grant;
its history then starts at the oldest event kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sqlalchemy import Engine

from pdo.authorization import outbox, records
from pdo.authorization import tables as t
from pdo.authorization.models import DataRequest, Grant, GrantTransition, RequestStatus
from pdo.authorization.service import OPERATOR_RULE
from pdo.core import kafka, topics
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.errors import Conflict, Unavailable
from pdo.core.events import utc
from pdo.core.registry_client import RegistryClient, RegistryError
from pdo.core.topics import TopicId
from pdo.core.vocabulary import GrantStatus, SuspensionCause

log = logging.getLogger(__name__)

TRANSITION_EVENTS = {records.SUSPENDED, records.RESUMED, records.REVOKED, records.EXPIRED}


@dataclass(frozen=True)
class SourcedEvent:
    """A decoded event and where it was read, so problems can name their position."""

    schema_name: str
    value: Mapping[str, Any]
    position: str = ""


@dataclass
class Projection:
    requests: dict[str, DataRequest] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    transitions: dict[str, GrantTransition] = field(default_factory=dict)  # by event id
    skipped: list[str] = field(default_factory=list)

    def apply(self, event: SourcedEvent) -> None:
        handler = _HANDLERS.get(event.schema_name)
        if handler is None:
            self.skipped.append(f"{event.position}: {event.schema_name} is not an authorization event")
            return
        try:
            handler(self, event.value)
        except (KeyError, ValueError, TypeError) as error:
            # An event that does not have the shape its schema promises cannot be applied; say where.
            self.skipped.append(f"{event.position}: {event.schema_name} not applied: {error!r}")

    # -------------------------------------------------------------------------------- request events

    def _submitted(self, value: Mapping[str, Any]) -> None:
        self.requests.setdefault(value["request_id"], records.request_from_submitted(value))

    def _referred(self, value: Mapping[str, Any]) -> None:
        request = self.requests.get(value["request_id"])
        if request is not None and request.status not in (
            RequestStatus.SUBMITTED,
            RequestStatus.PENDING_REVIEW,
        ):
            return  # decided already: a referral read after the decision changes nothing
        self._decide_request(value, RequestStatus.PENDING_REVIEW, value["rule"], value["reason"])

    def _withdrawn(self, value: Mapping[str, Any]) -> None:
        self._decide_request(value, RequestStatus.WITHDRAWN, None, value["reason"])

    def _denied(self, value: Mapping[str, Any]) -> None:
        rule = None if value["rule"] == OPERATOR_RULE else value["rule"]
        self._decide_request(value, RequestStatus.DENIED, rule, value["reason"])

    def _decide_request(
        self, value: Mapping[str, Any], status: RequestStatus, rule: str | None, reason: str | None
    ) -> None:
        request = self.requests.get(value["request_id"])
        if request is None:
            self.skipped.append(f"{value['request_id']}: {status} for a request never submitted")
            return
        self.requests[request.request_id] = replace(
            request,
            status=status,
            decided_by_rule=rule,
            decision_reason=reason,
            decided_by=value["actor"],
            updated_at=utc(value["occurred_at"]),
        )

    # -------------------------------------------------------------------------------- grant events

    def _granted(self, value: Mapping[str, Any]) -> None:
        grant = records.grant_from_granted(value)
        self._decide_request(value, RequestStatus.APPROVED, value["decided_by_rule"], value["reason"])
        self._record(value, None, grant)
        if grant.grant_id not in self.grants:
            self.grants[grant.grant_id] = grant

    def _transitioned(self, value: Mapping[str, Any]) -> None:
        snapshot = value.get("grant")
        if snapshot is None:
            self.skipped.append(f"{value['grant_id']}: event {value['event_id']} has no grant snapshot")
            return
        held = self.grants.get(value["grant_id"])
        if held is not None and held.version >= snapshot["version"]:
            return  # an older or repeated state
        cause = SuspensionCause(value["cause"]) if value.get("cause") else None
        grant = records.grant_from_snapshot(
            snapshot,
            created_at=held.created_at if held else value["occurred_at"],
            updated_at=value["occurred_at"],
            suspension_cause=cause,
        )
        self._record(value, held.status if held else None, grant)
        self.grants[grant.grant_id] = grant
        request = self.requests.get(grant.request_id)
        if request is not None and request.status != RequestStatus.APPROVED:
            # Its Granted event was compacted away; a grant exists, so the request was approved.
            self.requests[request.request_id] = replace(request, status=RequestStatus.APPROVED)

    def _record(self, value: Mapping[str, Any], before: GrantStatus | None, after: Grant) -> None:
        reason = value.get("reason") if after.version == 1 else after.status_reason
        self.transitions.setdefault(
            value["event_id"],
            GrantTransition(
                grant_id=after.grant_id,
                from_status=before,
                to_status=after.status,
                actor=value["actor"],
                reason=reason,
                at=utc(value["occurred_at"]),
                event_id=value["event_id"],
            ),
        )


_HANDLERS: dict[str, Callable[[Projection, Mapping[str, Any]], None]] = {
    records.SUBMITTED: Projection._submitted,
    records.REFERRED: Projection._referred,
    records.WITHDRAWN: Projection._withdrawn,
    records.DENIED: Projection._denied,
    records.GRANTED: Projection._granted,
    **dict.fromkeys(TRANSITION_EVENTS, Projection._transitioned),
}


def project(events: Iterable[SourcedEvent]) -> Projection:
    """Fold events into state. Request events must come before the authorization events of their requests
    (rebuild_from_topics reads all of pdo.requests first); each grant's events in topic order."""
    projection = Projection()
    for event in events:
        projection.apply(event)
    return projection


def is_empty(engine: Engine) -> bool:
    """No request and no grant: a new worker's database, or a wiped one."""
    with engine.connect() as conn:
        return all(
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0
            for table in (t.requests, t.grants)
        )


def write(engine: Engine, projection: Projection) -> None:
    """Replace the authorization tables with the projection, all or nothing.

    Refused while the outbox holds events not yet published: the topics do not have those changes yet, so
    a rebuild would undo them in SQL and their events would still go out afterwards.
    """
    with engine.begin() as conn:
        unsent = outbox.pending_in(conn)
        if unsent:
            raise Conflict(
                f"{unsent} authorization event(s) are committed but not yet on the topics; a rebuild now "
                "would lose them",
                hint="start `pdo authorization worker` with the broker up (its relay publishes them), then rebuild",
            )
        for table in (t.grant_transitions, t.grants, t.requests):
            conn.execute(table.delete())
        if projection.requests:
            conn.execute(
                t.requests.insert(), [records.request_to_row(r) for r in projection.requests.values()]
            )
        if projection.grants:
            conn.execute(t.grants.insert(), [records.grant_to_row(g) for g in projection.grants.values()])
        if projection.transitions:
            rows = sorted(projection.transitions.values(), key=lambda item: (item.at, item.grant_id))
            conn.execute(t.grant_transitions.insert(), [records.transition_to_row(row) for row in rows])


# ---------------------------------------------------------------------------------------------- reading


def read_events(settings: Settings, topic: TopicId, codec: AvroCodec, timeout_s: float) -> list[SourcedEvent]:
    """Every event on `topic` from the beginning to its current end, decoded, in partition order.

    Undecodable messages are logged and left out (the dead-letter path is the workers' business); not
    reaching the end within `timeout_s` is Unavailable, never a silent partial rebuild.
    """
    name = topics.name(topic, settings)
    consumer = _consumer(settings)
    try:
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        if not partitions:
            raise Unavailable(
                f"topic {name} has no partitions the broker knows of", hint="run `pdo topics apply`"
            )
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        events: list[SourcedEvent | None] = []
        deadline = time.monotonic() + timeout_s
        while any((consumer.position(tp) or 0) < end[tp] for tp in partitions):  # None: not known yet
            if time.monotonic() > deadline:
                raise Unavailable(f"could not read {name} to its end within {timeout_s} s")
            for messages in consumer.poll(timeout_ms=500).values():
                events.extend(
                    _decoded(codec, message) for message in messages if message.offset < end[_tp(message)]
                )
        return [event for event in events if event is not None]
    except KafkaError as error:
        raise Unavailable(
            f"could not read {name}: {error}", hint="is the broker up? (`pdo broker status`)"
        ) from None
    finally:
        consumer.close()


def _consumer(settings: Settings) -> KafkaConsumer:
    return kafka.consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=settings.kafka_timeout_s * 1000 + 1000,
    )


def _tp(message) -> TopicPartition:
    return TopicPartition(message.topic, message.partition)


def _decoded(codec: AvroCodec, message) -> SourcedEvent | None:
    position = f"{message.topic}[{message.partition}]@{message.offset}"
    try:
        decoded = codec.decode(message.value)
    except CodecError as error:
        log.warning("%s skipped: %s", position, error)
        return None
    return SourcedEvent(decoded.schema_name, decoded.value, position)


@dataclass(frozen=True)
class RebuildReport:
    requests: int
    grants: int
    transitions: int
    skipped: tuple[str, ...]


def rebuild_from_topics(settings: Settings, engine: Engine, timeout_s: float = 60.0) -> RebuildReport:
    """Read pdo.requests then pdo.authorizations from the start and replace the authorization tables."""
    with RegistryClient.for_settings(settings) as registry:
        codec = AvroCodec(registry)
        try:
            events = read_events(settings, TopicId.REQUESTS, codec, timeout_s)
            events += read_events(settings, TopicId.AUTHORIZATIONS, codec, timeout_s)
        except RegistryError as error:
            # Without the registry nothing decodes: stop rather than write empty tables.
            raise Unavailable(error.message, hint=error.hint) from None
    projection = project(events)
    for problem in projection.skipped:
        log.warning("rebuild: %s", problem)
    write(engine, projection)
    return RebuildReport(
        len(projection.requests),
        len(projection.grants),
        len(projection.transitions),
        tuple(projection.skipped),
    )
