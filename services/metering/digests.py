"""Delivery digests: what was delivered, per grant and claim window, as a count and a Merkle root.

**Claiming.** Every `PDO_METERING_DIGEST_INTERVAL_S` the leader claims, in one transaction per (grant,
billing period), the ledger rows billed there that are in no digest yet: it sets their `digest_id` and
writes the digest row (count, RFC 6962 root of the sorted delivery ids, first and last delivered_at). The
claim is an `UPDATE … WHERE digest_id IS NULL`, so each delivery belongs to exactly one digest: a row
committed after a claim is simply left for the next one, and two claims racing for a row cannot both take
it (the second re-reads it claimed and skips it). A claim reads the period's row FOR SHARE, like the ledger
writer, so closing a period (which holds it FOR UPDATE and claims what remains, `claim_period`) never runs
beside one: the statement lines and the digests of a closed period cover the same deliveries.

**Naming.** A grant's digests in a period are numbered `seq` 1, 2, 3 … without gaps (the next is the highest
plus one, unique per grant and period: a racing claim fails on the constraint and is retried), and the id is
`<grant_id>.<period>.<seq>`. A statement line therefore names its digests by their number.

**The root.** `pdo.core.provenance.delivery_root`: the RFC 6962 Merkle root (pdo.core.merkle) over the leaves = the digest's
delivery ids sorted, UTF-8 encoded. A tenant recomputes each id from the provenance of the records on its
topic (pdo.core.provenance.delivery_id), so it can check a digest without trusting metering's ledger.

**Publishing.** `published_at` is an outbox mark: DeliveriesDigested is sent for each digest still
unmarked, oldest first, and marked once the broker acknowledged it; a crash in between sends it again with
the same event id and digest id (the audit log may then hold two entries for one digest, equal but for
their source position).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.core.provenance import delivery_root
from pdo.metering import tables as t
from pdo.metering.ledger import as_utc

ACTOR = "system:metering"
# Deliveries per digest at most: a backlog (rows written before digests existed) is claimed in several.
MAX_DELIVERIES = 100_000
DIGEST_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pdo:metering:deliveries-digested")


@dataclass(frozen=True)
class Digest:
    """One row of metering_digests."""

    digest_id: str
    grant_id: str
    tenant_id: str
    dataset_id: str
    period: str
    seq: int
    count: int
    root: bytes
    first_delivered_at: datetime
    last_delivered_at: datetime
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Digest:
        return cls(
            digest_id=row.digest_id,
            grant_id=row.grant_id,
            tenant_id=row.tenant_id,
            dataset_id=row.dataset_id,
            period=row.period,
            seq=row.seq,
            count=row.count,
            root=bytes(row.root),
            first_delivered_at=as_utc(row.first_delivered_at),
            last_delivered_at=as_utc(row.last_delivered_at),
            created_at=as_utc(row.created_at),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "digest_id": self.digest_id,
            "grant_id": self.grant_id,
            "tenant_id": self.tenant_id,
            "dataset_id": self.dataset_id,
            "period": self.period,
            "seq": self.seq,
            "count": self.count,
            "root": self.root.hex(),
            "first_delivered_at": self.first_delivered_at.isoformat(),
            "last_delivered_at": self.last_delivered_at.isoformat(),
            "created_at": self.created_at.isoformat(),
        }


def digest_id(grant_id: str, period: str, seq: int) -> str:
    return f"{grant_id}.{period}.{seq}"


# ---------------------------------------------------------------------------------------------- claiming


def claim_due(engine: Engine, now: datetime) -> list[Digest]:
    """Claim every (grant, period) with undigested billed rows, one transaction each; the digests made."""
    with engine.connect() as conn:
        pending = _undigested(conn, None)
    made: list[Digest] = []
    for grant_id, period in pending:
        with engine.begin() as conn:
            _share_period(conn, period)
            made += _claim_all(conn, grant_id, period, now)
    return made


def claim_period(conn: Connection, period: str, now: datetime) -> list[Digest]:
    """Claim what remains of `period` for every grant, in the caller's transaction (which holds the period's
    row FOR UPDATE while closing it, so nothing is billed into it meanwhile)."""
    made: list[Digest] = []
    for grant_id, _ in _undigested(conn, period):
        made += _claim_all(conn, grant_id, period, now)
    return made


def _undigested(conn: Connection, period: str | None) -> list[tuple[str, str]]:
    c = t.ledger.c
    query = (
        sa.select(c.grant_id, c.billing_period)
        .where(c.digest_id.is_(None), c.billing_period.is_not(None))
        .distinct()
        .order_by(c.grant_id, c.billing_period)
    )
    if period is not None:
        query = query.where(c.billing_period == period)
    return [(grant_id, billed_in) for grant_id, billed_in in conn.execute(query).tuples()]


def _share_period(conn: Connection, period: str) -> None:
    """Read the period's row FOR SHARE: a close (FOR UPDATE) waits for this claim, or this claim for it."""
    conn.execute(sa.select(t.periods.c.period).where(t.periods.c.period == period).with_for_update(read=True))


def _claim_all(conn: Connection, grant_id: str, period: str, now: datetime) -> list[Digest]:
    made = []
    while (digest := claim(conn, grant_id, period, now)) is not None:
        made.append(digest)
        if digest.count < MAX_DELIVERIES:
            break
    return made


def claim(
    conn: Connection, grant_id: str, period: str, now: datetime, limit: int = MAX_DELIVERIES
) -> Digest | None:
    """Claim up to `limit` of the grant's undigested rows billed in `period` (oldest first) into a new
    digest, in the caller's transaction; None when there were none."""
    d = t.digests.c
    last = conn.execute(
        sa.select(sa.func.max(d.seq)).where(d.grant_id == grant_id, d.period == period)
    ).scalar()
    seq = (last or 0) + 1
    new_id = digest_id(grant_id, period, seq)
    c = t.ledger.c
    unclaimed = (c.grant_id == grant_id, c.billing_period == period, c.digest_id.is_(None))
    oldest = sa.select(c.delivery_id).where(*unclaimed).order_by(c.delivered_at, c.delivery_id).limit(limit)
    claimed = conn.execute(
        t.ledger.update()
        # digest_id IS NULL again here: PostgreSQL re-checks it on a row a racing claim took meanwhile.
        .where(c.delivery_id.in_(oldest), *unclaimed)
        .values(digest_id=new_id)
        .returning(c.delivery_id, c.delivered_at, c.tenant_id, c.dataset_id)
    ).all()
    if not claimed:
        return None
    delivered = sorted(as_utc(row.delivered_at) for row in claimed)
    digest = Digest(
        digest_id=new_id,
        grant_id=grant_id,
        tenant_id=claimed[0].tenant_id,
        dataset_id=claimed[0].dataset_id,
        period=period,
        seq=seq,
        count=len(claimed),
        root=delivery_root(row.delivery_id for row in claimed),
        first_delivered_at=delivered[0],
        last_delivered_at=delivered[-1],
        created_at=now,
    )
    conn.execute(t.digests.insert().values(**digest.__dict__))
    return digest


# ---------------------------------------------------------------------------------------------- reading


def list_digests(
    conn: Connection,
    tenant_id: str | None = None,
    grant_id: str | None = None,
    period: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[Digest]:
    """Digests by period, grant and seq, narrowed to what is given."""
    d = t.digests.c
    query = sa.select(t.digests).order_by(d.period, d.grant_id, d.seq).limit(limit).offset(offset)
    for column, value in ((d.tenant_id, tenant_id), (d.grant_id, grant_id), (d.period, period)):
        if value is not None:
            query = query.where(column == value)
    return [Digest.from_row(row) for row in conn.execute(query)]


def get_digest(conn: Connection, digest: str) -> Digest | None:
    row = conn.execute(sa.select(t.digests).where(t.digests.c.digest_id == digest)).first()
    return None if row is None else Digest.from_row(row)


def delivery_ids(conn: Connection, digest: str) -> list[str]:
    """The delivery ids claimed into `digest`, sorted: the leaves of its root."""
    query = sa.select(t.ledger.c.delivery_id).where(t.ledger.c.digest_id == digest)
    return sorted(conn.execute(query).scalars())


def digest_counts(conn: Connection, period: str) -> dict[str, int]:
    """How many digests each grant has in `period` (its highest seq: they are numbered without gaps)."""
    d = t.digests.c
    query = sa.select(d.grant_id, sa.func.max(d.seq)).where(d.period == period).group_by(d.grant_id)
    return {grant_id: int(count) for grant_id, count in conn.execute(query).tuples()}


def undigested_rows(conn: Connection, period: str) -> dict[str, int]:
    """Per grant, the rows billed in `period` that are in no digest (0 everywhere once a close claimed them)."""
    c = t.ledger.c
    query = (
        sa.select(c.grant_id, sa.func.count())
        .where(c.billing_period == period, c.digest_id.is_(None))
        .group_by(c.grant_id)
    )
    return {grant_id: int(count) for grant_id, count in conn.execute(query).tuples()}


# ---------------------------------------------------------------------------------------------- publishing


def unpublished(engine: Engine, limit: int) -> list[Digest]:
    """Digests the broker has not acknowledged yet, oldest first."""
    d = t.digests.c
    query = (
        sa.select(t.digests).where(d.published_at.is_(None)).order_by(d.created_at, d.digest_id).limit(limit)
    )
    with engine.connect() as conn:
        return [Digest.from_row(row) for row in conn.execute(query)]


def mark_published(engine: Engine, digest: Digest, at: datetime) -> None:
    d = t.digests.c
    with engine.begin() as conn:
        conn.execute(
            t.digests.update()
            .where(d.digest_id == digest.digest_id, d.published_at.is_(None))
            .values(published_at=at)
        )


def deliveries_digested_event(digest: Digest) -> dict[str, Any]:
    """DeliveriesDigested for one digest; its event id is derived from the digest id, so a resend is the same."""
    return {
        "event_id": str(uuid.uuid5(DIGEST_EVENT_NAMESPACE, digest.digest_id)),
        "occurred_at": digest.created_at,
        "actor": ACTOR,
        "digest_id": digest.digest_id,
        "grant_id": digest.grant_id,
        "tenant_id": digest.tenant_id,
        "dataset_id": digest.dataset_id,
        "period": digest.period,
        "count": digest.count,
        "root": digest.root.hex(),
        "first_delivered_at": digest.first_delivered_at,
        "last_delivered_at": digest.last_delivered_at,
    }
