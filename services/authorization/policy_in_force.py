"""Which authorization policy is in force, as evidence: a worker that starts with a policy file differing
from the last one in force records the change (its SHA-256, and the one before) as a PolicyInForce event.

**Guarantee.** The row of `authz_policy_in_force` and the event commit together through the authorization
outbox (pdo.authorization.outbox): the recorded policy changes if and only if its event is committed, and the
worker's relay publishes it. A worker starting with the same file records nothing, so restarts add no noise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Engine

from pdo.authorization import outbox
from pdo.authorization import tables as t
from pdo.core.events import event_head, utc_now
from pdo.core.names import Event
from pdo.core.topics import TopicId

POLICY = "authorization"
ACTOR = "system:authorization"


def file_sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record_in_force(engine: Engine, policy_file: Path | str) -> str | None:
    """Record the policy file as the one in force; its SHA-256 when that is a change, None when it was so."""
    digest = file_sha256(policy_file)
    with engine.begin() as conn:
        previous = conn.execute(
            sa.select(t.policy_in_force.c.sha256).where(t.policy_in_force.c.policy == POLICY)
        ).scalar()
        if previous == digest:
            return None
        row = {"sha256": digest, "since": utc_now()}
        if previous is None:
            conn.execute(t.policy_in_force.insert().values(policy=POLICY, **row))
        else:
            conn.execute(t.policy_in_force.update().where(t.policy_in_force.c.policy == POLICY).values(**row))
        event = {**event_head(ACTOR), "policy": POLICY, "sha256": digest, "previous_sha256": previous}
        outbox.stage(conn, TopicId.ACCESS, Event.POLICY_IN_FORCE, event, ACTOR)
    return digest
