"""The gateway's outbox of access events: a principal or API key changes if and only if its event is
committed with it (pdo.core.outbox), and the gateway publishes it to pdo.access right after the commit.

Who publishes: the gateway after each commit (a prompt round, waiting at most PROMPT_PUBLISH_WAIT_S), and
the served gateway's relay every RELAY_INTERVAL_S for what a prompt round could not send (the broker was
away) and what `pdo principals` committed (the command line does not talk to Kafka for these).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from pdo.core.outbox import Outbox, OutboxRelay, PromptPublisher, Publisher
from pdo.gateway import tables as t

OUTBOX = Outbox(t.outbox, t.outbox_lease, "gateway-outbox")
PROMPT_PUBLISH_WAIT_S = 2.0
RELAY_INTERVAL_S = 5.0


def relay(engine: Engine, publisher: Publisher, kafka_timeout_s: float) -> OutboxRelay:
    # The lease outlives a round that waits out the broker's timeouts, so a slow round is not overtaken.
    return OutboxRelay(OUTBOX, engine, publisher, timedelta(seconds=3 * kafka_timeout_s + 5))


def prompt(relay: OutboxRelay) -> PromptPublisher:
    return PromptPublisher(relay, PROMPT_PUBLISH_WAIT_S)
