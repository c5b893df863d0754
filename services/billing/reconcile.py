"""Reconciliation: per grant and billing period, records on the tenant topics, in the ledger, and billed.

Three figures per grant, compared by delivery id, not by counts alone, so a lost record and a doubled one
cannot cancel out:

- **on the topics**: the delivery ids a topic scan found (pdo.billing.topic_scan); redelivered copies are
  reported as `duplicates on topic`, for information only.
- **in the ledger**: the grant's rows billed in the period, plus its rows delivered in the period and set
  aside for review (shown apart: they are in the ledger but never billed), read through pdo.metering.public.
- **billed**: the records on the period's statement lines for the grant (none while the period is open).

A topic record belongs to the period its ledger row is billed in (a late row counts where it was billed);
a record the ledger lacks belongs to the month of its Kafka timestamp. Two checks, each a number of records:
`topic_vs_ledger` = records on the topic missing from the ledger + ledger records not on the topic;
`ledger_vs_billed` = |billable ledger records - billed records| (closed periods only). Zero when all is well.

The topics are read first, then the ledger: a ledger row recorded after the scan began may belong to a
record written after it, so it is not counted as missing from the topic. A record delivered but not metered
yet counts as missing from the ledger until metering catches up, so an alert on the drift metric should
wait a few minutes (`for:`) before firing. An aggregate grant's windows are in the ledger but their
aggregates are on the tenant's aggregates topic, which the row scan does not read: they are counted as
`aggregate_windows` (records = aggregates published), checked against the statements only, never drift. Ledger rows delivered before retention deleted the start of their
topic cannot be found on it and are counted as `past_retention` — checked against the statements only,
never drift.

The report is printed by pdo.billing.report, and the gauges are exported by pdo.billing.gauges.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.aggregation.public import is_window_delivery
from pdo.billing import tables as t
from pdo.billing.topic_scan import TopicScan, scan_tenant_topics, tenant_topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.months import parse_period, period_of
from pdo.metering.public import grant_owners, is_closed, known_delivery_ids, ledger_of_period

CHECKS = ("topic_vs_ledger", "ledger_vs_billed")


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
    aggregate_records: int = 0  # ledger records of aggregate windows: not on a row topic, not drift

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
    elsewhere = known_delivery_ids(conn, scan.records.keys() - ledger.keys())
    owners = grant_owners(conn)
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
        if is_window_delivery(entry.delivery_id):
            grant.aggregate_records += entry.records
        elif entry.delivery_id in scan.records:
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


def reconcile(settings: Settings, engine: Engine, period: str, codec: AvroCodec) -> Reconciliation:
    """Scan the tenant topics, then compare them with the ledger and the statements of `period`."""
    period = parse_period(period)
    with engine.connect() as conn:
        names = tenant_topics(conn, settings)
    scan = scan_tenant_topics(settings, codec, names)
    with engine.connect() as conn:
        return reconcile_scan(conn, period, scan)
