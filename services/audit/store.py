"""Stand-in for audit-log's append-only store (the shared contract), replaced by theirs at merge."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Engine

from pdo.audit.checkpoints import Signer
from pdo.audit.tables import audit_checkpoints, audit_entries


@dataclass(frozen=True)
class Entry:
    actor: str
    action: str
    subject: str
    reason: str | None
    source: str
    occurred_at: datetime
    details: Mapping[str, str] = field(default_factory=dict)

    def body(self, seq: int) -> bytes:
        at = self.occurred_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        document = {
            "seq": seq,
            "occurred_at": at,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "reason": self.reason,
            "source": self.source,
            "details": dict(self.details),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: bytes
    signature: bytes


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


class AuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, entries: Sequence[Entry]) -> int:
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("LOCK TABLE audit_entries IN EXCLUSIVE MODE"))
            sources = [entry.source for entry in entries]
            known = set(
                connection.scalars(
                    sa.select(audit_entries.c.source).where(audit_entries.c.source.in_(sources))
                )
            )
            seq = connection.scalar(sa.select(sa.func.count()).select_from(audit_entries)) or 0
            appended = 0
            for entry in entries:
                if entry.source in known:
                    continue
                known.add(entry.source)
                body = entry.body(seq)
                connection.execute(
                    audit_entries.insert().values(
                        seq=seq,
                        recorded_at=datetime.now(UTC),
                        actor=entry.actor,
                        action=entry.action,
                        subject=entry.subject,
                        reason=entry.reason,
                        source=entry.source,
                        body=body.decode(),
                        leaf_hash=_leaf_hash(body),
                    )
                )
                seq += 1
                appended += 1
            return appended

    def size(self) -> int:
        with self.engine.connect() as connection:
            return connection.scalar(sa.select(sa.func.count()).select_from(audit_entries)) or 0

    def entries(self, start: int = 0, end: int | None = None) -> list[sa.Row]:
        query = sa.select(audit_entries).where(audit_entries.c.seq >= start).order_by(audit_entries.c.seq)
        if end is not None:
            query = query.where(audit_entries.c.seq < end)
        with self.engine.connect() as connection:
            return list(connection.execute(query))

    def checkpoint(self, signer: Signer) -> Checkpoint | None:
        with self.engine.begin() as connection:
            hashes = list(
                connection.scalars(sa.select(audit_entries.c.leaf_hash).order_by(audit_entries.c.seq))
            )
            last = connection.scalar(sa.select(sa.func.max(audit_checkpoints.c.size)))
            if not hashes or last == len(hashes):
                return None
            # The stand-in's root is a plain hash of the leaves, not RFC 6962's tree.
            root = hashlib.sha256(b"".join(hashes)).digest()
            signature = signer.sign(len(hashes), root)
            connection.execute(
                audit_checkpoints.insert().values(
                    size=len(hashes),
                    root=root,
                    origin=signer.origin,
                    signed_at=datetime.now(UTC),
                    signature=signature,
                    key_id=signer.key_id,
                )
            )
            return Checkpoint(len(hashes), root, signature)
