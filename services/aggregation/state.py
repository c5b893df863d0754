"""The aggregation worker's state: open windows, watermarks and feed positions, in SQL it owns.

**Restart neither loses nor doubles a window.** The state lives in SQL, not in Kafka consumer offsets: one
transaction per feed batch writes the groups the batch changed, how far each feed partition was read
(`aggregation_positions`), each dataset's watermark, and, for every window the batch closed, its row in
`aggregation_windows` (primary key grant + window start: a window can be closed once only) together with the
aggregates and the usage fact it yields, into the service's outbox. A worker that dies before the commit
leaves the previous state and position, so the batch is read and applied again, once; after the commit, the
outbox publishes what the closing wrote. SQL rather than a recomputation from feed offsets: a window may span
more than the feed's retention allows to re-read cheaply, and the closed-windows table is what makes a second
publication impossible by construction rather than by luck.

**Event time** is a feed record's Kafka timestamp (the time its provider gave it, or the broker's append
time). A dataset's **watermark** moves only between batches and never back: it is the earliest of the latest
event times read on each partition of its feed that still has records to read (a partition read to its end is
idle and holds nothing back; when all are, the latest of them). So the order in which partitions are read,
and a partition that lags, make no record late. A window `[start, end)` of a grant closes once
`end + allowed lateness <= watermark`; a record whose window had closed by that rule when its batch began is
**late**: it is counted nowhere and goes to the dead-letter topic with its reason (never silently dropped).

**Small groups.** At its close a window publishes only groups of at least k records (windows.py), k the
larger of the dataset's `pdo.min_group_size` and the operator's floor. A window whose groups are all below k
publishes nothing and is not metered. A grant no longer active at a window's close publishes nothing for it.

**Privacy budget.** A grant with an `epsilon` spends it, per window closed, from its tenant's budget for the
dataset and UTC month (`aggregation_privacy_budgets`, kept in memory and saved with the batch like the rest).
A window the budget cannot pay for is closed unpublished — so in stream order nothing more is released under
the grant — and a PrivacyBudgetExhausted notice asks the authorization service to suspend the grant (one per
such window until the suspension is applied). What is spent never exceeds the budget, so what is left never
goes below zero.

**Derived data products** are computed as grants (grants.py): the source records their filter admits are
counted the same way, k is at least the product's, and a closed window's published groups are staged for the
product's feed instead of a tenant's aggregates topic, with no usage fact (no tenant received anything yet).
A product's row has the id of its aggregate (grant, window, group), so it is the same row whenever written.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import fastavro
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.aggregation import tables as t
from pdo.aggregation.grants import AggregateGrant, AggregateGrants
from pdo.aggregation.public import window_delivery_id
from pdo.aggregation.windows import ClosedWindow, Group, close_window, group_key, min_group_size, window_start
from pdo.core import schemas, topics
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage, dead_letter_event
from pdo.core.events import utc, utc_now
from pdo.core.names import Event
from pdo.core.topics import TopicId, tenant_topic_part

SERVICE = "aggregation"
ACTOR = f"system:{SERVICE}"
# Longest group key (the group-by values as a JSON list) the groups table holds.
MAX_GROUP_KEY = 1024
# Confluent's framing in front of every Avro body on a topic: a zero byte and the 4-byte schema id.
FRAME_BYTES = 5

WindowId = tuple[str, datetime]  # grant id, window start
Partition = tuple[str, int]  # feed topic, partition
BudgetKey = tuple[str, str, str]  # tenant, dataset, UTC month


@dataclass(frozen=True)
class FeedRecord:
    """One decoded feed record: where it was read, its dataset, its event time and its fields."""

    source: SourceMessage
    dataset_id: str
    event_time: datetime
    value: dict[str, Any] | None  # None: it did not decode (dead-lettered with `problem`)
    problem: str = ""


@dataclass(frozen=True)
class TopicNames:
    """The names of a dataset's feed and of a tenant's aggregates topic in this deployment's namespace."""

    settings: Settings

    def feed(self, dataset_id: str) -> str:
        return topics.name(TopicId.FEED, self.settings, dataset_id=dataset_id)

    def aggregates(self, tenant_id: str, dataset_id: str) -> str:
        return topics.name(
            TopicId.TENANT_AGGREGATES,
            self.settings,
            tenant_id=tenant_topic_part(tenant_id),
            dataset_id=dataset_id,
        )


@dataclass
class Changes:
    """What one batch changed, to be written in one transaction."""

    touched: set[tuple[str, datetime, str]] = field(default_factory=set)
    closed: list[tuple[ClosedWindow, AggregateGrant]] = field(default_factory=list)
    dead_letters: list[tuple[SourceMessage, str, str]] = field(default_factory=list)
    late: int = 0
    watermarks_moved: set[str] = field(default_factory=set)
    budgets_touched: set[BudgetKey] = field(default_factory=set)
    budgets_exhausted: set[BudgetKey] = field(default_factory=set)


class Aggregator:
    """Open windows' groups, watermarks and positions in memory, saved to SQL batch by batch (see module)."""

    def __init__(
        self,
        engine: Engine,
        lateness_s: int,
        floor: int,
        names: TopicNames,
        clock: Callable[[], datetime] = utc_now,
        epsilon_budget: float = 10.0,
    ) -> None:
        self.engine = engine
        self.lateness = timedelta(seconds=lateness_s)
        self.floor = floor
        self.names = names
        self.clock = clock
        self.groups: dict[WindowId, dict[str, Group]] = {}
        self.watermarks: dict[str, datetime] = {}
        self.positions: dict[Partition, int] = {}
        self.latest: dict[Partition, datetime] = {}  # latest event time read per feed partition
        self.epsilon_budget = epsilon_budget
        self.spent: dict[BudgetKey, float] = {}

    # ------------------------------------------------------------------------------------------ SQL

    def load(self) -> None:
        """Replace the memory with what SQL holds (at start, on taking the lead, after a failed commit)."""
        with self.engine.connect() as conn:
            rows = list(conn.execute(sa.select(t.positions)))
            self.positions = {(row.topic, row.partition): row.next_offset for row in rows}
            self.latest = {
                (row.topic, row.partition): utc(row.latest_event_time)
                for row in rows
                if row.latest_event_time is not None
            }
            self.watermarks = {
                row.dataset_id: utc(row.event_time) for row in conn.execute(sa.select(t.watermarks))
            }
            self.spent = {
                (row.tenant_id, row.dataset_id, row.period): row.spent
                for row in conn.execute(sa.select(t.privacy_budgets))
            }
            self.groups = {}
            for row in conn.execute(sa.select(t.groups)):
                window = (row.grant_id, utc(row.window_start))
                self.groups.setdefault(window, {})[row.group_key] = Group.from_json(row.records, row.stats)

    def save(self, changes: Changes) -> None:
        """Write one batch's changes in one transaction (see "Restart neither loses nor doubles a window")."""
        now = self.clock()
        with self.engine.begin() as conn:
            for grant_id, start, key in changes.touched:
                self._save_group(conn, grant_id, start, key)
            for closed, grant in changes.closed:
                self._close(conn, closed, grant, now)
            for source, code, reason in changes.dead_letters:
                letter = dead_letter_event(source, SERVICE, code, reason)
                t.OUTBOX.stage(conn, TopicId.DEAD_LETTERS, Event.DEAD_LETTER, letter, source.topic)
            self._save_positions(conn)
            for budget in changes.budgets_touched:
                self._save_budget(
                    conn, budget, exhausted=now if budget in changes.budgets_exhausted else None
                )
            for dataset_id in changes.watermarks_moved:
                conn.execute(t.watermarks.delete().where(t.watermarks.c.dataset_id == dataset_id))
                conn.execute(
                    t.watermarks.insert().values(
                        dataset_id=dataset_id, event_time=self.watermarks[dataset_id]
                    )
                )

    def _save_group(self, conn: Connection, grant_id: str, start: datetime, key: str) -> None:
        where = (
            (t.groups.c.grant_id == grant_id)
            & (t.groups.c.window_start == start)
            & (t.groups.c.group_key == key)
        )
        conn.execute(t.groups.delete().where(where))
        group = self.groups.get((grant_id, start), {}).get(key)
        if group is not None:  # gone: its window closed in this batch
            conn.execute(
                t.groups.insert().values(
                    grant_id=grant_id,
                    window_start=start,
                    group_key=key,
                    records=group.records,
                    stats=group.to_json(),
                )
            )

    def _save_budget(self, conn: Connection, key: BudgetKey, exhausted: datetime | None) -> None:
        tenant_id, dataset_id, period = key
        where = (
            (t.privacy_budgets.c.tenant_id == tenant_id)
            & (t.privacy_budgets.c.dataset_id == dataset_id)
            & (t.privacy_budgets.c.period == period)
        )
        held = conn.execute(sa.select(t.privacy_budgets.c.exhausted_at).where(where)).first()
        values: dict[str, Any] = {"spent": self.spent.get(key, 0.0)}
        if exhausted is not None and (held is None or held.exhausted_at is None):
            values["exhausted_at"] = exhausted
        if held is None:
            conn.execute(
                t.privacy_budgets.insert().values(
                    tenant_id=tenant_id, dataset_id=dataset_id, period=period, **values
                )
            )
        else:
            conn.execute(t.privacy_budgets.update().where(where).values(**values))

    def _save_positions(self, conn: Connection) -> None:
        for (topic, partition), offset in self.positions.items():
            latest = self.latest.get((topic, partition))
            done = conn.execute(
                t.positions.update()
                .where((t.positions.c.topic == topic) & (t.positions.c.partition == partition))
                .values(next_offset=offset, latest_event_time=latest)
            )
            if done.rowcount == 0:
                conn.execute(
                    t.positions.insert().values(
                        topic=topic, partition=partition, next_offset=offset, latest_event_time=latest
                    )
                )

    def _close(self, conn: Connection, closed: ClosedWindow, grant: AggregateGrant, now: datetime) -> None:
        rows = closed.rows if grant.active else ()
        if closed.budget_exhausted and grant.active:
            notice = exhaustion_event(
                grant, closed, self.spent.get(budget_key(grant, closed.start), 0.0), self.epsilon_budget, now
            )
            t.OUTBOX.stage(
                conn, TopicId.QUOTA_EXCEEDED, Event.PRIVACY_BUDGET_EXHAUSTED, notice, grant.grant_id
            )
        conn.execute(
            t.groups.delete().where(
                (t.groups.c.grant_id == closed.grant_id) & (t.groups.c.window_start == closed.start)
            )
        )
        # The primary key refuses a second close of the same window: the transaction fails, nothing is staged.
        conn.execute(
            t.windows.insert().values(
                grant_id=closed.grant_id,
                window_start=closed.start,
                window_end=closed.end,
                closed_at=now,
                records=closed.records,
                groups_published=len(rows),
                groups_suppressed=closed.suppressed,
            )
        )
        if not rows:
            return
        values = [aggregate_event(grant, closed, index, now) for index in range(len(rows))]
        if grant.product is not None:
            # A product's rows go to its feed (app.py writes each in the product's own schema); the tenants
            # of grants on the product are metered when sharing delivers them, like any dataset's records.
            for value in values:
                t.OUTBOX.stage(
                    conn, TopicId.PRODUCT_FEED, Event.WINDOW_AGGREGATED, value, value["aggregate_id"]
                )
            return
        for value in values:
            t.OUTBOX.stage(
                conn, TopicId.TENANT_AGGREGATES, Event.WINDOW_AGGREGATED, value, value["aggregate_id"]
            )
        fact = usage_fact(grant, closed, sum(encoded_size(value) for value in values), self.names, now)
        t.OUTBOX.stage(conn, TopicId.DELIVERIES, Event.RECORDS_DELIVERED, fact, grant.grant_id)

    # ------------------------------------------------------------------------------------------ records

    def apply(
        self,
        batch: list[FeedRecord],
        grants: AggregateGrants,
        record_schemas: Mapping[str, str],
        feeds: Mapping[str, list[Partition]],
        idle: Callable[[Partition], bool],
    ) -> Changes:
        """Count a batch of feed records into their windows, move the watermarks of the datasets `feeds` maps
        to their partitions (`idle`: read to its end), then close the windows that made due."""
        changes = Changes()
        for record in batch:
            where = (record.source.topic, record.source.partition)
            self.positions[where] = record.source.offset + 1
            if where not in self.latest or record.event_time > self.latest[where]:
                self.latest[where] = record.event_time
            if record.value is None:
                changes.dead_letters.append((record.source, "UNDECODABLE", record.problem))
                continue
            self._count(record, grants, changes)
        for dataset_id, partitions in feeds.items():
            if self._advance(dataset_id, partitions, idle):
                changes.watermarks_moved.add(dataset_id)
        changes.closed.extend(self._close_due(grants, record_schemas, changes))
        return changes

    def _advance(
        self, dataset_id: str, partitions: list[Partition], idle: Callable[[Partition], bool]
    ) -> bool:
        """Move the dataset's watermark (see the module docstring); whether it moved."""
        busy = [where for where in partitions if not idle(where)]
        if any(where not in self.latest for where in busy):
            return False  # a partition with records still to read, none read yet: it may hold older ones
        known = [self.latest[where] for where in (busy or partitions) if where in self.latest]
        if not known:
            return False
        candidate = min(known) if busy else max(known)
        held = self.watermarks.get(dataset_id)
        if held is not None and candidate <= held:
            return False
        self.watermarks[dataset_id] = candidate
        return True

    def _count(self, record: FeedRecord, grants: AggregateGrants, changes: Changes) -> None:
        assert record.value is not None
        watermark = self.watermarks.get(record.dataset_id)
        late: list[str] = []
        for grant in grants.on_dataset(record.dataset_id):
            if not grant.counts(record.event_time) or not grant.admits(record.value):
                continue
            start = window_start(record.event_time, grant.spec.window_seconds)
            end = start + timedelta(seconds=grant.spec.window_seconds)
            if watermark is not None and end + self.lateness <= watermark:
                late.append(f"{grant.grant_id} window {start.isoformat()}–{end.isoformat()}")
                continue
            key = group_key(record.value, grant.spec.group_by)
            if len(key) > MAX_GROUP_KEY:
                # The key could never be stored: retrying would stall the feed; the record is set aside instead.
                reason = (
                    f"group key of {len(key)} characters (at most {MAX_GROUP_KEY}) for grant {grant.grant_id}"
                )
                changes.dead_letters.append((record.source, "INVALID_EVENT", reason))
                return
            self.groups.setdefault((grant.grant_id, start), {}).setdefault(key, Group()).add(
                record.value, grant.spec.numeric_fields
            )
            changes.touched.add((grant.grant_id, start, key))
        if late:
            changes.late += 1
            reason = (
                f"late record: event time {record.event_time.isoformat()} is in windows closed already "
                f"(watermark {watermark.isoformat() if watermark else '-'}, allowed lateness "
                f"{int(self.lateness.total_seconds())} s): {'; '.join(late)}"
            )
            changes.dead_letters.append((record.source, "OTHER", reason))

    def _close_due(
        self, grants: AggregateGrants, record_schemas: Mapping[str, str], changes: Changes
    ) -> list[tuple[ClosedWindow, AggregateGrant]]:
        closed = []
        for grant_id, start in sorted(self.groups, key=lambda window: (window[1], window[0])):
            grant = grants.get(grant_id)
            if grant is None:
                continue  # not on pdo.authorizations (yet): its windows wait
            watermark = self.watermarks.get(grant.dataset_id)
            end = start + timedelta(seconds=grant.spec.window_seconds)
            if watermark is None or end + self.lateness > watermark:
                continue
            k = grant.min_group_size(min_group_size(record_schemas.get(grant.dataset_id, "{}"), self.floor))
            groups = self.groups.pop((grant_id, start))
            if grant.spec.epsilon is not None and grant.active and not self._spend(grant, start, changes):
                unpaid = close_window(grant_id, start, grant.spec, {}, k)
                closed.append(
                    (
                        replace(
                            unpaid, records=sum(g.records for g in groups.values()), budget_exhausted=True
                        ),
                        grant,
                    )
                )
                continue
            closed.append((close_window(grant_id, start, grant.spec, groups, k), grant))
        return closed

    def _spend(self, grant: AggregateGrant, start: datetime, changes: Changes) -> bool:
        """Spend the grant's epsilon for one window if the budget can pay for it; whether it could."""
        assert grant.spec.epsilon is not None
        key = budget_key(grant, start)
        changes.budgets_touched.add(key)
        spent = self.spent.get(key, 0.0)
        if spent + grant.spec.epsilon > self.epsilon_budget:
            changes.budgets_exhausted.add(key)
            return False
        self.spent[key] = spent + grant.spec.epsilon
        return True


# ---------------------------------------------------------------------------------------------- events


def budget_key(grant: AggregateGrant, start: datetime) -> BudgetKey:
    """Whose budget a window of the grant spends: its tenant's, for its dataset, in the window's UTC month."""
    return (grant.tenant_id, grant.dataset_id, start.strftime("%Y-%m"))


def exhaustion_event(
    grant: AggregateGrant, closed: ClosedWindow, spent: float, budget: float, now: datetime
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now,
        "actor": ACTOR,
        "grant_id": grant.grant_id,
        "tenant_id": grant.tenant_id,
        "dataset_id": grant.dataset_id,
        "period": closed.start.strftime("%Y-%m"),
        "epsilon_budget": budget,
        "epsilon_spent": spent,
        "window_start": closed.start,
    }


def aggregate_id(grant_id: str, start: datetime, group: Mapping[str, Any]) -> str:
    """Stable per (grant, window, group): a consumer drops a repeat by it."""
    digest = hashlib.sha256(json.dumps(group, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    return f"{grant_id}.{_millis(start)}.{digest}"


def aggregate_event(grant: AggregateGrant, closed: ClosedWindow, index: int, now: datetime) -> dict[str, Any]:
    row = closed.rows[index]
    identity = aggregate_id(grant.grant_id, closed.start, row.group)
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pdo-aggregate:{identity}")),
        "occurred_at": now,
        "actor": ACTOR,
        "aggregate_id": identity,
        "grant_id": grant.grant_id,
        "tenant_id": grant.tenant_id,
        "dataset_id": grant.dataset_id,
        "window_start": closed.start,
        "window_end": closed.end,
        "group": row.group,
        "count": row.count,
        "measures": [
            {"field": name, "function": function.value, "value": value}
            for name, function, value in row.measures
        ],
        "suppressed_groups": closed.suppressed,
        "min_group_size": closed.min_group_size,
    }


def usage_fact(
    grant: AggregateGrant, closed: ClosedWindow, size: int, names: TopicNames, now: datetime
) -> dict[str, Any]:
    """One RecordsDelivered per window delivered: `records` the aggregates published, `bytes` their size on
    the tenant topic. Its provenance spans every partition of the feed (partition -1) and counts, as offsets
    0 … n-1, the n source records the window aggregated (metering checks records never exceed them)."""
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now,
        "actor": ACTOR,
        "delivery_id": window_delivery_id(grant.grant_id, closed.start),
        "tenant_id": grant.tenant_id,
        "dataset_id": grant.dataset_id,
        "grant_id": grant.grant_id,
        "target_topic": names.aggregates(grant.tenant_id, grant.dataset_id),
        "provenance": {
            "source_topic": names.feed(grant.dataset_id),
            "source_partition": -1,
            "first_offset": 0,
            "last_offset": closed.records - 1,
            "masking_policy_version": f"{grant.grant_id}.v{grant.version}",
        },
        "records": len(closed.rows),
        "bytes": size,
    }


def encoded_size(value: dict[str, Any]) -> int:
    """Bytes a WindowAggregated value takes on a topic (Avro body and Confluent framing)."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, _window_aggregated(), value)
    return FRAME_BYTES + len(body.getvalue())


@cache
def _window_aggregated() -> Any:
    return fastavro.parse_schema(json.loads(str(schemas.get(Event.WINDOW_AGGREGATED))))


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
