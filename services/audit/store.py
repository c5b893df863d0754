"""The append-only audit log in SQL: entries numbered 0, 1, 2, ... without gaps, and signed checkpoints.

Guarantee: `append` adds a batch in one transaction, serialised against every other writer (an exclusive
table lock on PostgreSQL; SQLite has one writer at a time), after the entries already there and never twice
for one `source`. Each entry's body is its canonical JSON and its leaf hash is computed from those bytes,
so the rows alone are enough to rebuild and verify the tree. Every append transaction, and `mark_appendable`
(the worker's timer), also writes the log's liveness mark (pdo.audit.liveness): it commits exactly when
the log took a write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pdo.audit import liveness
from pdo.audit.checkpoints import Checkpoint, Signer
from pdo.audit.tables import checkpoints, entries, mirror_progress
from pdo.core import merkle
from pdo.core.errors import InvalidInput


@dataclass(frozen=True)
class Entry:
    """One act: who (`actor`) did what (`action`) to what (`subject`), why, and where it was read from."""

    actor: str
    action: str
    subject: str
    reason: str | None
    source: str
    occurred_at: datetime
    details: Mapping[str, str] = field(default_factory=dict)

    def body(self, seq: int) -> str:
        """The canonical JSON the leaf hash covers (sorted keys, no spaces, UTF-8)."""
        return json.dumps(
            {
                "seq": seq,
                "occurred_at": iso_millis(self.occurred_at),
                "actor": self.actor,
                "action": self.action,
                "subject": self.subject,
                "reason": self.reason,
                "source": self.source,
                "details": dict(self.details),
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )


def iso_millis(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise InvalidInput(f"{moment!r} has no time zone", hint="audit times are aware UTC datetimes")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class LoggedEntry:
    """An entry as the log holds it: its leaf index, canonical body and stored leaf hash."""

    seq: int
    body: str
    leaf_hash: bytes


class AuditStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def append(self, batch: Sequence[Entry]) -> int:
        """Appends, in order, the entries whose source the log does not hold yet; returns how many."""
        with self.engine.begin() as connection:
            _serialise_appends(connection)
            fresh = _not_yet_logged(connection, batch)
            # After the highest seq, not the count: a deleted row must never be hidden by reusing its number.
            last_seq = connection.execute(sa.select(sa.func.max(entries.c.seq))).scalar_one()
            next_seq = 0 if last_seq is None else last_seq + 1
            now = datetime.now(UTC)
            rows = [_row(entry, next_seq + offset, now) for offset, entry in enumerate(fresh)]
            if rows:
                connection.execute(entries.insert(), rows)
            liveness.mark(connection, next_seq + len(rows), now)
        return len(rows)

    def mark_appendable(self) -> None:
        """Write the liveness mark alone (a write transaction: reading would not prove the log appendable)."""
        with self.engine.begin() as connection:
            liveness.mark(connection)

    def size(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(entries)).scalar_one())

    def entries(self, start: int = 0, end: int | None = None) -> list[LoggedEntry]:
        query = sa.select(entries.c.seq, entries.c.body, entries.c.leaf_hash).where(entries.c.seq >= start)
        if end is not None:
            query = query.where(entries.c.seq < end)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(entries.c.seq)).all()
        return [LoggedEntry(seq=row.seq, body=row.body, leaf_hash=bytes(row.leaf_hash)) for row in rows]

    def leaf_hashes(self, end: int | None = None) -> list[bytes]:
        with self.engine.connect() as connection:
            return _leaf_hashes(connection, end)

    def checkpoints(self) -> list[Checkpoint]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(checkpoints).order_by(checkpoints.c.size)).all()
        return [_checkpoint(row) for row in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def mirror_progress(self) -> tuple[int, int]:
        """(next entry seq, last checkpoint size) the Kafka mirror holds; (0, 0) before its first pass."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(mirror_progress)).first()
        return (0, 0) if row is None else (row.entries_upto, row.checkpoints_upto)

    def set_mirror_progress(self, entries_upto: int, checkpoints_upto: int) -> None:
        values = {"entries_upto": entries_upto, "checkpoints_upto": checkpoints_upto}
        with self.engine.begin() as connection:
            updated = connection.execute(mirror_progress.update().values(**values)).rowcount
            if not updated:
                connection.execute(mirror_progress.insert().values(id=1, **values))

    def checkpoint_of_size(self, size: int) -> Checkpoint | None:
        """The checkpoint signed at `size`, if one was."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(checkpoints).where(checkpoints.c.size == size)).first()
        return None if row is None else _checkpoint(row)

    def checkpoint(self, signer: Signer) -> Checkpoint | None:
        """Signs and stores (origin, size, root) of the log as it is, if it grew since the last checkpoint."""
        with self.engine.begin() as connection:
            hashes = _leaf_hashes(connection, None)  # one read: size and root describe the same log
            last = connection.execute(sa.select(sa.func.max(checkpoints.c.size))).scalar_one()
            if not hashes or (last is not None and len(hashes) <= last):
                return None
            signed = signer.sign(len(hashes), merkle.root(hashes))
            connection.execute(
                checkpoints.insert().values(
                    size=signed.size,
                    root=signed.root,
                    origin=signed.origin,
                    signed_at=signed.signed_at,
                    signature=signed.signature,
                    key_id=signed.key_id,
                )
            )
        return signed


def _serialise_appends(connection: sa.Connection) -> None:
    """Two writers must never read the same next seq: the second waits for the first's commit.

    PostgreSQL: a table lock. SQLite: BEGIN IMMEDIATE takes the write lock before the reads (its driver would
    begin only at the first INSERT, after both writers had read the same highest seq), and waits for it under
    the driver's busy timeout."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("LOCK TABLE audit_entries IN EXCLUSIVE MODE"))
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _not_yet_logged(connection: sa.Connection, batch: Sequence[Entry]) -> list[Entry]:
    sources = {entry.source for entry in batch}
    logged = set(
        connection.execute(sa.select(entries.c.source).where(entries.c.source.in_(sources))).scalars()
    )
    fresh = []
    for entry in batch:
        if entry.source not in logged:
            logged.add(entry.source)  # a source twice in one batch is one entry too
            fresh.append(entry)
    return fresh


def _row(entry: Entry, seq: int, recorded_at: datetime) -> dict[str, object]:
    body = entry.body(seq)
    return {
        "seq": seq,
        "recorded_at": recorded_at,
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "reason": entry.reason,
        "source": entry.source,
        "body": body,
        "leaf_hash": merkle.leaf_hash(body.encode()),
        # Copies of what the body says, for filtering (pdo.audit.reading); the body alone is hashed.
        "tenant": entry.details.get("tenant"),
        "occurred_at": entry.occurred_at.astimezone(UTC),
    }


def _leaf_hashes(connection: sa.Connection, end: int | None) -> list[bytes]:
    query = sa.select(entries.c.leaf_hash).order_by(entries.c.seq)
    if end is not None:
        query = query.where(entries.c.seq < end)
    return [bytes(value) for value in connection.execute(query).scalars()]


def _checkpoint(row: sa.Row[Any]) -> Checkpoint:
    signed_at = (
        row.signed_at if row.signed_at.tzinfo else row.signed_at.replace(tzinfo=UTC)
    )  # SQLite drops it
    return Checkpoint(
        origin=row.origin,
        size=row.size,
        root=bytes(row.root),
        signed_at=signed_at,
        signature=bytes(row.signature),
        key_id=row.key_id,
    )
