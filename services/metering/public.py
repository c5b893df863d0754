"""Metering's public module: what other packages (billing, the gateway, entry points) may read of metering.

Other packages import this module, never metering's tables or internals. Every function takes the caller's
connection, so billing can read the ledger and write its statements in one transaction.

**The period lock protocol** (the ledger keeps its side, pdo.metering.ledger): a ledger transaction reads
the `metering_periods` rows of the periods it bills into FOR SHARE and bills only into open ones; closing a
period is `lock_period` (the row made to exist and read FOR UPDATE, so the close waits for ledger
transactions still billing into it) then `mark_closed`, in the closer's transaction: later ledger
transactions see the period closed and bill late facts into the next open one.

**Delivery digests** (pdo.metering.digests): closing a period calls `claim_period` in the closer's
transaction, after `lock_period`, so the period's digests cover exactly the rows billed in it; a statement
line names its grant's digests 1..`digest_counts`[grant] by `digest_id`.

Grants and datasets come from metering's projection of the authorization and catalog events
(pdo.metering.projection), never from those services' tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.core.db import dialect_insert
from pdo.core.events import event_head
from pdo.core.months import period_end, period_start
from pdo.core.names import Event
from pdo.core.outbox import Publisher
from pdo.core.topics import TopicId
from pdo.metering import outbox
from pdo.metering import tables as t
from pdo.metering.digests import Digest as Digest
from pdo.metering.digests import claim_period as claim_period  # the close's claim of what remains
from pdo.metering.digests import delivery_ids as delivery_ids  # a digest's sorted delivery ids
from pdo.metering.digests import digest_counts as digest_counts
from pdo.metering.digests import digest_id as digest_id
from pdo.metering.digests import get_digest as get_digest
from pdo.metering.digests import list_digests as list_digests
from pdo.metering.digests import undigested_rows as undigested_rows
from pdo.metering.ledger import as_utc
from pdo.metering.outbox import OUTBOX
from pdo.metering.usage import UsageWindow as UsageWindow
from pdo.metering.usage import list_windows as list_windows  # usage windows, newest first (the API, the CLI)

CHUNK = 500  # ids per IN (...) list: bounded statements on both databases


@dataclass(frozen=True)
class GrantUsage:
    """A grant's ledger usage billed in one period."""

    tenant_id: str
    dataset_id: str
    grant_id: str
    records: int
    bytes: int


@dataclass(frozen=True)
class SetAsideRow:
    """A ledger row delivered in the period but set aside for review: never billed."""

    delivery_id: str
    tenant_id: str
    dataset_id: str
    grant_id: str
    records: int
    bytes: int
    delivered_at: datetime
    reason: str


@dataclass(frozen=True)
class LedgerEntry:
    """A ledger row as reconciliation compares it."""

    delivery_id: str
    grant_id: str
    tenant_id: str
    dataset_id: str
    records: int
    billed: bool  # False: set aside
    delivered_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class PeriodState:
    period: str
    closed_at: datetime | None
    closed_by: str | None


# ---------------------------------------------------------------------------------------------- periods


def lock_period(conn: Connection, period: str) -> PeriodState:
    """Make the period's row exist and lock it FOR UPDATE until the caller's transaction ends; its state."""
    conn.execute(
        dialect_insert(conn, t.periods)
        .values(period=period)
        .on_conflict_do_nothing(index_elements=["period"])
    )
    row = conn.execute(sa.select(t.periods).where(t.periods.c.period == period).with_for_update()).one()
    return PeriodState(row.period, as_utc(row.closed_at) if row.closed_at else None, row.closed_by)


def mark_closed(conn: Connection, period: str, closed_at: datetime, closed_by: str) -> None:
    """Close a period `lock_period` locked in this transaction: no ledger row is billed into it any more."""
    conn.execute(
        t.periods.update()
        .where(t.periods.c.period == period)
        .values(closed_at=closed_at, closed_by=closed_by)
    )


def record_period_closed(conn: Connection, period: str, closed_by: str, statements: int) -> None:
    """Stage the PeriodClosed event in metering's outbox, in the transaction that closes the period: the
    period is closed if and only if its event is committed (the worker's relay publishes it)."""
    event = {**event_head(closed_by), "period": period, "statements": statements, "reason": None}
    OUTBOX.stage(conn, TopicId.ACCESS, Event.PERIOD_CLOSED, event, closed_by)


def publish_access_events(engine: Engine, publisher: Publisher, kafka_timeout_s: float) -> int:
    """Publish metering's outbox now (the closing command, right after its commit); how many went out.
    What cannot go out now waits for the metering worker's relay."""
    return outbox.relay(engine, publisher, kafka_timeout_s).publish_all()


def is_closed(conn: Connection, period: str) -> bool:
    closed = conn.execute(sa.select(t.periods.c.closed_at).where(t.periods.c.period == period)).scalar()
    return closed is not None


# ---------------------------------------------------------------------------------------------- ledger


def billed_usage(conn: Connection, period: str) -> list[GrantUsage]:
    """Records and bytes billed in `period`, per grant."""
    rows = conn.execute(
        sa.select(
            t.ledger.c.tenant_id,
            t.ledger.c.dataset_id,
            t.ledger.c.grant_id,
            sa.func.sum(t.ledger.c.records).label("records"),
            sa.func.sum(t.ledger.c.bytes).label("bytes"),
        )
        .where(t.ledger.c.billing_period == period)
        .group_by(t.ledger.c.tenant_id, t.ledger.c.dataset_id, t.ledger.c.grant_id)
    )
    return [GrantUsage(r.tenant_id, r.dataset_id, r.grant_id, int(r.records), int(r.bytes)) for r in rows]


def _set_aside_in(period: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        t.ledger.c.billing_period.is_(None),
        t.ledger.c.delivered_at >= period_start(period),
        t.ledger.c.delivered_at < period_end(period),
    )


def set_aside_rows(conn: Connection, period: str) -> list[SetAsideRow]:
    """Ledger rows delivered in `period` that were set aside for review instead of billed, oldest first."""
    rows = conn.execute(
        sa.select(t.ledger)
        .where(_set_aside_in(period))
        .order_by(t.ledger.c.delivered_at, t.ledger.c.delivery_id)
    )
    return [
        SetAsideRow(
            row.delivery_id,
            row.tenant_id,
            row.dataset_id,
            row.grant_id,
            row.records,
            row.bytes,
            as_utc(row.delivered_at),
            row.set_aside_reason,
        )
        for row in rows
    ]


def set_aside_records_by_dataset(conn: Connection, period: str) -> dict[str, int]:
    """Records delivered in `period` and set aside, per dataset."""
    rows = conn.execute(
        sa.select(t.ledger.c.dataset_id, sa.func.sum(t.ledger.c.records))
        .where(_set_aside_in(period))
        .group_by(t.ledger.c.dataset_id)
    ).all()
    return {dataset_id: int(records) for dataset_id, records in rows}


def ledger_of_period(conn: Connection, period: str) -> list[LedgerEntry]:
    """Rows billed in `period`, and rows delivered in it but set aside."""
    c = t.ledger.c
    query = sa.select(
        c.delivery_id,
        c.grant_id,
        c.tenant_id,
        c.dataset_id,
        c.records,
        c.billing_period,
        c.delivered_at,
        c.recorded_at,
    ).where(sa.or_(c.billing_period == period, _set_aside_in(period)))
    return [
        LedgerEntry(
            row.delivery_id,
            row.grant_id,
            row.tenant_id,
            row.dataset_id,
            row.records,
            row.billing_period is not None,
            as_utc(row.delivered_at),
            as_utc(row.recorded_at),
        )
        for row in conn.execute(query)
    ]


def known_delivery_ids(conn: Connection, ids: Iterable[str]) -> set[str]:
    """Which of `ids` the ledger holds at all."""
    ordered = sorted(ids)
    found: set[str] = set()
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        found.update(
            conn.execute(sa.select(t.ledger.c.delivery_id).where(t.ledger.c.delivery_id.in_(chunk))).scalars()
        )
    return found


# ---------------------------------------------------------------------------------------------- projection


def grant_price_plans(conn: Connection, grant_ids: Iterable[str]) -> dict[str, str]:
    """Each known grant's price plan (JSON, as authorization keeps it); unknown grants are left out."""
    ordered = sorted(set(grant_ids))
    plans: dict[str, str] = {}
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        rows = conn.execute(
            sa.select(t.grants.c.grant_id, t.grants.c.price_plan).where(t.grants.c.grant_id.in_(chunk))
        )
        plans.update((row.grant_id, row.price_plan) for row in rows)
    return plans


def grant_owners(conn: Connection) -> dict[str, tuple[str, str]]:
    """(tenant, dataset) of every grant metering knows."""
    rows = conn.execute(sa.select(t.grants.c.grant_id, t.grants.c.tenant_id, t.grants.c.dataset_id))
    return {grant_id: (tenant_id, dataset_id) for grant_id, tenant_id, dataset_id in rows}


def tenant_dataset_pairs(conn: Connection) -> set[tuple[str, str]]:
    """Every (tenant, dataset) a known grant or a ledger row names."""
    pairs = set(conn.execute(sa.select(t.grants.c.tenant_id, t.grants.c.dataset_id).distinct()).tuples())
    pairs |= set(conn.execute(sa.select(t.ledger.c.tenant_id, t.ledger.c.dataset_id).distinct()).tuples())
    return pairs


def dataset_names(conn: Connection) -> dict[str, tuple[str, str]]:
    """(title, provider_id) of every dataset metering knows, retired ones included."""
    rows = conn.execute(sa.select(t.datasets.c.dataset_id, t.datasets.c.title, t.datasets.c.provider_id))
    return {dataset_id: (title, provider) for dataset_id, title, provider in rows}


def dataset_lineage(conn: Connection) -> dict[str, tuple[str, ...]]:
    """The sources of every dataset metering knows to be derived (retired ones included), in id order."""
    query = sa.select(t.datasets.c.dataset_id, t.datasets.c.derived_from).where(
        t.datasets.c.derived_from != "[]"
    )
    return {dataset_id: tuple(json.loads(sources)) for dataset_id, sources in conn.execute(query)}


def datasets_of_provider(conn: Connection, provider_id: str) -> set[str]:
    """Ids of the datasets `provider_id` publishes, retired ones included (a provider's own asset report)."""
    query = sa.select(t.datasets.c.dataset_id).where(t.datasets.c.provider_id == provider_id)
    return set(conn.execute(query).scalars())
