"""Reconciliation: per grant and billing period, records on the tenant topics, in the ledger, and billed.

Three figures per grant, compared by delivery id, not by counts alone, so a lost record and a doubled one
cannot cancel out:

- **on the topics**: every record on the tenant topics carries `pdo_provenance` (source topic, partition,
  offset, grant), from which `pdo.core.provenance.delivery_id` gives the id its usage fact carries. A record
  the sharing service wrote twice (a redelivery) has one id and counts once; such copies are reported as
  `duplicates on topic`, for information only.
- **in the ledger**: the grant's rows billed in the period, plus its rows delivered in the period and set
  aside for review (shown apart: they are in the ledger but never billed).
- **billed**: the records on the period's statement lines for the grant (none while the period is open).

A topic record belongs to the period its ledger row is billed in (a late row counts where it was billed);
a record the ledger lacks belongs to the month of its Kafka timestamp. Two checks, each a number of records:
`topic_vs_ledger` = records on the topic missing from the ledger + ledger records not on the topic;
`ledger_vs_billed` = |billable ledger records - billed records| (closed periods only). Zero when all is well.

The topics are read to the end offsets taken when the scan starts, then the ledger: a ledger row recorded
after the scan began may belong to a record written after it, so it is not counted as missing from the
topic. A record delivered but not metered yet counts as missing from the ledger until metering catches up,
so an alert on the drift metric should wait a few minutes (`for:`) before firing.

Tenant topics keep records for a limited time (7 days as declared). When retention has deleted the start of
a topic, the scan notes from when on the topic is complete (the latest first-retained record over its
partitions); ledger rows delivered before that cannot be found on the topic and are counted as
`past_retention` — checked against the statements only, never drift.
"""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from kafka import TopicPartition
from kafka.errors import UnknownTopicOrPartitionError
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from sqlalchemy import Connection, Engine

from pdo.authorization import tables as authz
from pdo.core import kafka
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.events import utc, utc_now
from pdo.core.kafka import admin_client
from pdo.core.provenance import PROVENANCE_FIELD, delivery_id
from pdo.core.topics import tenant_topic
from pdo.metering import tables as t
from pdo.metering.months import parse_period, period_end, period_of, period_start
from pdo.metering.statements import CHUNK, compute_statements, is_closed

CHECKS = ("topic_vs_ledger", "ledger_vs_billed")
UNKNOWN_TOPIC = UnknownTopicOrPartitionError.errno


@dataclass(frozen=True)
class TopicRecord:
    """One delivery as the tenant topic holds it."""

    delivery_id: str
    grant_id: str
    written_at: datetime  # the Kafka timestamp of its first copy


@dataclass
class TopicScan:
    """What the tenant topics held when the scan started: each delivery id once, and what else was seen."""

    started_at: datetime
    records: dict[str, TopicRecord] = field(default_factory=dict)
    duplicates: Counter = field(default_factory=Counter)  # delivery id -> extra copies
    unreadable: list[str] = field(default_factory=list)  # "<topic>[p]@o: reason"
    # (tenant, dataset) -> the time from which its topic still holds every record: retention deleted the
    # older ones (a topic that never lost any is not listed).
    complete_since: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def retained(self, tenant_id: str, dataset_id: str, at: datetime) -> bool:
        """Whether a record of that tenant and dataset delivered `at` would still be on its topic."""
        since = self.complete_since.get((tenant_id, dataset_id))
        return since is None or at >= since


@dataclass(frozen=True)
class LedgerEntry:
    delivery_id: str
    grant_id: str
    tenant_id: str
    dataset_id: str
    records: int
    billed: bool  # False: set aside
    delivered_at: datetime
    recorded_at: datetime


@dataclass
class GrantFigures:
    grant_id: str
    tenant_id: str
    dataset_id: str
    on_topic: int = 0
    in_ledger: int = 0  # billed in the period + set aside
    set_aside: int = 0
    billed: int | None = None  # None while the period is open
    missing_from_ledger: int = 0
    not_on_topic: int = 0
    past_retention: int = 0  # ledger records whose topic copies retention deleted: not checkable, not drift
    duplicates_on_topic: int = 0

    @property
    def topic_vs_ledger(self) -> int:
        return self.missing_from_ledger + self.not_on_topic

    @property
    def ledger_vs_billed(self) -> int:
        return 0 if self.billed is None else abs(self.in_ledger - self.set_aside - self.billed)

    @property
    def clean(self) -> bool:
        return self.topic_vs_ledger == 0 and self.ledger_vs_billed == 0


@dataclass(frozen=True)
class Reconciliation:
    period: str
    closed: bool
    grants: list[GrantFigures]
    unreadable: list[str]

    def drift(self, check: str) -> int:
        """The absolute sum, over grants, of one check's differences (records)."""
        return sum(getattr(figures, check) for figures in self.grants)

    @property
    def clean(self) -> bool:
        return all(figures.clean for figures in self.grants)


# ---------------------------------------------------------------------------------------------- topics


def tenant_topics(conn: Connection, settings: Settings) -> dict[str, tuple[str, str]]:
    """Every tenant topic a grant or a ledger row names (whether or not the broker has it): its (tenant, dataset)."""
    pairs = set(conn.execute(sa.select(authz.grants.c.tenant_id, authz.grants.c.dataset_id).distinct()).all())
    pairs |= set(conn.execute(sa.select(t.ledger.c.tenant_id, t.ledger.c.dataset_id).distinct()).all())
    names = {}
    for tenant_id, dataset_id in sorted(pairs):
        try:
            names[tenant_topic(tenant_id, dataset_id, settings)] = (tenant_id, dataset_id)
        except PdoError:
            continue  # an id that cannot name a topic never had one
    return names


def scan_tenant_topics(
    settings: Settings, codec: AvroCodec, names: dict[str, tuple[str, str]], timeout_s: float = 60.0
) -> TopicScan:
    """Read the topics `names` maps to their (tenant, dataset) from their beginning to the end offsets of now,
    with a consumer outside any group."""
    scan = TopicScan(started_at=utc_now())
    assigned = tenant_partitions(settings, names)
    if not assigned:
        return scan
    consumer = kafka.consumer(
        settings, enable_auto_commit=False, request_timeout_ms=max(settings.kafka_timeout_s * 1000, 5000)
    )
    try:
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        # A partition whose log no longer starts at 0 lost records to retention before its first one.
        truncated = {tp: start for tp, start in consumer.beginning_offsets(assigned).items() if start > 0}
        for tp, start in truncated.items():
            if start >= ends[tp]:  # nothing left: from when on it is complete is unknown, so from now
                _complete_from(scan, names[tp.topic], scan.started_at)
        deadline = time.monotonic() + timeout_s
        while any((consumer.position(tp) or 0) < ends[tp] for tp in assigned):  # None: not known yet
            if time.monotonic() > deadline:
                raise PdoError(
                    f"could not read the tenant topics to their end within {timeout_s:.0f} s",
                    hint="is the broker slow or the topics very large? try again",
                )
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for message in messages:
                    if message.offset < ends[tp]:
                        _note(scan, codec, message)
                    if message.offset == truncated.get(tp):
                        _complete_from(scan, names[tp.topic], _timestamp(message))
    finally:
        consumer.close()
    return scan


def tenant_partitions(settings: Settings, names: Iterable[str]) -> list[TopicPartition]:
    """The partitions of those of `names` the broker has, asked topic by topic (never auto-creating one).

    A consumer's metadata cache may be incomplete right after it connects; an incomplete answer here would
    show every record of a missing topic as drift, so the broker's word on each topic is required.
    """
    wanted = sorted(names)
    if not wanted:
        return []
    with admin_client(settings) as admin:
        described = {topic["name"]: topic for topic in admin.describe_topics(wanted)}
    partitions = []
    for name in wanted:
        code = described[name]["error_code"] if name in described else None
        if code == UNKNOWN_TOPIC:
            continue  # no delivery ever created it
        if code != 0:
            raise PdoError(
                f"the broker did not describe tenant topic {name} (error code {code})",
                hint="the topic may be being created or moved; try again",
            )
        partitions += [TopicPartition(name, p["partition_index"]) for p in described[name]["partitions"]]
    return sorted(partitions)


def _complete_from(scan: TopicScan, owner: tuple[str, str], moment: datetime) -> None:
    """The topic is complete only from the latest first-retained record over its partitions."""
    scan.complete_since[owner] = max(moment, scan.complete_since.get(owner, moment))


def _timestamp(message: Any) -> datetime:
    return datetime.fromtimestamp(message.timestamp / 1000, UTC)


def _note(scan: TopicScan, codec: AvroCodec, message: Any) -> None:
    position = f"{message.topic}[{message.partition}]@{message.offset}"
    try:
        provenance = codec.decode(message.value).value[PROVENANCE_FIELD]
        record = TopicRecord(
            delivery_id(
                provenance["source_topic"],
                provenance["source_partition"],
                provenance["source_offset"],
                provenance["grant_id"],
            ),
            provenance["grant_id"],
            _timestamp(message),
        )
    except (CodecError, KeyError, TypeError) as error:
        scan.unreadable.append(f"{position}: {type(error).__name__} {error}")
        return
    if record.delivery_id in scan.records:
        scan.duplicates[record.delivery_id] += 1
    else:
        scan.records[record.delivery_id] = record


# ---------------------------------------------------------------------------------------------- ledger


def _entries(rows: Iterable[Any]) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            row.delivery_id,
            row.grant_id,
            row.tenant_id,
            row.dataset_id,
            row.records,
            row.billing_period is not None,
            utc(row.delivered_at),
            utc(row.recorded_at),
        )
        for row in rows
    ]


LEDGER_COLUMNS = (
    t.ledger.c.delivery_id,
    t.ledger.c.grant_id,
    t.ledger.c.tenant_id,
    t.ledger.c.dataset_id,
    t.ledger.c.records,
    t.ledger.c.billing_period,
    t.ledger.c.delivered_at,
    t.ledger.c.recorded_at,
)


def ledger_of_period(conn: Connection, period: str) -> list[LedgerEntry]:
    """Rows billed in `period`, and rows delivered in it but set aside."""
    set_aside_in_period = sa.and_(
        t.ledger.c.billing_period.is_(None),
        t.ledger.c.delivered_at >= period_start(period),
        t.ledger.c.delivered_at < period_end(period),
    )
    query = sa.select(*LEDGER_COLUMNS).where(sa.or_(t.ledger.c.billing_period == period, set_aside_in_period))
    return _entries(conn.execute(query))


def known_elsewhere(conn: Connection, ids: Iterable[str]) -> set[str]:
    """Which of `ids` the ledger holds at all."""
    ordered = sorted(ids)
    found: set[str] = set()
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        found.update(
            conn.execute(sa.select(t.ledger.c.delivery_id).where(t.ledger.c.delivery_id.in_(chunk))).scalars()
        )
    return found


def billed_records(conn: Connection, period: str) -> dict[str, int]:
    """Records on the period's statement lines, per grant."""
    rows = conn.execute(
        sa.select(t.statement_lines.c.grant_id, sa.func.sum(t.statement_lines.c.records))
        .join(t.statements, t.statements.c.statement_id == t.statement_lines.c.statement_id)
        .where(t.statements.c.period == period)
        .group_by(t.statement_lines.c.grant_id)
    ).all()
    return {grant_id: int(records) for grant_id, records in rows}


# ---------------------------------------------------------------------------------------------- comparing


def reconcile_scan(conn: Connection, period: str, scan: TopicScan) -> Reconciliation:
    """Compare a topic scan with the ledger and the statements of `period` (see the module doc)."""
    period = parse_period(period)
    closed = is_closed(conn, period)
    ledger = {entry.delivery_id: entry for entry in ledger_of_period(conn, period)}
    elsewhere = known_elsewhere(conn, scan.records.keys() - ledger.keys())
    owners = _grant_owners(conn)
    figures: dict[str, GrantFigures] = {}

    def of(grant_id: str, tenant_id: str = "?", dataset_id: str = "?") -> GrantFigures:
        if grant_id not in figures:
            tenant_id, dataset_id = owners.get(grant_id, (tenant_id, dataset_id))
            figures[grant_id] = GrantFigures(grant_id, tenant_id, dataset_id)
        return figures[grant_id]

    for entry in ledger.values():
        grant = of(entry.grant_id, entry.tenant_id, entry.dataset_id)
        grant.in_ledger += entry.records
        grant.set_aside += 0 if entry.billed else entry.records
        if entry.delivery_id in scan.records:
            grant.on_topic += 1
            grant.duplicates_on_topic += scan.duplicates[entry.delivery_id]
        elif not scan.retained(entry.tenant_id, entry.dataset_id, entry.delivered_at):
            grant.past_retention += entry.records
        elif entry.recorded_at <= scan.started_at:  # later rows may be of records written after the scan
            grant.not_on_topic += entry.records
    for record in scan.records.values():
        if record.delivery_id in ledger or record.delivery_id in elsewhere:
            continue  # counted above, or billed in another period
        if period_of(record.written_at) == period:
            grant = of(record.grant_id)
            grant.on_topic += 1
            grant.missing_from_ledger += 1
            grant.duplicates_on_topic += scan.duplicates[record.delivery_id]
    if closed:
        for grant_id, records in billed_records(conn, period).items():
            of(grant_id).billed = records
        for grant in figures.values():
            grant.billed = grant.billed or 0
    ordered = sorted(figures.values(), key=lambda f: (f.tenant_id, f.dataset_id, f.grant_id))
    return Reconciliation(period, closed, ordered, list(scan.unreadable))


def _grant_owners(conn: Connection) -> dict[str, tuple[str, str]]:
    rows = conn.execute(
        sa.select(authz.grants.c.grant_id, authz.grants.c.tenant_id, authz.grants.c.dataset_id)
    )
    return {grant_id: (tenant_id, dataset_id) for grant_id, tenant_id, dataset_id in rows}


def reconcile(settings: Settings, engine: Engine, period: str, codec: AvroCodec) -> Reconciliation:
    """Scan the tenant topics, then compare them with the ledger and the statements of `period`."""
    period = parse_period(period)
    with engine.connect() as conn:
        names = tenant_topics(conn, settings)
    scan = scan_tenant_topics(settings, codec, names)
    with engine.connect() as conn:
        return reconcile_scan(conn, period, scan)


# ---------------------------------------------------------------------------------------------- printing

HEADER = (
    "grant",
    "tenant",
    "dataset",
    "topic",
    "ledger",
    "set_aside",
    "billed",
    "missing_from_ledger",
    "not_on_topic",
    "ledger-billed",
)


# A topic written under another registry is unreadable record after record: name the first few, count the rest.
UNREADABLE_SHOWN = 10


def report_lines(result: Reconciliation, all_grants: bool = False) -> list[str]:
    """A table of the grants with a difference (all of them with `all_grants`), then totals and notes."""
    shown = [f for f in result.grants if all_grants or not f.clean]
    lines = []
    if shown:
        rows = [HEADER] + [_row(f) for f in shown]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        lines += [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
    state = "closed" if result.closed else "open, nothing billed yet"
    lines.append(
        f"period {result.period} ({state}): {len(result.grants)} grant(s); drift topic_vs_ledger "
        f"{result.drift('topic_vs_ledger')} record(s), ledger_vs_billed {result.drift('ledger_vs_billed')} record(s)"
    )
    expired = sum(f.past_retention for f in result.grants)
    if expired:
        lines.append(
            f"note: {expired} ledger record(s) were delivered before retention deleted them from the tenant "
            "topics; they are checked against the statements only"
        )
    duplicated = sum(f.duplicates_on_topic for f in result.grants)
    if duplicated:
        lines.append(f"note: {duplicated} redelivered copy(ies) on the tenant topics, each counted once")
    lines += [f"unreadable tenant record {where}" for where in result.unreadable[:UNREADABLE_SHOWN]]
    if len(result.unreadable) > UNREADABLE_SHOWN:
        lines.append(
            f"... and {len(result.unreadable) - UNREADABLE_SHOWN} more unreadable tenant record(s) "
            f"({len(result.unreadable)} in all)"
        )
    return lines


def _row(f: GrantFigures) -> tuple[str, ...]:
    billed = "-" if f.billed is None else str(f.billed)
    billed_gap = "-" if f.billed is None else str(f.in_ledger - f.set_aside - f.billed)
    return (
        f.grant_id,
        f.tenant_id,
        f.dataset_id,
        str(f.on_topic),
        str(f.in_ledger),
        str(f.set_aside),
        billed,
        str(f.missing_from_ledger),
        str(f.not_on_topic),
        billed_gap,
    )


# ---------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class BillingMetrics:
    period_charges: Gauge
    drift: Gauge


def billing_metrics(registry: CollectorRegistry = REGISTRY) -> BillingMetrics:
    return BillingMetrics(
        period_charges=Gauge(
            "pdo_metering_period_charges",
            "Priced usage of the current open billing period so far, per tenant and currency",
            ["tenant", "currency"],
            registry=registry,
        ),
        drift=Gauge(
            "pdo_metering_reconciliation_drift_records",
            "Records that do not reconcile in the last reconciliation (current and previous period), by check",
            ["check"],
            registry=registry,
        ),
    )


@functools.cache
def default_billing_metrics() -> BillingMetrics:
    """The gauges on prometheus_client's default registry (what a worker's metrics port serves), made once."""
    return billing_metrics()


def export_billing_metrics(
    settings: Settings,
    engine: Engine,
    now: datetime,
    metrics: BillingMetrics | None = None,
    codec: AvroCodec | None = None,
) -> list[Reconciliation]:
    """Set both billing gauges: charges of `now`'s period so far, and the drift of this month and the last.

    Blocking (Kafka, SQL): a faust timer calls it through asyncio.to_thread. One topic scan serves both
    periods. Returns the two reconciliations, previous month first.
    """
    metrics = metrics or default_billing_metrics()
    current = period_of(now)
    previous = period_of(period_start(current) - timedelta(days=1))
    with engine.connect() as conn:
        statements = compute_statements(conn, current)
        names = tenant_topics(conn, settings)
    metrics.period_charges.clear()
    charges: dict[tuple[str, str], Any] = defaultdict(int)
    for statement in statements:
        charges[(statement.tenant_id, statement.currency)] += statement.total
    for (tenant, currency), total in charges.items():
        metrics.period_charges.labels(tenant=tenant, currency=currency).set(float(total))
    scanned = _scan_with(settings, codec, names)
    with engine.connect() as conn:
        results = [reconcile_scan(conn, period, scanned) for period in (previous, current)]
    for check in CHECKS:
        metrics.drift.labels(check=check).set(sum(result.drift(check) for result in results))
    return results


def _scan_with(settings: Settings, codec: AvroCodec | None, names: dict[str, tuple[str, str]]) -> TopicScan:
    if codec is not None:
        return scan_tenant_topics(settings, codec, names)
    from pdo.core.registry_client import RegistryClient

    registry = RegistryClient.for_settings(settings)
    try:
        return scan_tenant_topics(settings, AvroCodec(registry), names)
    finally:
        registry.close()
