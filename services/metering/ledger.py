"""The usage ledger's write path: a batch of usage facts becomes ledger rows, window sums and quota notices in
ONE transaction, so each delivery id counts once however often Kafka redelivers it.

**Exactly once.** A usage fact carries its deliveries (one per delivered record: a RecordsDeliveredBatch
lists a sharing transaction's deliveries under one grant). `Ledger.record(facts)` writes one row per delivery
with insert-or-ignore on the primary key `delivery_id` (`INSERT … ON CONFLICT DO NOTHING … RETURNING`,
PostgreSQL and SQLite alike) and learns from RETURNING which rows are new: a delivery already in the ledger,
or named twice in the batch, adds nothing, however the redelivered facts were cut. Everything derived from
the batch (MINUTE and DAY windows, quota notices) is computed from the new rows only, grouped by grant,
delivery time and billing period, in the same transaction: a crash before the commit leaves nothing, a
redelivery after it adds nothing. The consumer acknowledges its Kafka offsets only after the commit, so
nothing is lost either. Rows, window keys and notice keys are written in sorted order, so two workers
writing overlapping batches on PostgreSQL take their row locks in one order and cannot deadlock.

**Speed.** What the deliveries of a fact share (tenant, grant, time, source partition, billing) is checked and
placed once per fact, not per delivery. On PostgreSQL the batch is one statement with a few text parameters
(the facts as JSON, each delivery column joined), which inserts and groups the new rows server-side; the
ledger keeps only the indexes its queries use (migration 0024). Measured with `bench/pipeline.py` (#17):
the metering worker went from about 30,000 to 55,000–64,000 deliveries/s on PostgreSQL.

**Billing period** ("YYYY-MM", the UTC month). Period-close lock protocol: in the same transaction as its
inserts the writer makes sure the `metering_periods` row of every period it bills into exists and reads it
`FOR SHARE` (PostgreSQL; SQLite serialises writers anyway), and bills into a period only while it is open.
Closing a period reads its row `FOR UPDATE`, so a close waits for in-flight ledger inserts and later inserts
see it closed. Rules, in order:

- a fact for a grant metering's projection (`metering_grants`, pdo.metering.projection) does not know is
  set aside: billing_period NULL, set_aside_reason "UNKNOWN_GRANT: …". The worker catches the projection
  up with pdo.authorizations before a batch naming an unknown grant reaches the ledger (the handler's
  `know_grants` step), so a grant still unknown here is unknown on the topic too;
- a fact delivered before its grant's valid_from is set aside with "BEFORE_GRANT: …";
- otherwise it is billed in the month it was delivered in; if that period is closed (a late fact), in the
  earliest open period from the month it is recorded in. Nothing is ever dropped: set-aside rows stay in
  the ledger for review.

**Windows** count every new row, billed or set aside (they measure deliveries; billing is the ledger's
business), so the windows of a kind always sum to the ledger. Each change bumps the window's `version`;
the publisher sends UsageRecorded for closed windows whose version it has not published yet.

**Quotas.** After the new rows are summed, every grant with `daily_quota_records` whose DAY window for a
touched UTC day reached the quota gets a `metering_quota_notices` row (insert-or-ignore on grant and day),
in the same transaction: QuotaExceeded is raised once per grant and day, a crash neither loses nor repeats
it, and it stays pending (`published_at` NULL) until the broker acknowledged it. The authorization worker
suspends the grant on that event; its clock resumes it at the next UTC day.

**Overshoot.** The tenant may receive more than the quota in a day by the records sharing delivers between
the delivery that reached the quota and the moment sharing's grant book applies the suspension:
overshoot ≤ sharing's delivery rate × (metering latency: the batch window `BATCH_WITHIN_S` plus one ledger
transaction plus any consumer lag on pdo.deliveries + the authorization worker's suspension, tens of ms +
sharing's follower applying AuthorizationSuspended, milliseconds once fetched). Records processed after the
book holds the suspension are not delivered, whatever their publish time. With the worker caught up that
is about one second of deliveries (the quota test measures it; README states the figure).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.core.db import dialect_insert
from pdo.core.events import utc_now
from pdo.core.months import period_end, period_of
from pdo.metering import tables as t

MINUTE = "MINUTE"
DAY = "DAY"
WINDOW_LENGTHS = {MINUTE: timedelta(minutes=1), DAY: timedelta(days=1)}
UNKNOWN_GRANT = "UNKNOWN_GRANT"
BEFORE_GRANT = "BEFORE_GRANT"
# Stable QuotaExceeded event ids: uuid5 of "grant|day", so a republished notice is recognisably the same.
QUOTA_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pdo:metering:quota-exceeded")

# Column widths of metering_ledger: a fact that does not fit is refused (dead-lettered), never truncated.
TEXT_LIMITS = {
    "delivery_id": 64,
    "tenant_id": 255,
    "dataset_id": 64,
    "grant_id": 160,
    "source_topic": 255,
}


# No Kafka record pdo delivers is larger (the broker's message.max.bytes is 1 MiB by default).
MAX_RECORD_BYTES = 16 * 1024 * 1024


class InvalidFact(ValueError):
    """A RecordsDelivered value the ledger cannot hold as it is (the message says which field and why)."""


class Delivery(NamedTuple):
    """One delivery of a usage fact: a ledger row. `records` counts the source offsets it covers (one record
    for a RecordsDeliveredBatch delivery; a RecordsDelivered may count a range)."""

    delivery_id: str
    records: int
    bytes: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class UsageFact:
    """One usage fact, as the ledger needs it: deliveries of one feed partition to one tenant under one grant at
    one time (a RecordsDeliveredBatch, or a RecordsDelivered of one delivery). What the deliveries share is
    held, checked and grouped once per fact; each delivery becomes its own ledger row."""

    tenant_id: str
    dataset_id: str
    grant_id: str
    delivered_at: datetime
    source_topic: str
    source_partition: int
    deliveries: tuple[Delivery, ...]

    @classmethod
    def from_event(cls, value: Mapping[str, Any]) -> UsageFact:
        """From a decoded RecordsDelivered value; InvalidFact if it cannot be recorded faithfully."""
        provenance = value["provenance"]
        delivery = Delivery(
            value["delivery_id"],
            value["records"],
            value["bytes"],
            provenance["first_offset"],
            provenance["last_offset"],
        )
        return cls._checked(value, provenance["source_topic"], provenance["source_partition"], (delivery,))

    @classmethod
    def from_batch_event(cls, value: Mapping[str, Any]) -> UsageFact:
        """From a decoded RecordsDeliveredBatch, one record per delivery; InvalidFact if any delivery cannot
        be recorded faithfully (the whole event is refused: it is one usage fact)."""
        if not value["deliveries"]:
            raise InvalidFact("a RecordsDeliveredBatch must list at least one delivery")
        deliveries = tuple(
            Delivery(d["delivery_id"], 1, d["bytes"], d["source_offset"], d["source_offset"])
            for d in value["deliveries"]
        )
        return cls._checked(value, value["source_topic"], value["source_partition"], deliveries)

    @classmethod
    def _checked(
        cls, value: Mapping[str, Any], topic: str, partition: int, deliveries: tuple[Delivery, ...]
    ) -> UsageFact:
        fact = cls(
            value["tenant_id"],
            value["dataset_id"],
            value["grant_id"],
            as_utc(value["occurred_at"]),
            topic,
            partition,
            deliveries,
        )
        fact.check()
        return fact

    def check(self) -> None:
        for name in ("tenant_id", "dataset_id", "grant_id", "source_topic"):
            _check_text(name, getattr(self, name))
        for delivery in self.deliveries:
            _check_delivery(delivery)


def _check_text(name: str, text: str) -> None:
    limit = TEXT_LIMITS[name]
    if not text or len(text) > limit:
        raise InvalidFact(f"{name} must be 1 to {limit} characters, found {len(text)}")


def _check_delivery(delivery: Delivery) -> None:
    _check_text("delivery_id", delivery.delivery_id)
    records, size, first, last = delivery[1:]
    if records < 0 or size < 0:
        raise InvalidFact(f"records ({records}) and bytes ({size}) cannot be negative")
    if last < first:
        raise InvalidFact(f"last_offset {last} is before first_offset {first}")
    # A fact counts the records of its source offsets, no more: an absurd count (a forged or broken fact)
    # would overflow the window sums and stall the partition on a retried transaction.
    span = last - first + 1
    if records > span:
        raise InvalidFact(f"records ({records}) exceed the {span} source offsets the fact covers")
    if size > records * MAX_RECORD_BYTES:
        raise InvalidFact(f"bytes ({size}) exceed {MAX_RECORD_BYTES} per record for {records} records")


@dataclass(frozen=True)
class QuotaUsage:
    """A grant's usage on one UTC day against its daily quota, after a batch."""

    tenant_id: str
    dataset_id: str
    grant_id: str
    day: date
    used_records: int
    quota_records: int


@dataclass(frozen=True)
class QuotaNotice:
    """A grant reached its daily quota on `day`: QuotaExceeded to publish (once per grant and day)."""

    grant_id: str
    tenant_id: str
    dataset_id: str
    day: date
    quota_records: int
    used_records: int
    event_id: str


@dataclass(frozen=True)
class NewUsage:
    """Deliveries a batch added to the ledger that share tenant, dataset, grant, delivery time and billing:
    what windows, quotas and metrics add up. `billing_period` None: set aside, with `set_aside_reason`."""

    tenant_id: str
    dataset_id: str
    grant_id: str
    delivered_at: datetime
    billing_period: str | None
    set_aside_reason: str | None
    records: int
    bytes: int
    delivery_ids: tuple[str, ...]


@dataclass
class BatchResult:
    """What one batch changed: the deliveries new to the ledger (billed and set aside) and what they caused."""

    new: list[NewUsage] = field(default_factory=list)
    duplicates: int = 0  # deliveries of the batch that were in the ledger already, or earlier in the batch
    quota_usage: list[QuotaUsage] = field(default_factory=list)
    notices: list[QuotaNotice] = field(default_factory=list)

    @property
    def new_delivery_ids(self) -> list[str]:
        return sorted(delivery for usage in self.new for delivery in usage.delivery_ids)

    @property
    def billed(self) -> list[NewUsage]:
        return [usage for usage in self.new if usage.billing_period is not None]

    @property
    def set_aside(self) -> list[NewUsage]:
        return [usage for usage in self.new if usage.billing_period is None]


# ---------------------------------------------------------------------------------------------- time


def as_utc(moment: datetime) -> datetime:
    """Aware UTC (SQLite hands datetimes back naive; pdo stores only UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def window_start(kind: str, moment: datetime) -> datetime:
    """Start of the MINUTE or DAY (UTC) window holding `moment`."""
    moment = as_utc(moment)
    if kind == MINUTE:
        return moment.replace(second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class _GrantTerms:
    valid_from: datetime
    daily_quota_records: int | None


class Ledger:
    """Writes batches of usage facts (see the module docstring); blocking, safe to use from any thread."""

    def __init__(self, engine: Engine, clock=utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def record(self, facts: Iterable[UsageFact]) -> BatchResult:
        """Record a batch in one transaction; returns what was new. SQL errors propagate (retry the batch)."""
        facts = list(facts)
        result = BatchResult()
        if not facts:
            return result
        now = self.clock()
        with self.engine.begin() as conn:
            grants = _grant_terms(conn, {fact.grant_id for fact in facts})
            placements = [_placement(fact, grants.get(fact.grant_id)) for fact in facts]
            billed_in = _open_periods(conn, {p.billing_period for p in placements if p.billing_period}, now)
            placements = [p.billed_in(billed_in) for p in placements]
            result.new = _insert_new(conn, facts, placements, now)
            result.duplicates = sum(len(f.deliveries) for f in facts) - sum(
                len(u.delivery_ids) for u in result.new
            )
            _add_to_windows(conn, result.new, now)
            result.quota_usage = _quota_usage(conn, result.new, grants)
            result.notices = _notice_reached(conn, result.quota_usage, now)
        return result


def _grant_terms(conn: Connection, grant_ids: set[str]) -> dict[str, _GrantTerms]:
    query = sa.select(t.grants.c.grant_id, t.grants.c.valid_from, t.grants.c.daily_quota_records).where(
        t.grants.c.grant_id.in_(sorted(grant_ids))
    )
    return {
        row.grant_id: _GrantTerms(as_utc(row.valid_from), row.daily_quota_records)
        for row in conn.execute(query)
    }


@dataclass(frozen=True)
class _Placement:
    """Where a fact's deliveries go: billed in `billing_period`, or set aside with `set_aside_reason`."""

    billing_period: str | None
    set_aside_reason: str | None

    def billed_in(self, open_periods: Mapping[str, str]) -> _Placement:
        """The same, billed in the open period that takes its delivery month (itself, or a later one)."""
        if self.billing_period is None:
            return self
        return _Placement(open_periods[self.billing_period], None)


def _placement(fact: UsageFact, grant: _GrantTerms | None) -> _Placement:
    """A fact's placement before periods are checked: its delivery month, or set aside with the reason."""
    if grant is None:
        return _Placement(None, f"{UNKNOWN_GRANT}: no grant {fact.grant_id} on pdo.authorizations")
    if fact.delivered_at < grant.valid_from:
        return _Placement(
            None,
            f"{BEFORE_GRANT}: delivered at {fact.delivered_at.isoformat()}, "
            f"grant {fact.grant_id} valid from {grant.valid_from.isoformat()}",
        )
    return _Placement(period_of(fact.delivered_at), None)


def _open_periods(conn: Connection, wanted: set[str], now: datetime) -> dict[str, str]:
    """For each period facts were delivered in, the period they are billed in (itself while open).

    Every period read is locked FOR SHARE for the rest of the transaction (the close protocol).
    """
    if not wanted:
        return {}
    closed = _lock_periods(conn, wanted)
    billed = {period: period for period in wanted if period not in closed}
    late = wanted & closed
    if late:
        target = period_of(now)
        while target in _lock_periods(conn, {target}):
            target = period_of(period_end(target))
        billed.update(dict.fromkeys(late, target))
    return billed


def _lock_periods(conn: Connection, periods: set[str]) -> set[str]:
    """Create missing period rows (open), read them FOR SHARE; the closed ones among them."""
    ordered = sorted(periods)
    conn.execute(
        dialect_insert(conn, t.periods).on_conflict_do_nothing(index_elements=["period"]),
        [{"period": period} for period in ordered],
    )
    query = (
        sa.select(t.periods.c.period, t.periods.c.closed_at)
        .where(t.periods.c.period.in_(ordered))
        .order_by(t.periods.c.period)
        .with_for_update(read=True)
    )
    return {row.period for row in conn.execute(query) if row.closed_at is not None}


def _insert_new(
    conn: Connection, facts: Sequence[UsageFact], placements: Sequence[_Placement], now: datetime
) -> list[NewUsage]:
    """Insert-or-ignore every delivery on delivery_id; what was inserted, grouped (RETURNING names only new
    rows, so a delivery already in the ledger, or earlier in the batch, adds nothing)."""
    if conn.dialect.name == "postgresql":
        return _insert_new_postgresql(conn, facts, placements, now)
    return _insert_new_row_by_row(conn, facts, placements, now)


# The batch travels as a few text parameters, whatever its size: the facts' shared fields as one JSON array,
# the deliveries as one column each (ids as a JSON array, numbers comma-joined). Building them runs in C
# (json.dumps, str.join); one parameter per value, or one JSON object per delivery, cost more in Python and
# in the server's parsing than the insert itself. Rows are inserted in delivery_id order, so two workers
# writing overlapping batches take their index locks in one order and cannot deadlock.
_INSERT_GROUPED = sa.text(
    """
WITH delivery AS (
    SELECT * FROM unnest(
        (SELECT array_agg(id ORDER BY n) FROM jsonb_array_elements_text(CAST(:delivery_ids AS jsonb))
            WITH ORDINALITY AS ids(id, n)),
        string_to_array(:facts_of, ',')::int[],
        string_to_array(:records, ',')::bigint[],
        string_to_array(:bytes, ',')::bigint[],
        string_to_array(:first_offsets, ',')::bigint[],
        string_to_array(:last_offsets, ',')::bigint[]
    ) AS d(delivery_id, fact, records, bytes, first_offset, last_offset)
), fact AS (
    SELECT * FROM jsonb_to_recordset(CAST(:facts AS jsonb)) AS f(
        fact int, tenant_id text, dataset_id text, grant_id text, delivered_at timestamptz,
        source_topic text, source_partition int, billing_period text, set_aside_reason text)
), new AS (
    INSERT INTO metering_ledger (
        delivery_id, tenant_id, dataset_id, grant_id, records, bytes, delivered_at, recorded_at,
        source_topic, source_partition, first_offset, last_offset, billing_period, set_aside_reason)
    SELECT d.delivery_id, f.tenant_id, f.dataset_id, f.grant_id, d.records, d.bytes, f.delivered_at,
        :recorded_at, f.source_topic, f.source_partition, d.first_offset, d.last_offset, f.billing_period,
        f.set_aside_reason
    FROM delivery AS d JOIN fact AS f USING (fact)
    ORDER BY d.delivery_id, d.fact
    ON CONFLICT (delivery_id) DO NOTHING
    RETURNING delivery_id, tenant_id, dataset_id, grant_id, delivered_at, billing_period, set_aside_reason,
        records, bytes
)
SELECT tenant_id, dataset_id, grant_id, delivered_at, billing_period, set_aside_reason,
    CAST(sum(records) AS bigint) AS records, CAST(sum(bytes) AS bigint) AS bytes,
    CAST(json_agg(delivery_id) AS text) AS delivery_ids
FROM new
GROUP BY tenant_id, dataset_id, grant_id, delivered_at, billing_period, set_aside_reason
"""
).bindparams(sa.bindparam("recorded_at", type_=sa.DateTime(timezone=True)))


def _insert_new_postgresql(
    conn: Connection, facts: Sequence[UsageFact], placements: Sequence[_Placement], now: datetime
) -> list[NewUsage]:
    deliveries = [(n, delivery) for n, fact in enumerate(facts) for delivery in fact.deliveries]

    def joined(values: Iterable[int]) -> str:
        return ",".join(map(str, values))

    shared = [
        {
            "fact": n,
            "tenant_id": fact.tenant_id,
            "dataset_id": fact.dataset_id,
            "grant_id": fact.grant_id,
            "delivered_at": fact.delivered_at.isoformat(),
            "source_topic": fact.source_topic,
            "source_partition": fact.source_partition,
            "billing_period": placement.billing_period,
            "set_aside_reason": placement.set_aside_reason,
        }
        for n, (fact, placement) in enumerate(zip(facts, placements, strict=True))
    ]
    rows = conn.execute(
        _INSERT_GROUPED,
        {
            "delivery_ids": json.dumps([delivery.delivery_id for _, delivery in deliveries]),
            "facts_of": joined(n for n, _ in deliveries),
            "records": joined(delivery.records for _, delivery in deliveries),
            "bytes": joined(delivery.bytes for _, delivery in deliveries),
            "first_offsets": joined(delivery.first_offset for _, delivery in deliveries),
            "last_offsets": joined(delivery.last_offset for _, delivery in deliveries),
            "facts": json.dumps(shared),
            "recorded_at": now,
        },
    )
    return sorted(
        (
            NewUsage(
                row.tenant_id,
                row.dataset_id,
                row.grant_id,
                as_utc(row.delivered_at),
                row.billing_period,
                row.set_aside_reason,
                row.records,
                row.bytes,
                tuple(json.loads(row.delivery_ids)),
            )
            for row in rows
        ),
        key=_usage_key,
    )


def _insert_new_row_by_row(
    conn: Connection, facts: Sequence[UsageFact], placements: Sequence[_Placement], now: datetime
) -> list[NewUsage]:
    """SQLite (the embedded default): one parameter set per row, then the new rows grouped as PostgreSQL's
    statement groups them."""
    rows = sorted(
        (
            _row(fact, placement, delivery, now)
            for fact, placement in zip(facts, placements, strict=True)
            for delivery in fact.deliveries
        ),
        key=lambda row: row["delivery_id"],
    )
    statement = (
        dialect_insert(conn, t.ledger)
        .on_conflict_do_nothing(index_elements=["delivery_id"])
        .returning(t.ledger.c.delivery_id)
    )
    inserted = set(conn.execute(statement, rows).scalars())
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row["delivery_id"] in inserted:
            inserted.discard(row["delivery_id"])  # a duplicate later in the batch was not the row inserted
            groups.setdefault(_row_key(row), []).append(row)
    return sorted(
        (
            NewUsage(
                **dict(zip(_GROUPED_BY, key, strict=True)),
                records=sum(row["records"] for row in new),
                bytes=sum(row["bytes"] for row in new),
                delivery_ids=tuple(row["delivery_id"] for row in new),
            )
            for key, new in groups.items()
        ),
        key=_usage_key,
    )


_GROUPED_BY = ("tenant_id", "dataset_id", "grant_id", "delivered_at", "billing_period", "set_aside_reason")


def _row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in _GROUPED_BY)


def _usage_key(usage: NewUsage) -> tuple[str, ...]:
    return (usage.grant_id, usage.delivered_at.isoformat(), usage.billing_period or "")


def _row(fact: UsageFact, placement: _Placement, delivery: Delivery, now: datetime) -> dict[str, Any]:
    return {
        "delivery_id": delivery.delivery_id,
        "tenant_id": fact.tenant_id,
        "dataset_id": fact.dataset_id,
        "grant_id": fact.grant_id,
        "records": delivery.records,
        "bytes": delivery.bytes,
        "delivered_at": fact.delivered_at,
        "recorded_at": now,
        "source_topic": fact.source_topic,
        "source_partition": fact.source_partition,
        "first_offset": delivery.first_offset,
        "last_offset": delivery.last_offset,
        "billing_period": placement.billing_period,
        "set_aside_reason": placement.set_aside_reason,
    }


def _add_to_windows(conn: Connection, new: Sequence[NewUsage], now: datetime) -> None:
    sums: dict[tuple[str, str, datetime], dict[str, Any]] = {}
    for usage in new:
        for kind, length in WINDOW_LENGTHS.items():
            start = window_start(kind, usage.delivered_at)
            window = sums.setdefault(
                (usage.grant_id, kind, start),
                {
                    "grant_id": usage.grant_id,
                    "window_kind": kind,
                    "window_start": start,
                    "window_end": start + length,
                    "tenant_id": usage.tenant_id,
                    "dataset_id": usage.dataset_id,
                    "records": 0,
                    "bytes": 0,
                    "version": 1,
                    "published_version": 0,
                    "updated_at": now,
                },
            )
            window["records"] += usage.records
            window["bytes"] += usage.bytes
    if not sums:
        return
    insert = dialect_insert(conn, t.windows)
    upsert = insert.on_conflict_do_update(
        index_elements=["grant_id", "window_kind", "window_start"],
        set_={
            "records": t.windows.c.records + insert.excluded.records,
            "bytes": t.windows.c.bytes + insert.excluded.bytes,
            "version": t.windows.c.version + 1,
            "updated_at": insert.excluded.updated_at,
        },
    )
    conn.execute(upsert, [sums[key] for key in sorted(sums)])


def _quota_usage(
    conn: Connection, new: Sequence[NewUsage], grants: Mapping[str, _GrantTerms]
) -> list[QuotaUsage]:
    """DAY usage, after this batch, of every grant with a quota and a day the new deliveries touched."""
    touched = sorted(
        {
            (usage.grant_id, window_start(DAY, usage.delivered_at))
            for usage in new
            if usage.grant_id in grants and grants[usage.grant_id].daily_quota_records is not None
        }
    )
    if not touched:
        return []
    w = t.windows.c
    query = sa.select(w.grant_id, w.window_start, w.tenant_id, w.dataset_id, w.records).where(
        w.window_kind == DAY,
        sa.tuple_(w.grant_id, w.window_start).in_(touched),
    )
    return [
        QuotaUsage(
            tenant_id=row.tenant_id,
            dataset_id=row.dataset_id,
            grant_id=row.grant_id,
            day=as_utc(row.window_start).date(),
            used_records=row.records,
            quota_records=grants[row.grant_id].daily_quota_records,  # type: ignore[arg-type]  # touched: it has a quota
        )
        for row in conn.execute(query)
    ]


def _notice_reached(conn: Connection, usage: Sequence[QuotaUsage], now: datetime) -> list[QuotaNotice]:
    """Insert a notice for each grant and day at or over quota; those new in this transaction."""
    reached = sorted(
        (u for u in usage if u.used_records >= u.quota_records), key=lambda u: (u.grant_id, u.day)
    )
    notices = []
    for u in reached:
        event_id = str(uuid.uuid5(QUOTA_EVENT_NAMESPACE, f"{u.grant_id}|{u.day.isoformat()}"))
        statement = (
            dialect_insert(conn, t.quota_notices)
            .values(
                grant_id=u.grant_id,
                day=u.day,
                tenant_id=u.tenant_id,
                dataset_id=u.dataset_id,
                quota_records=u.quota_records,
                used_records=u.used_records,
                event_id=event_id,
                noticed_at=now,
            )
            .on_conflict_do_nothing(index_elements=["grant_id", "day"])
            .returning(t.quota_notices.c.grant_id)
        )
        if conn.execute(statement).first() is not None:  # RETURNING names only a row inserted now
            notices.append(
                QuotaNotice(
                    u.grant_id, u.tenant_id, u.dataset_id, u.day, u.quota_records, u.used_records, event_id
                )
            )
    return notices
