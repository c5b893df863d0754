"""What authorization tells the public about itself: the grants it made in a period, each with the purpose
the tenant stated, for the data group's annual disclosure (pdo.billing.disclosure).

Read-only, from authorization's own tables, so it runs where its database privileges are (the operator's CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Engine

from pdo.authorization import tables as t


@dataclass(frozen=True)
class GrantMade:
    grant_id: str
    tenant_id: str
    dataset_id: str
    purpose: str
    valid_from: datetime
    valid_until: datetime
    status: str
    granted_at: datetime
    kind: str = "ROWS"  # ROWS, or AGGREGATE (windowed aggregates only)


def grants_made_between(engine: Engine, start: datetime, end: datetime) -> list[GrantMade]:
    """Grants made in [start, end), oldest first, with their request's purpose and their status today."""
    query = (
        sa.select(
            t.grants.c.grant_id,
            t.grants.c.tenant_id,
            t.grants.c.dataset_id,
            t.requests.c.purpose,
            t.grants.c.valid_from,
            t.grants.c.valid_until,
            t.grants.c.status,
            t.grants.c.created_at.label("granted_at"),
            t.grants.c.kind,
        )
        .join(t.requests, t.requests.c.request_id == t.grants.c.request_id)
        .where(t.grants.c.created_at >= start, t.grants.c.created_at < end)
        .order_by(t.grants.c.created_at, t.grants.c.grant_id)
    )
    with engine.connect() as conn:
        return [GrantMade(**row) for row in conn.execute(query).mappings()]
