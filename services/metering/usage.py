"""Reading what the ledger transaction wrote: usage windows (for the API, the CLI and the UsageRecorded
publisher) and quota notices still to publish. Blocking SQL; callers on an event loop use a thread.

UsageRecorded is published for a window once it has closed (window_end + grace has passed), once per window
version: a late fact that changes a published window bumps its version and the window is published again.
Consumers keep the newest event per (grant_id, window, window_start) — the one with the highest
`occurred_at`; the event id is derived from the window and its version, so a re-send of the same version
(a crash between the broker's ack and marking it published) carries the same id and can be dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from pdo.core.events import utc_now
from pdo.metering import tables as t
from pdo.metering.ledger import WINDOW_LENGTHS, QuotaNotice, as_utc

ACTOR = "system:metering"
USAGE_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pdo:metering:usage-recorded")


@dataclass(frozen=True)
class UsageWindow:
    """One row of metering_windows."""

    tenant_id: str
    dataset_id: str
    grant_id: str
    window: str
    window_start: datetime
    window_end: datetime
    records: int
    bytes: int
    version: int

    @classmethod
    def from_row(cls, row: Any) -> UsageWindow:
        return cls(
            tenant_id=row.tenant_id,
            dataset_id=row.dataset_id,
            grant_id=row.grant_id,
            window=row.window_kind,
            window_start=as_utc(row.window_start),
            window_end=as_utc(row.window_end),
            records=row.records,
            bytes=row.bytes,
            version=row.version,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "dataset_id": self.dataset_id,
            "grant_id": self.grant_id,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "records": self.records,
            "bytes": self.bytes,
        }


def list_windows(
    engine: Engine,
    window: str,
    since: datetime,
    until: datetime,
    tenant_id: str | None = None,
    dataset_ids: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[UsageWindow]:
    """Windows of one kind starting in [since, until), newest first; narrowed to a tenant and/or datasets."""
    if window not in WINDOW_LENGTHS:
        raise ValueError(f"window must be one of {sorted(WINDOW_LENGTHS)}, not {window!r}")
    w = t.windows.c
    query = (
        sa.select(t.windows)
        .where(w.window_kind == window, w.window_start >= since, w.window_start < until)
        .order_by(w.window_start.desc(), w.tenant_id, w.dataset_id, w.grant_id)
    )
    if tenant_id is not None:
        query = query.where(w.tenant_id == tenant_id)
    if dataset_ids is not None:
        query = query.where(w.dataset_id.in_(sorted(set(dataset_ids))))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [UsageWindow.from_row(row) for row in conn.execute(query)]


# ---------------------------------------------------------------------------------------------- publishing


def closed_unpublished(engine: Engine, now: datetime, grace: timedelta, limit: int) -> list[UsageWindow]:
    """Windows closed by `now - grace` whose current version is not published yet, oldest first."""
    w = t.windows.c
    query = (
        sa.select(t.windows)
        .where(w.window_end <= now - grace, w.version > w.published_version)
        .order_by(w.window_end, w.grant_id, w.window_kind)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [UsageWindow.from_row(row) for row in conn.execute(query)]


def mark_window_published(engine: Engine, window: UsageWindow) -> None:
    """Record that `window` was published at its version (never lowering a newer mark)."""
    w = t.windows.c
    with engine.begin() as conn:
        conn.execute(
            t.windows.update()
            .where(
                w.grant_id == window.grant_id,
                w.window_kind == window.window,
                w.window_start == window.window_start,
                w.published_version < window.version,
            )
            .values(published_version=window.version)
        )


def usage_recorded_event(window: UsageWindow) -> dict[str, Any]:
    """UsageRecorded for one window version; the event id is stable per window and version."""
    key = f"{window.grant_id}|{window.window}|{window.window_start.isoformat()}|{window.version}"
    return {
        "event_id": str(uuid.uuid5(USAGE_EVENT_NAMESPACE, key)),
        "occurred_at": utc_now(),
        "actor": ACTOR,
        "tenant_id": window.tenant_id,
        "dataset_id": window.dataset_id,
        "grant_id": window.grant_id,
        "window": window.window,
        "window_start": window.window_start,
        "window_end": window.window_end,
        "records": window.records,
        "bytes": window.bytes,
    }


# ---------------------------------------------------------------------------------------------- quota notices


def pending_notices(engine: Engine, limit: int = 100) -> list[QuotaNotice]:
    """Quota notices the broker has not acknowledged yet, oldest first."""
    n = t.quota_notices.c
    query = sa.select(t.quota_notices).where(n.published_at.is_(None)).order_by(n.noticed_at).limit(limit)
    with engine.connect() as conn:
        return [
            QuotaNotice(
                row.grant_id,
                row.tenant_id,
                row.dataset_id,
                _day(row.day),
                row.quota_records,
                row.used_records,
                row.event_id,
            )
            for row in conn.execute(query)
        ]


def mark_notice_published(engine: Engine, notice: QuotaNotice, at: datetime) -> None:
    n = t.quota_notices.c
    with engine.begin() as conn:
        conn.execute(
            t.quota_notices.update()
            .where(n.grant_id == notice.grant_id, n.day == notice.day, n.published_at.is_(None))
            .values(published_at=at)
        )


def quota_exceeded_event(notice: QuotaNotice) -> dict[str, Any]:
    return {
        "event_id": notice.event_id,
        "occurred_at": utc_now(),
        "actor": ACTOR,
        "grant_id": notice.grant_id,
        "tenant_id": notice.tenant_id,
        "dataset_id": notice.dataset_id,
        "day": notice.day,
        "quota_records": notice.quota_records,
        "used_records": notice.used_records,
    }


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
