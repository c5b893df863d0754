"""Event-time bounds: a record dated in year 0001 or 9999 (a typo, a zeroed clock) never reaches a feed.

Guarantee: a record published through pdo's publishers (HTTP ingest, `pdo publish`, FeedPublisher) whose
event time lies outside [now - max past, now + max future] by the publisher's clock is refused, the reason
naming the field, its value and the bounds; so no aggregation window, billing period or report is opened by
it. A null event time is not checked (the schema allows it; nothing is dated by it).

Which field is a record's event time: the top-level field whose schema entry carries `"pdo.event_time"`, else
the first top-level field of type timestamp-millis or timestamp-micros (nullable or not); a schema with
neither has no event time and nothing is checked. The bounds are the platform's (PDO_EVENT_TIME_MAX_PAST_S,
PDO_EVENT_TIME_MAX_FUTURE_S) unless the dataset's schema overrides them on that field —
`"pdo.event_time": {"max_past_s": 3153600000, "max_future_s": 0}` — since the schema the catalog registers is
the dataset's own declaration (a historical archive may go back a century; a live sensor feed never ahead).

`violation` is pure (schema, value, now): the Kafka consumers of feeds can apply the same rule to records a
provider's own producer wrote, and dead-letter them with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pdo.core.config import Settings
from pdo.core.errors import InvalidInput

ATTRIBUTE = "pdo.event_time"
INSTANTS = frozenset({"timestamp-millis", "timestamp-micros"})


@dataclass(frozen=True)
class Bounds:
    max_past: timedelta
    max_future: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            timedelta(seconds=settings.event_time_max_past_s),
            timedelta(seconds=settings.event_time_max_future_s),
        )


@dataclass(frozen=True)
class EventTime:
    """A dataset's event-time field and its bounds; `violation` says why a record's value is out of them."""

    field: str
    bounds: Bounds

    @classmethod
    def of_schema(cls, record_schema: str | dict[str, Any], platform: Bounds) -> EventTime | None:
        """The schema's event-time field, or None; InvalidInput when its pdo.event_time is malformed."""
        schema = json.loads(record_schema) if isinstance(record_schema, str) else record_schema
        fields = [f for f in schema.get("fields", []) if isinstance(f, dict)]
        marked = [f for f in fields if ATTRIBUTE in f]
        chosen = marked[0] if marked else next((f for f in fields if _is_instant(f.get("type"))), None)
        if chosen is None:
            return None
        return cls(chosen["name"], _bounds(chosen, chosen.get(ATTRIBUTE, True), platform))

    def violation(self, value: dict[str, Any], now: datetime) -> str | None:
        """Why the record's event time is out of bounds (field, value, bounds), or None when it is within."""
        moment = value.get(self.field)
        if not isinstance(moment, datetime):
            return None
        moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        earliest, latest = now - self.bounds.max_past, now + self.bounds.max_future
        if earliest <= moment <= latest:
            return None
        return (
            f"{self.field}: event time {moment.isoformat()} is outside the bounds "
            f"{_shown(earliest)} .. {_shown(latest)} (at most {_span(self.bounds.max_past)} in the past "
            f"and {_span(self.bounds.max_future)} in the future)"
        )

    def check(self, value: dict[str, Any], now: datetime) -> None:
        reason = self.violation(value, now)
        if reason is not None:
            raise InvalidInput(reason)


def _is_instant(avro_type: Any) -> bool:
    if isinstance(avro_type, list):
        return any(_is_instant(member) for member in avro_type)
    return isinstance(avro_type, dict) and avro_type.get("logicalType") in INSTANTS


def _bounds(field: dict[str, Any], declared: Any, platform: Bounds) -> Bounds:
    if declared is True:
        return platform
    if not isinstance(declared, dict) or not set(declared) <= {"max_past_s", "max_future_s"}:
        raise InvalidInput(
            f"the dataset's schema marks {field.get('name')!r} with {ATTRIBUTE} = {declared!r}, which is "
            'neither true nor {"max_past_s": N, "max_future_s": N}',
            hint="the provider corrects the schema through the catalog",
        )
    return Bounds(
        _seconds(field, declared, "max_past_s", platform.max_past),
        _seconds(field, declared, "max_future_s", platform.max_future),
    )


def _seconds(field: dict[str, Any], declared: dict[str, Any], name: str, default: timedelta) -> timedelta:
    raw = declared.get(name)
    if raw is None:
        return default
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise InvalidInput(
            f"the dataset's schema gives {field.get('name')!r} {ATTRIBUTE}.{name} = {raw!r}, not a whole "
            "number of seconds of at least 0",
            hint="the provider corrects the schema through the catalog",
        )
    return timedelta(seconds=raw)


def _shown(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _span(span: timedelta) -> str:
    return f"{span.days} day(s)" if span.days and not span.seconds else f"{int(span.total_seconds())} s"
