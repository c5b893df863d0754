"""Whether the audit log can be appended to: the mark its worker writes, and the guard that reads it.

Why this is enough for "no audited change takes effect without its entry": a grant or request change
commits in one SQL transaction with its event (the authorization outbox, pdo.authorization.outbox); the relay
publishes it with acks=all; the audit worker records it idempotently by source position; and the topics keep
it until the worker read it (`min_compaction_lag_ms` of 7 days on the compacted ones, topics/*.yaml). So the
entry of every committed change is guaranteed as long as the audit log can be appended to, and this module
says whether it can:

- `mark(connection, size)` upserts the one row of `audit_liveness` (when, and the log's size). The audit
  worker writes it inside every append transaction (AuditStore.append) and from a timer every few seconds
  besides (AuditStore.mark_appendable): always a write, so a fresh mark proves the log's database takes the audit
  worker's writes, not merely that it answers;
- `appendability(engine, limit_s)` reads it: appendable while the mark is at most `limit_s` old. No row (the
  worker never ran), an older mark, or a database that does not answer or refuses the read: not appendable,
  with the age when it is known;
- `require_appendable(engine, limit_s)` is the guard: it raises AuditLogNotAppendable, an Unavailable (503 on
  the gateway, transient for pdo.core.retry, so a worker waits and retries) before any access-WIDENING change
  (an approval, a resumption). Access-narrowing changes (deny, suspend, revoke, withdraw, expire) never ask:
  their entries are guaranteed by the outbox and recorded once the log is back, and refusing a revocation
  would keep data flowing to someone who must be cut off. Failing closed means failing toward less access.

Ages compare the worker's clock (it writes the time) with the reader's: hosts keep their clocks in sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pdo.audit.tables import entries, liveness
from pdo.core.errors import Unavailable

ROW_ID = 1
WHAT_TO_CHECK = (
    "check that the audit worker (`pdo audit-worker`) runs and can write to its database (its log, and its "
    "metric pdo_audit_log_appendable_timestamp_seconds); approvals and resumptions go through again once it "
    "appends. Denials, suspensions and revocations still go through meanwhile"
)


class AuditLogNotAppendable(Unavailable):
    """An access-widening change waits: the audit log has not been shown appendable recently enough."""


@dataclass(frozen=True)
class Appendability:
    """The answer to "is the audit log appendable?": `age_s` since the last mark, None when unknown; `why`
    completes "the audit log ..."."""

    appendable: bool
    age_s: float | None
    why: str


def mark(connection: sa.Connection, size: int | None = None, at: datetime | None = None) -> None:
    """Upsert the liveness row in the caller's transaction; `size` None keeps the size of the last append
    (an idle mark adds no entry), or counts the log when there is no row yet."""
    at = at or datetime.now(UTC)
    known = size if size is not None else _size(connection)
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = insert(liveness).values(id=ROW_ID, appended_at=at, size=known)
    changes = {"appended_at": at} if size is None else {"appended_at": at, "size": size}
    connection.execute(statement.on_conflict_do_update(index_elements=[liveness.c.id], set_=changes))


def appendability(engine: sa.Engine, limit_s: float, now: datetime | None = None) -> Appendability:
    """Appendable when the mark is at most `limit_s` old; never raises (a failed read is a "no")."""
    try:
        with engine.connect() as connection:
            marked = connection.execute(sa.select(liveness.c.appended_at).where(liveness.c.id == ROW_ID))
            appended_at = marked.scalar_one_or_none()
    except sa.exc.SQLAlchemyError as error:
        return Appendability(
            False,
            None,
            f"cannot be shown appendable: its liveness mark does not read ({type(error).__name__})",
        )
    if appended_at is None:
        return Appendability(False, None, "has never been marked appendable by the audit worker")
    if appended_at.tzinfo is None:  # SQLite drops the zone; pdo writes UTC
        appended_at = appended_at.replace(tzinfo=UTC)
    age_s = max(0.0, ((now or datetime.now(UTC)) - appended_at).total_seconds())
    if age_s > limit_s:
        return Appendability(False, age_s, f"has not been appendable for {age_s:.0f} s")
    return Appendability(True, age_s, f"was appended to {age_s:.0f} s ago")


def require_appendable(engine: sa.Engine, limit_s: int) -> None:
    """Raise AuditLogNotAppendable unless the log was appended to within `limit_s` (0: never raise)."""
    if limit_s <= 0:
        return
    found = appendability(engine, limit_s)
    if not found.appendable:
        raise AuditLogNotAppendable(
            f"the audit log {found.why} (the limit, PDO_AUDIT_FAIL_CLOSED_AFTER_S, is {limit_s} s): changes "
            "that widen access wait until every change can be recorded",
            hint=WHAT_TO_CHECK,
        )


def _size(connection: sa.Connection) -> int:
    last = connection.execute(sa.select(sa.func.max(entries.c.seq))).scalar_one()
    return 0 if last is None else int(last) + 1
