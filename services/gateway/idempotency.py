"""Idempotency-Key: a call made with a key is answered once; a retry with the same key gets that answer back.

Guarantee: for one principal and key, at most one call runs at a time, and once one has completed (a 2xx,
or a 4xx the handler itself answered, such as 422 "none of the records fits"), every retry with the same key
and the same request within PDO_IDEMPOTENCY_RETENTION_S gets that status and body and runs nothing again.
The same key with another request (another route or body) is refused (422 `idempotency_key_reused`), and a
retry while the first call still runs is refused (409 `idempotency_key_in_use`, with Retry-After). Keys are
per principal: another provider using the same key makes a call of its own and never sees this one's answer.

How (the race of two concurrent retries): the key is claimed by inserting its row *before* the call runs —
the primary key (principal, key) lets exactly one insert win. The claim is then either completed with the
answer, or **released** (deleted) when the call did not complete (an exception, 5xx): a claim whose call
failed must never swallow the retry (the trap of OpenMeter issue 5118, where a dedup id claimed before a
failed write silently dropped the retry). A 503 "it may still arrive" is therefore not kept: the retry runs
again, and the records that did arrive are recognised by their record_id (pdo.publishing.record_ids), so
nothing is written twice either way. A claim left by a process that died mid-call is taken over once it is
older than STALE_CLAIM_S.

Expired answers are deleted by `prune` (the gateway's housekeeping round), and ignored before that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.core.db import dialect_insert
from pdo.core.errors import Conflict, InvalidInput
from pdo.core.events import utc, utc_now
from pdo.gateway.tables import idempotency_keys as keys_table

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# A claim older than this belongs to a call whose process died: no call runs this long (an ingest call waits
# at most 3 × PDO_KAFKA_TIMEOUT_S for acknowledgements).
STALE_CLAIM_S = 300
# What a retry during the first call is told to wait.
RETRY_AFTER_S = 2


class KeyInUse(Conflict):
    """Another call with this key is running: retry once it has answered (HTTP 409 with Retry-After)."""

    retry_after_s = RETRY_AFTER_S


class KeyReused(InvalidInput):
    """The key was used for another request: a key names one request (HTTP 422)."""


@dataclass(frozen=True)
class Answer:
    """A kept answer: the status and JSON body the first complete call got."""

    status_code: int
    body: Any


def fingerprint(route: str, body: Any) -> str:
    """SHA-256 of the route and the body as parsed (key order and whitespace do not matter)."""
    canonical = json.dumps([route, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def checked_key(raw: str) -> str:
    """The header's value if it is 1-255 printable ASCII characters, else InvalidInput saying so."""
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not raw.isascii() or not raw.isprintable():
        raise InvalidInput(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            hint="send a fresh random key per logical request, e.g. a UUID, and the same key on its retries",
        )
    return raw


class IdempotencyStore:
    """Claims, completes, releases and prunes Idempotency-Key rows in `gateway_idempotency_keys`."""

    def __init__(self, engine: Engine, retention_s: int, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.retention = timedelta(seconds=retention_s)
        self.clock = clock

    def claim(self, principal_id: str, key: str, request_fingerprint: str) -> Answer | None:
        """None when this call now holds the key and must run; the kept Answer when a call with it completed.

        KeyReused when the key was used for another request; KeyInUse while another call with it runs.
        """
        now = self.clock()
        with self.engine.begin() as conn:
            self._forget_expired_or_stale(conn, principal_id, key, now)
            if self._inserted(conn, principal_id, key, request_fingerprint, now):
                return None
            row = conn.execute(
                sa.select(
                    keys_table.c.fingerprint, keys_table.c.status_code, keys_table.c.response_body
                ).where(*_the_row(principal_id, key))
            ).one()
        if row.fingerprint != request_fingerprint:
            raise KeyReused(
                f"{HEADER} {key!r} was used for another request (another dataset or other records); "
                "a key names exactly one request",
                hint="use a new key for a new request; resend the same body to retry the first one",
            )
        if row.status_code is None:
            raise KeyInUse(
                f"a call with {HEADER} {key!r} is still running",
                hint=f"retry in {RETRY_AFTER_S} s: you will get that call's answer",
            )
        return Answer(row.status_code, json.loads(row.response_body))

    def complete(self, principal_id: str, key: str, answer: Answer) -> None:
        """Keep the answer of the call holding the key, for the retention period from now."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(keys_table)
                .where(*_the_row(principal_id, key))
                .values(
                    status_code=answer.status_code,
                    response_body=json.dumps(answer.body),
                    expires_at=now + self.retention,
                )
            )

    def release(self, principal_id: str, key: str) -> None:
        """Give the key up: the call did not complete, so a retry must run (never swallowed)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(keys_table).where(*_the_row(principal_id, key), _is_claim()))

    def prune(self) -> int:
        """Delete every expired answer; the number deleted."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(keys_table).where(keys_table.c.expires_at < self.clock()))
        return result.rowcount

    def _forget_expired_or_stale(self, conn: Connection, principal_id: str, key: str, now: datetime) -> None:
        stale = now - timedelta(seconds=STALE_CLAIM_S)
        conn.execute(
            sa.delete(keys_table).where(
                *_the_row(principal_id, key),
                sa.or_(keys_table.c.expires_at < now, sa.and_(_is_claim(), keys_table.c.claimed_at < stale)),
            )
        )

    def _inserted(
        self, conn: Connection, principal_id: str, key: str, request_fingerprint: str, now: datetime
    ) -> bool:
        statement = (
            dialect_insert(conn, keys_table)
            .values(
                principal_id=principal_id,
                idempotency_key=key,
                fingerprint=request_fingerprint,
                claimed_at=utc(now),
                expires_at=utc(now) + self.retention,
            )
            .on_conflict_do_nothing(index_elements=["principal_id", "idempotency_key"])
            .returning(keys_table.c.principal_id)
        )
        return conn.execute(statement).first() is not None


def _the_row(principal_id: str, key: str) -> tuple[sa.ColumnElement[bool], ...]:
    return keys_table.c.principal_id == principal_id, keys_table.c.idempotency_key == key


def _is_claim() -> sa.ColumnElement[bool]:
    return keys_table.c.status_code.is_(None)
