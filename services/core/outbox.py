"""A transactional outbox: a service's state in SQL and its events on Kafka agree by construction.

**Guarantee.** An event is written as a row of the service's outbox table in the SAME SQL transaction as the
state change it describes (`Outbox.stage`). So an event exists if and only if its change committed: a
rolled-back change never reaches a topic, and a committed one is published — maybe a moment later — once
the broker takes it.

**Publishing** (`OutboxRelay.publish_pending`) sends unsent rows in `id` order and marks them sent only
after the broker acknowledged each. One relay publishes at a time, whatever the number of processes: it
first takes a lease (one row of the service's lease table, an UPDATE that succeeds only when the lease is
free or expired — plain SQL, the same on SQLite and PostgreSQL, and no lock is held while it talks to
Kafka). Should a relay stall past its lease and another take over, an event may go out twice; consumers
drop duplicates by `event_id` (the audit log by source position and event id alike).

The value is stored as its Avro body (schemaless, the event's own schema), so a value that does not fit
its schema fails inside the transaction, and the relay publishes exactly what was committed.

Each service declares its own tables (`outbox_tables` in its tables.py, made by a migration with the lease
row) and holds an `Outbox` over them; nothing here knows which service it serves.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol, cast

import fastavro
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.core import schemas
from pdo.core.events import utc_now
from pdo.core.topics import TopicId

log = logging.getLogger(__name__)

BATCH_ROWS = 500
# While another relay holds the lease, a prompt publish looks again this often (until its wait is over).
LEASE_RETRY_S = 0.01
# Sent rows are kept this long (to see what went out when), then pruned by the worker's clock.
SENT_RETENTION = timedelta(days=7)


class Publisher(Protocol):
    def publish(
        self, topic: TopicId, schema_name: str, value: dict[str, Any], key: str | None = None
    ) -> tuple[str, int, int]: ...


def outbox_tables(metadata: sa.MetaData, service: str) -> tuple[sa.Table, sa.Table]:
    """The rows table `<service>_outbox` and the lease table `<service>_outbox_lease` of one service."""
    rows = sa.Table(
        f"{service}_outbox",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("schema_name", sa.String(255), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Index(f"ix_{service}_outbox_sent_at", "sent_at", "id"),
    )
    lease = sa.Table(
        f"{service}_outbox_lease",
        metadata,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    return rows, lease


@dataclass(frozen=True)
class Outbox:
    """One service's outbox: its rows table, its lease table and the name of the lease row."""

    rows: sa.Table
    lease: sa.Table
    lease_name: str

    def stage(
        self,
        conn: Connection,
        topic: TopicId,
        schema_name: str,
        value: dict[str, Any],
        key: str,
        **columns: Any,
    ) -> None:
        """Add the event inside the caller's transaction; it is published once that commits. `columns` fill
        the service's own extra columns (e.g. authorization's grant version)."""
        conn.execute(
            self.rows.insert().values(
                topic=topic.value,
                schema_name=schema_name,
                event_key=key,
                body=_encode(schema_name, value),
                created_at=utc_now(),
                **columns,
            )
        )

    def pending_in(self, conn: Connection) -> int:
        """Events committed but not yet acknowledged by the broker."""
        query = sa.select(sa.func.count()).select_from(self.rows).where(self.rows.c.sent_at.is_(None))
        return conn.execute(query).scalar_one()

    def pending_count(self, engine: Engine) -> int:
        with engine.connect() as conn:
            return self.pending_in(conn)

    def prune_sent(self, engine: Engine, now: datetime, keep: timedelta = SENT_RETENTION) -> int:
        """Delete rows the broker acknowledged more than `keep` ago; how many. Unsent rows are never pruned."""
        with engine.begin() as conn:
            return conn.execute(self.rows.delete().where(self.rows.c.sent_at < now - keep)).rowcount

    def unsent(self, conn: Connection) -> list[tuple[str, dict[str, Any]]]:
        """(schema name, value) of each event still waiting, decoded, in order (what an operator or a test
        looks at)."""
        query = sa.select(self.rows).where(self.rows.c.sent_at.is_(None)).order_by(self.rows.c.id)
        return [(row.schema_name, _decode(row.schema_name, row.body)) for row in conn.execute(query)]


class OutboxRelay:
    """Publishes an outbox's unsent rows in order; any number of relays may run, one publishes at a time."""

    def __init__(
        self,
        outbox: Outbox,
        engine: Engine,
        publisher: Publisher,
        lease: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.outbox = outbox
        self.engine = engine
        self.publisher = publisher
        self.lease = lease
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def pending_count(self) -> int:
        return self.outbox.pending_count(self.engine)

    def publish_pending(self, limit: int = BATCH_ROWS) -> int:
        """Send up to `limit` unsent rows; how many the broker acknowledged (0 when another relay holds the
        lease). A send that fails stops the round: the row and those after it wait for the next one, so
        nothing overtakes an unsent event. Raises what the publisher raised, after recording what was sent."""
        # Looking first is one cheap read; taking the lease when there is nothing to send would only make
        # a relay with work (a process that has just committed) wait for it.
        if self.pending_count() == 0 or not self._take_lease():
            return 0
        sent: list[int] = []
        try:
            for row in self._unsent(limit):
                value = _decode(row.schema_name, row.body)
                self.publisher.publish(TopicId(row.topic), row.schema_name, value, key=row.event_key)
                sent.append(row.id)
        finally:
            self._mark_sent(sent)
            self._release_lease()
        return len(sent)

    def publish_all(self) -> int:
        """Publish until nothing is pending (or another relay holds the lease)."""
        total = 0
        while (done := self.publish_pending()) > 0:
            total += done
        return total

    def _take_lease(self) -> bool:
        now = self.clock()
        lease = self.outbox.lease
        with self.engine.begin() as conn:
            taken = conn.execute(
                lease.update()
                .where(lease.c.name == self.outbox.lease_name)
                # Free or expired only: not even this relay's own holder, so two threads of one process
                # (a prompt publish and the worker's timer) never publish at the same time either.
                .where(sa.or_(lease.c.holder.is_(None), lease.c.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.lease)
            )
            return taken.rowcount == 1

    def _release_lease(self) -> None:
        lease = self.outbox.lease
        with self.engine.begin() as conn:
            conn.execute(
                lease.update()
                .where(lease.c.name == self.outbox.lease_name)
                .where(lease.c.holder == self.holder)
                .values(holder=None, expires_at=None)
            )

    def _unsent(self, limit: int) -> list[Any]:
        rows = self.outbox.rows
        query = sa.select(rows).where(rows.c.sent_at.is_(None)).order_by(rows.c.id).limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def _mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        rows = self.outbox.rows
        with self.engine.begin() as conn:
            conn.execute(rows.update().where(rows.c.id.in_(ids)).values(sent_at=self.clock()))


class PromptPublisher:
    """Publishes the outbox right after a commit, on a thread of its own, waiting at most `wait_s`.

    The caller (an operator's HTTP request, a worker's decision) gets its answer promptly even when the
    broker is down; the change is committed, and a later round publishes it. At most one round runs and one
    waits, so a burst of commits while the broker is away does not pile up threads.
    """

    def __init__(self, relay: OutboxRelay, wait_s: float) -> None:
        self.relay = relay
        self.wait_s = wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdo-outbox")
        self._lock = threading.Lock()
        self._queued: Future[None] | None = None

    def publish_soon(self) -> None:
        with self._lock:
            queued = self._queued
            if queued is None or queued.running() or queued.done():
                # A round already running may have read the outbox before this commit: queue another.
                queued = self._queued = self._executor.submit(self._publish, time.monotonic() + self.wait_s)
        try:
            queued.result(timeout=self.wait_s)
        except FutureTimeout:
            log.warning("the outbox is still being published; the change is committed, its event follows")
        except Exception as error:  # committed; a later round retries until the broker takes it
            log.warning("committed, but its event is not published yet (%s); the relay retries", error)

    def _publish(self, deadline: float) -> None:
        while True:
            self.relay.publish_all()
            if self.relay.pending_count() == 0 or time.monotonic() >= deadline:
                return
            time.sleep(LEASE_RETRY_S)  # another relay holds the lease: it or this loop will publish


def _encode(schema_name: str, value: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, _parsed(schema_name), value)
    return body.getvalue()


def _decode(schema_name: str, body: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(body), _parsed(schema_name), None))


@cache
def _parsed(schema_name: str) -> Any:
    return fastavro.parse_schema(json.loads(str(schemas.get(schema_name))))
