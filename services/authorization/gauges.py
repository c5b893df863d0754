"""Gauges of what SQL holds for authorization: requests waiting for an operator, grants by status, and
events committed but not yet published (the outbox; above zero for long means the broker is unreachable).

Every authorization worker refreshes them on a timer (not only the leader), each from the same tables, so
whichever worker is scraped is current; dashboards and alerts take max() over the workers.
"""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlalchemy import Engine

from pdo.authorization import tables as t
from pdo.authorization.models import RequestStatus
from pdo.core.vocabulary import GrantStatus

PENDING_REQUESTS = Gauge(
    "pdo_authorization_pending_requests", "Data requests waiting for an operator's review (PENDING_REVIEW)"
)
GRANTS = Gauge("pdo_authorization_grants", "Grants by status", ["status"])
OUTBOX_PENDING = Gauge(
    "pdo_authorization_outbox_pending",
    "Request and grant events committed in SQL but not yet acknowledged by the broker (the outbox)",
)


def refresh(engine: Engine) -> None:
    """Count in one read; every status gets a value, 0 included, so a series never just vanishes."""
    with engine.connect() as connection:
        pending = connection.execute(
            sa.select(sa.func.count())
            .select_from(t.requests)
            .where(t.requests.c.status == RequestStatus.PENDING_REVIEW.value)
        ).scalar_one()
        by_status: dict[str, int] = dict(
            connection.execute(
                sa.select(t.grants.c.status, sa.func.count()).group_by(t.grants.c.status)
            ).all()
        )
        unsent = connection.execute(
            sa.select(sa.func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))
        ).scalar_one()
    PENDING_REQUESTS.set(pending)
    OUTBOX_PENDING.set(unsent)
    for status in GrantStatus:
        GRANTS.labels(status=status.value).set(by_status.get(status.value, 0))
