"""Metering's outbox of access events: a billing period is closed if and only if its PeriodClosed event is
committed with it (pdo.core.outbox). Closing runs in the operator's command (`pdo billing statements close`),
which publishes right after its commit; the metering worker's relay (the `publish_outbox` timer, leader only)
publishes what the command could not, and prunes what the broker acknowledged long ago.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from pdo.core.events import utc_now
from pdo.core.outbox import Outbox, OutboxRelay, Publisher
from pdo.metering import tables as t

OUTBOX = Outbox(t.outbox, t.outbox_lease, "metering-outbox")


def relay(engine: Engine, publisher: Publisher, kafka_timeout_s: float) -> OutboxRelay:
    # The lease outlives a round that waits out the broker's timeouts, so a slow round is not overtaken.
    return OutboxRelay(OUTBOX, engine, publisher, timedelta(seconds=3 * kafka_timeout_s + 5))


def publish_and_prune(relay: OutboxRelay) -> int:
    """One round of the worker's timer: publish what is pending, prune what went out long ago; published."""
    published = relay.publish_all()
    OUTBOX.prune_sent(relay.engine, utc_now())
    return published
