"""faust workers that read only committed records (`isolation_level="read_committed"`).

Sharing writes tenant records and usage facts in Kafka transactions (pdo.sharing.transactions): a reader
in the default `read_uncommitted` also sees the writes of aborted transactions (a killed worker's last
batch), and would count them. faust reads committed only in its own exactly-once mode, which pdo does not
use (its open issues: pdo.sharing.transactions), and has no setting for it; `read_committed(app)` gives
the app's group consumer that isolation level, nothing else changes.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

READ_COMMITTED = "read_committed"


class _ReadCommittedThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands the level to its fetcher when the consumer starts, which is after this.
        consumer._isolation_level = READ_COMMITTED
        return consumer


class ReadCommittedConsumer(Consumer):
    """faust's aiokafka consumer whose group consumer reads committed records only."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


def read_committed(app: faust.App) -> faust.App:
    """Make `app`'s group consumer read committed records only; call before the app starts."""
    # The transport makes the app's consumer from this class when the worker starts; only this app's changes.
    app.transport.Consumer = ReadCommittedConsumer  # type: ignore[misc]  # a ClassVar, set per instance
    return app
