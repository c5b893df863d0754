"""The feed's record_id window: a record whose record_id reached a dataset's feed lately is not written again.

Guarantee: through pdo's publishers (HTTP ingest, `pdo publish`, FeedPublisher with an engine), a record_id is
written to a dataset's feed at most once within PDO_RECORD_ID_WINDOW_S of its acknowledgement — a provider
that retries after an ambiguous failure (a 503 "it may still arrive", a lost answer) gets the record back as a
duplicate instead of a second copy on the feed, a second delivery and a second charge. Every record carries a
`record_id` (the feed's key; the catalog refuses a schema without one), so "the same record" is the provider's
own notion: a provider that never reuses ids never sees a duplicate.

How, per record id (its SHA-256, so no value is kept), in `gateway_feed_record_ids`:

- **claim** before the send: insert SENDING, or take over a row that left the window, in one statement; the
  primary key lets one claimer win. An id already SENT within the window is a *duplicate* (not sent); an id
  SENDING is *in flight* (another call sends it now, or an earlier send was not acknowledged yet): the
  caller is told to retry in a few seconds;
- **confirm** once the broker acknowledged: SENT, counted from then;
- **release** when the send failed for certain (never enqueued, refused by the broker): the row goes, so a
  retry sends (a claim whose write failed never swallows the retry: OpenMeter issue 5118);
- when the outcome is **unknown** (the acknowledgement did not come in time: "it may still arrive"), the row
  stays SENDING and the producer's own final outcome confirms or releases it (its idempotent retries go on
  for up to its delivery timeout). A SENDING row older than STALE_CLAIM_S (its process died) is taken over.

Not covered: records a provider's own Kafka producer writes to the feed (they bypass pdo's publishers; the
idempotent producer removes the duplicates of its own retries, not an application's resend), and a gateway
that dies between the broker's acknowledgement and `confirm` leaves a claim that a retry takes over after
STALE_CLAIM_S, sending a second copy. Rows older than the window are deleted by `prune`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import ARRAY

from pdo.core.db import dialect_insert
from pdo.core.events import utc, utc_now
from pdo.publishing.tables import record_ids as ids_table

log = logging.getLogger(__name__)

SENDING = "SENDING"
SENT = "SENT"
# Longer than any send takes: kafka-python gives a record up after its delivery timeout (120 s).
STALE_CLAIM_S = 300


class Claim(Enum):
    SEND = "send"  # claimed by this call: send it
    DUPLICATE = "duplicate"  # on the feed within the window: do not send
    IN_FLIGHT = "in_flight"  # another send of it is not settled yet: retry later


@dataclass
class Claims:
    """What `claim` decided for each key of a batch, and the keys this call now holds."""

    by_key: dict[bytes, Claim] = field(default_factory=dict)

    def held(self) -> list[bytes]:
        return [key for key, claim in self.by_key.items() if claim is Claim.SEND]


def key_digest(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


class RecordIdWindow:
    """Claims, confirms and releases record ids of a dataset's feed; see the module's description."""

    def __init__(self, engine: Engine, window_s: int, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.window = timedelta(seconds=window_s)
        self.clock = clock

    def claim(self, dataset_id: str, keys: Sequence[bytes]) -> Claims:
        """Claim every distinct key (in one transaction); a key repeated within `keys` is claimed once."""
        distinct = {key_digest(key): key for key in keys}
        if not distinct:
            return Claims()
        now = utc(self.clock())
        with self.engine.begin() as conn:
            won = self._won(conn, dataset_id, list(distinct), now)
            states = self._states(conn, dataset_id, [d for d in distinct if d not in won])
        claims = Claims()
        for digest, key in distinct.items():
            if digest in won:
                claims.by_key[key] = Claim.SEND
            else:
                claims.by_key[key] = Claim.DUPLICATE if states.get(digest) == SENT else Claim.IN_FLIGHT
        return claims

    def confirm(self, dataset_id: str, keys: Sequence[bytes]) -> None:
        """The broker acknowledged these: SENT from now on, for the window."""
        self._settle(dataset_id, keys, sa.update(ids_table).values(state=SENT, since=utc(self.clock())))

    def release(self, dataset_id: str, keys: Sequence[bytes]) -> None:
        """These were not written, for certain: forget the claims so a retry sends them."""
        self._settle(dataset_id, keys, sa.delete(ids_table))

    def prune(self) -> int:
        """Delete what left the window (SENT) or was abandoned (SENDING); the number deleted."""
        now = utc(self.clock())
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(ids_table).where(_expired(now, self.window)))
        return result.rowcount

    def _settle(self, dataset_id: str, keys: Sequence[bytes], statement: sa.Update | sa.Delete) -> None:
        if not keys:
            return
        with self.engine.begin() as conn:
            conn.execute(
                statement.where(
                    ids_table.c.dataset_id == dataset_id,
                    _one_of(conn, [key_digest(key) for key in keys]),
                    ids_table.c.state == SENDING,
                )
            )

    def _won(self, conn: Connection, dataset_id: str, digests: list[str], now: datetime) -> set[str]:
        """Claim the digests not held yet, and those whose hold expired (left the window, or a claim of a
        dead process): one statement, so that of two concurrent claimers exactly one wins each digest (the
        other waits on the row, then finds it held)."""
        claim = dialect_insert(conn, ids_table)
        if conn.dialect.name == "postgresql":
            # The batch's digests as ONE text parameter, split server-side: the statement's text is the same
            # for every batch, so it is compiled and prepared once (a VALUES list or one placeholder per row
            # made a new statement per batch size, converted anew by psycopg each call: measured as the
            # gateway's largest cost after the producer, for #17).
            digest = sa.func.unnest(_text_array(digests)).table_valued("digest").render_derived()
            rows = sa.select(
                sa.literal(dataset_id, ids_table.c.dataset_id.type),
                digest.c.digest,
                sa.literal(SENDING, ids_table.c.state.type),
                sa.literal(now, ids_table.c.since.type),
            )
            claim = claim.from_select(["dataset_id", "record_key_sha256", "state", "since"], rows)
            parameters: list[dict[str, Any]] | None = None
        else:  # SQLite: one statement with many parameter sets, compiled once ("insertmanyvalues")
            parameters = [
                {"dataset_id": dataset_id, "record_key_sha256": d, "state": SENDING, "since": now}
                for d in digests
            ]
        statement = claim.on_conflict_do_update(
            index_elements=["dataset_id", "record_key_sha256"],
            set_={"state": SENDING, "since": now},
            where=_expired(now, self.window),
        ).returning(ids_table.c.record_key_sha256)
        return set(conn.execute(statement, parameters).scalars())

    def _states(self, conn: Connection, dataset_id: str, digests: list[str]) -> dict[str, str]:
        if not digests:
            return {}
        rows = conn.execute(
            sa.select(ids_table.c.record_key_sha256, ids_table.c.state).where(
                ids_table.c.dataset_id == dataset_id, _one_of(conn, digests)
            )
        )
        return {row.record_key_sha256: row.state for row in rows}


def _one_of(conn: Connection, digests: list[str]) -> sa.ColumnElement[bool]:
    """record_key_sha256 among `digests`: on PostgreSQL = ANY of one text parameter (one statement text for
    every batch size), elsewhere an IN list."""
    if conn.dialect.name == "postgresql":
        return ids_table.c.record_key_sha256 == sa.any_(_text_array(digests))
    return ids_table.c.record_key_sha256.in_(digests)


def _text_array(digests: list[str]) -> sa.ColumnElement[Any]:
    # Hex digests hold no comma: joining them is exact, and one text parameter is bound without per-element
    # quoting in Python.
    return sa.func.string_to_array(sa.literal(",".join(digests), sa.Text), ",", type_=ARRAY(sa.Text))


def _expired(now: datetime, window: timedelta) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(ids_table.c.state == SENT, ids_table.c.since < now - window),
        sa.and_(ids_table.c.state == SENDING, ids_table.c.since < now - timedelta(seconds=STALE_CLAIM_S)),
    )
