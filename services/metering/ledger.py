"""The usage ledger's write path: a batch of usage facts becomes ledger rows, window sums and quota notices in
ONE transaction, so each delivery id counts once however often Kafka redelivers it.

**Exactly once.** `Ledger.record(facts)` inserts with insert-or-ignore on the primary key `delivery_id`
(`INSERT … ON CONFLICT DO NOTHING … RETURNING delivery_id`, PostgreSQL and SQLite alike) and learns from
RETURNING which rows are new; duplicates inside one batch are dropped before the insert. Everything derived
from the batch (MINUTE and DAY windows, quota notices) is computed from the new rows only, in the same
transaction: a crash before the commit leaves nothing, a redelivery after it adds nothing. The consumer
acknowledges its Kafka offsets only after the commit, so nothing is lost either. Rows, window keys and
notice keys are written in sorted order, so two workers writing overlapping batches on PostgreSQL take
their row locks in one order and cannot deadlock.

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
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite

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


@dataclass(frozen=True)
class UsageFact:
    """One RecordsDelivered usage fact, as the ledger needs it."""

    delivery_id: str
    tenant_id: str
    dataset_id: str
    grant_id: str
    records: int
    bytes: int
    delivered_at: datetime
    source_topic: str
    source_partition: int
    first_offset: int
    last_offset: int

    @classmethod
    def from_event(cls, value: Mapping[str, Any]) -> UsageFact:
        """From a decoded RecordsDelivered value; InvalidFact if it cannot be recorded faithfully."""
        provenance = value["provenance"]
        fact = cls(
            delivery_id=value["delivery_id"],
            tenant_id=value["tenant_id"],
            dataset_id=value["dataset_id"],
            grant_id=value["grant_id"],
            records=value["records"],
            bytes=value["bytes"],
            delivered_at=as_utc(value["occurred_at"]),
            source_topic=provenance["source_topic"],
            source_partition=provenance["source_partition"],
            first_offset=provenance["first_offset"],
            last_offset=provenance["last_offset"],
        )
        fact.check()
        return fact

    @classmethod
    def from_batch_event(cls, value: Mapping[str, Any]) -> list[UsageFact]:
        """Each delivery of a decoded RecordsDeliveredBatch, one record each; InvalidFact if any cannot be
        recorded faithfully (the whole event is refused: it is one usage fact)."""
        if not value["deliveries"]:
            raise InvalidFact("a RecordsDeliveredBatch must list at least one delivery")
        delivered_at = as_utc(value["occurred_at"])
        facts = [
            cls(
                delivery_id=delivery["delivery_id"],
                tenant_id=value["tenant_id"],
                dataset_id=value["dataset_id"],
                grant_id=value["grant_id"],
                records=1,
                bytes=delivery["bytes"],
                delivered_at=delivered_at,
                source_topic=value["source_topic"],
                source_partition=value["source_partition"],
                first_offset=delivery["source_offset"],
                last_offset=delivery["source_offset"],
            )
            for delivery in value["deliveries"]
        ]
        for fact in facts:
            fact.check()
        return facts

    def check(self) -> None:
        for name, limit in TEXT_LIMITS.items():
            text = getattr(self, name)
            if not text or len(text) > limit:
                raise InvalidFact(f"{name} must be 1 to {limit} characters, found {len(text)}")
        if self.records < 0 or self.bytes < 0:
            raise InvalidFact(f"records ({self.records}) and bytes ({self.bytes}) cannot be negative")
        if self.last_offset < self.first_offset:
            raise InvalidFact(f"last_offset {self.last_offset} is before first_offset {self.first_offset}")
        # A fact counts the records of its source offsets, no more: an absurd count (a forged or broken fact)
        # would overflow the window sums and stall the partition on a retried transaction.
        span = self.last_offset - self.first_offset + 1
        if self.records > span:
            raise InvalidFact(f"records ({self.records}) exceed the {span} source offsets the fact covers")
        if self.bytes > self.records * MAX_RECORD_BYTES:
            raise InvalidFact(
                f"bytes ({self.bytes}) exceed {MAX_RECORD_BYTES} per record for {self.records} records"
            )


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


@dataclass
class BatchResult:
    """What one batch changed: the rows new to the ledger (billed and set aside) and what they caused."""

    new_rows: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0  # facts of the batch that were in the ledger already, or earlier in the batch
    quota_usage: list[QuotaUsage] = field(default_factory=list)
    notices: list[QuotaNotice] = field(default_factory=list)

    @property
    def billed(self) -> list[dict[str, Any]]:
        return [row for row in self.new_rows if row["billing_period"] is not None]

    @property
    def set_aside(self) -> list[dict[str, Any]]:
        return [row for row in self.new_rows if row["billing_period"] is None]


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


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing / on_conflict_do_update (PostgreSQL, SQLite)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


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
        distinct = sorted({fact.delivery_id: fact for fact in facts}.values(), key=lambda f: f.delivery_id)
        result = BatchResult()
        if not distinct:
            return result
        now = self.clock()
        with self.engine.begin() as conn:
            grants = _grant_terms(conn, {fact.grant_id for fact in distinct})
            rows = [_row(fact, grants.get(fact.grant_id), now) for fact in distinct]
            billed_in = _open_periods(conn, {row["billing_period"] for row in rows} - {None}, now)
            for row in rows:
                if row["billing_period"] is not None:
                    row["billing_period"] = billed_in[row["billing_period"]]
            inserted = _insert_new(conn, rows)
            result.new_rows = [row for row in rows if row["delivery_id"] in inserted]
            result.duplicates = len(facts) - len(result.new_rows)
            _add_to_windows(conn, result.new_rows, now)
            result.quota_usage = _quota_usage(conn, result.new_rows, grants)
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


def _row(fact: UsageFact, grant: _GrantTerms | None, now: datetime) -> dict[str, Any]:
    """The ledger row of a fact; billing_period is the delivery month until periods are checked."""
    period: str | None = period_of(fact.delivered_at)
    reason: str | None = None
    if grant is None:
        period, reason = None, f"{UNKNOWN_GRANT}: no grant {fact.grant_id} on pdo.authorizations"
    elif fact.delivered_at < grant.valid_from:
        period, reason = (
            None,
            f"{BEFORE_GRANT}: delivered at {fact.delivered_at.isoformat()}, "
            f"grant {fact.grant_id} valid from {grant.valid_from.isoformat()}",
        )
    return {
        "delivery_id": fact.delivery_id,
        "tenant_id": fact.tenant_id,
        "dataset_id": fact.dataset_id,
        "grant_id": fact.grant_id,
        "records": fact.records,
        "bytes": fact.bytes,
        "delivered_at": fact.delivered_at,
        "recorded_at": now,
        "source_topic": fact.source_topic,
        "source_partition": fact.source_partition,
        "first_offset": fact.first_offset,
        "last_offset": fact.last_offset,
        "billing_period": period,
        "set_aside_reason": reason,
    }


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


def _insert_new(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert-or-ignore on delivery_id; the ids actually inserted (RETURNING names only new rows)."""
    insert = dialect_insert(conn, t.ledger)
    if conn.dialect.name == "postgresql":
        # The whole batch as ONE json parameter, typed server-side by jsonb_to_recordset: json.dumps runs in C,
        # while psycopg quotes every element of a text array in Python (that cost more than the insert itself,
        # and more still with one placeholder per value).
        names = [
            column.name for column in t.ledger.columns if column.name in rows[0]
        ]  # digest_id comes later
        batch = sa.func.jsonb_to_recordset(sa.cast(sa.bindparam("rows", _json_rows(rows)), postgresql.JSONB))
        typed = batch.table_valued(*(sa.column(name, t.ledger.c[name].type) for name in names))
        source = typed.render_derived(name="batch", with_types=True)
        statement = insert.from_select(names, sa.select(*(source.c[name] for name in names)))
        parameters = None
    else:
        statement, parameters = insert, list(rows)
    statement = statement.on_conflict_do_nothing(index_elements=["delivery_id"]).returning(
        t.ledger.c.delivery_id
    )
    return set(conn.execute(statement, parameters).scalars())


def _json_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one JSON array, timestamps as ISO 8601 with their offset (read as timestamptz). A batched
    usage fact gives all its deliveries one time, so each distinct time is formatted once."""
    text: dict[datetime, str] = {}

    def iso(moment: datetime) -> str:
        if moment not in text:
            text[moment] = moment.isoformat()
        return text[moment]

    return json.dumps(
        [
            {**row, "delivered_at": iso(row["delivered_at"]), "recorded_at": iso(row["recorded_at"])}
            for row in rows
        ]
    )


def _add_to_windows(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    sums: dict[tuple[str, str, datetime], dict[str, Any]] = {}
    starts: dict[tuple[str, datetime], datetime] = {}  # rows of a batched fact share their delivery time
    for row in rows:
        for kind, length in WINDOW_LENGTHS.items():
            key = (kind, row["delivered_at"])
            start = starts[key] if key in starts else starts.setdefault(key, window_start(*key))
            window = sums.setdefault(
                (row["grant_id"], kind, start),
                {
                    "grant_id": row["grant_id"],
                    "window_kind": kind,
                    "window_start": start,
                    "window_end": start + length,
                    "tenant_id": row["tenant_id"],
                    "dataset_id": row["dataset_id"],
                    "records": 0,
                    "bytes": 0,
                    "version": 1,
                    "published_version": 0,
                    "updated_at": now,
                },
            )
            window["records"] += row["records"]
            window["bytes"] += row["bytes"]
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
    conn: Connection, rows: Sequence[dict[str, Any]], grants: Mapping[str, _GrantTerms]
) -> list[QuotaUsage]:
    """DAY usage, after this batch, of every grant with a quota and a day the new rows touched."""
    touched = sorted(
        {
            (row["grant_id"], window_start(DAY, row["delivered_at"]))
            for row in rows
            if row["grant_id"] in grants and grants[row["grant_id"]].daily_quota_records is not None
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
