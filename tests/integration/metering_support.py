"""What the metering integration tests share: `pdo <service> worker` processes on a test's isolated namespace
and database, usage facts on the deliveries topic, and the ledger and windows read back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sharing_support import PdoProcesses

from pdo.core import schemas, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.kafka import producer
from pdo.core.topics import TopicId
from pdo.metering import tables as t
from pdo.metering.ledger import UsageFact
from pdo.metering.testing import records_delivered_event

# A killed member's partitions go to its successor only after the broker gives up on it: keep that short.
FAST_REJOIN = {
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
    "BROKER_REBALANCE_TIMEOUT": "10",
}


@pytest.fixture
def pdo_workers(settings, tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts `pdo <args…>` processes on this test's namespace and database; stops them after, logs shown."""
    processes = PdoProcesses(settings, tmp_path, FAST_REJOIN)
    yield processes.start
    processes.stop()


class Deliveries:
    """Writes RecordsDelivered facts (or any bytes) to the deliveries topic, keyed by grant like sharing."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.topic = topics.name(TopicId.DELIVERIES, settings)
        self.codec = codec
        self.schema = schemas.get("pdo.sharing.v1.RecordsDelivered", settings.home / "schemas")
        self.producer = producer(settings, linger_ms=20, max_in_flight_requests_per_connection=5)
        self.futures: list = []

    def send(self, fact: UsageFact) -> None:
        value = self.codec.encode(self.topic, self.schema, records_delivered_event(fact))
        self.futures.append(self.producer.send(self.topic, key=fact.grant_id.encode(), value=value))

    def raw(self, value: bytes, key: bytes = b"garbage") -> None:
        self.futures.append(self.producer.send(self.topic, key=key, value=value))

    def flush(self) -> list:
        """Wait for every acknowledgement; the (partition, offset) of each message sent, in order."""
        self.producer.flush()
        positions = [(f.get(timeout=30).partition, f.get(timeout=30).offset) for f in self.futures]
        self.futures.clear()
        return positions

    def close(self) -> None:
        self.producer.close()


def ledger_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t.ledger)).scalar_one()


def sums_by_grant(engine, table: sa.Table, **where: str) -> dict[str, tuple[int, int]]:
    """(records, bytes) per grant in the ledger or in the windows of one kind."""
    query = sa.select(table.c.grant_id, sa.func.sum(table.c.records), sa.func.sum(table.c.bytes)).group_by(
        table.c.grant_id
    )
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as conn:
        return {grant_id: (int(records), int(size)) for grant_id, records, size in conn.execute(query)}


def wait_for_progress(engine, worker, deadline: float, total: int) -> int:
    """Wait until a (re)started metering worker has written to the ledger (or all `total` are in); the count
    it started from."""
    before = ledger_count(engine)
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        now = ledger_count(engine)
        if now > before or now >= total:
            return now
        time.sleep(0.05)
    raise AssertionError("the metering worker made no progress in time")
