"""The authorization outbox: a grant's state in SQL and its events on Kafka agree by construction.

**Guarantee.** Every request and grant event is written as a row of `authz_outbox` in the SAME SQL
transaction as the state change and its history row (`stage`). So an event exists if and only if its change
committed: a rolled-back change never reaches a topic, and a committed one is published — maybe a moment
later — once the broker takes it. Grant versions come from the committed row only, and `authz_outbox` holds
at most one event per (grant, version) (a unique constraint), so a version is never reused.

**Publishing** is the shared relay's (pdo.core.outbox: in `id` order, one relay at a time under the lease
row of `authz_outbox_lease`). A grant's transitions are serialised by the grant's row, so its later event
always has a larger `id`: one relay sending in `id` order sends each grant's events in version order. Should
a relay stall past its lease and another take over, an event may go out twice; that is harmless because
every consumer applies grant versions monotonically (sharing's GrantBook and the projection keep a snapshot
only if its version is newer).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.authorization import tables as t
from pdo.core import outbox as shared
from pdo.core.events import utc_now
from pdo.core.outbox import BATCH_ROWS, LEASE_RETRY_S, SENT_RETENTION, PromptPublisher, Publisher
from pdo.core.topics import TopicId

__all__ = [
    "BATCH_ROWS",
    "LEASE_NAME",
    "LEASE_RETRY_S",
    "OUTBOX",
    "SENT_RETENTION",
    "OutboxRelay",
    "PromptPublisher",
    "Publisher",
    "pending_count",
    "pending_in",
    "prune_sent",
    "stage",
    "unpublished_grant_versions",
]

LEASE_NAME = "authorization-outbox"
OUTBOX = shared.Outbox(t.outbox, t.outbox_lease, LEASE_NAME)


def stage(
    conn: Connection,
    topic: TopicId,
    schema_name: str,
    value: dict[str, Any],
    key: str,
    grant_version: int | None = None,
) -> None:
    """Add the event to the outbox inside the caller's transaction; it is published once that commits."""
    OUTBOX.stage(conn, topic, schema_name, value, key, grant_version=grant_version)


def pending_count(engine: Engine) -> int:
    return OUTBOX.pending_count(engine)


def pending_in(conn: Connection) -> int:
    """Events committed but not yet acknowledged by the broker."""
    return OUTBOX.pending_in(conn)


def prune_sent(engine: Engine, now: datetime, keep: timedelta = SENT_RETENTION) -> int:
    """Delete rows the broker acknowledged more than `keep` ago; how many. Unsent rows are never pruned."""
    return OUTBOX.prune_sent(engine, now, keep)


def unpublished_grant_versions(conn: Connection, grant_id: str | None = None) -> set[tuple[str, int]]:
    """(grant id, version) of every grant event still waiting in the outbox (of one grant if given).

    A version not in it is on the topic: published by the relay, written before the outbox existed, or
    rebuilt from the topic."""
    query = sa.select(t.outbox.c.event_key, t.outbox.c.grant_version).where(
        t.outbox.c.sent_at.is_(None), t.outbox.c.grant_version.is_not(None)
    )
    if grant_id is not None:
        query = query.where(t.outbox.c.event_key == grant_id)
    return {(key, version) for key, version in conn.execute(query)}


class OutboxRelay(shared.OutboxRelay):
    """The shared relay over the authorization outbox."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        lease: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(OUTBOX, engine, publisher, lease, clock)
