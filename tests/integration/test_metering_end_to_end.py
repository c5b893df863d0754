# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Exactly once from feed to invoice: a real sharing worker delivers 10,000 records under two grants (20,000
deliveries); the metering worker counts that backlog while it is SIGKILLed three times and restarted, and a
third of the usage facts is sent a second time on purpose. At the end the ledger holds exactly the distinct delivery ids on pdo.deliveries,
and `pdo billing reconcile` finds the tenant topics, the ledger and the (open) month in agreement: zero."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import avro.schema
import pytest
import sqlalchemy as sa
from metering_support import ledger_count, pdo_workers, wait_for_progress  # noqa: F401
from sharing_support import (  # noqa: F401
    ACME,
    CITYLAB,
    DISTRICTS,
    db_url,
    fact_delivery_ids,
    grant,
    platform,
    register_dataset,
    settings,
    topic_messages,
    traffic_record,
)

from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA
from pdo.core import db, topics
from pdo.core.kafka import producer
from pdo.core.months import period_of
from pdo.core.topics import TopicId, feed_topic
from pdo.metering import tables as t

pytestmark = pytest.mark.integration

RECORDS = 10_000
# Usage facts come a RecordsDeliveredBatch per grant and feed partition per sharing transaction (hundreds of
# deliveries each): a third of them is sent again, and metering takes few per ledger transaction so that
# the kills land between its transactions.
RESENT_SHARE = 3
FACTS_PER_LEDGER_TRANSACTION = "3"
KILLS = 3
DEADLINE_S = 240


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_sharing_and_a_repeatedly_killed_metering_worker_bill_each_delivery_once(
    settings, platform, pdo_workers
):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    grant(service, ACME, dataset_id, ("record_id", "district", "plate_number"))
    grant(service, CITYLAB, dataset_id, ("record_id", "speed_kmh"))
    deliveries_topic = topics.name(TopicId.DELIVERIES, settings)
    engine = db.make_engine(settings.database_url)
    deadline = time.monotonic() + DEADLINE_S
    generator = random.Random()
    try:
        pdo_workers("sharing", "worker", "--group", f"sharing-{uuid.uuid4().hex[:8]}")
        metering = (
            "metering",
            "worker",
            "--group",
            f"metering-{uuid.uuid4().hex[:8]}",
            "--batch-size",
            FACTS_PER_LEDGER_TRANSACTION,
        )
        _publish(settings, codec, dataset_id, RECORDS)
        total = 2 * RECORDS
        # Metering starts on a backlog, so its kills land mid-work however fast sharing keeps up with the
        # publisher (on a quiet machine the two workers can otherwise finish with the last record published).
        delivered = _wait_for_deliveries(settings, codec, deliveries_topic, total, deadline)
        worker = pdo_workers(*metering)
        kills_while_working = 0
        for _ in range(KILLS):
            at_start = wait_for_progress(engine, worker, deadline, total)
            target = min(at_start + generator.randrange(500, 3_000), total - 1)
            while ledger_count(engine) < target and time.monotonic() < deadline:
                assert worker.poll() is None, f"the metering worker exited with {worker.returncode}"
                time.sleep(0.02)
            kills_while_working += ledger_count(engine) < total
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            worker = pdo_workers(*metering)
        assert kills_while_working >= 2
        _send_again(settings, deliveries_topic, generator.sample(delivered, len(delivered) // RESENT_SHARE))
        while ledger_count(engine) < total and time.monotonic() < deadline:
            assert worker.poll() is None, f"the metering worker exited with {worker.returncode}"
            time.sleep(0.2)
        time.sleep(3)  # anything counted twice would arrive now

        ids_on_topic = {
            ident for value in delivered for ident in fact_delivery_ids(codec.decode(value).value)
        }
        assert len(ids_on_topic) == total  # each record and grant named (redelivered facts collapse)
        with engine.connect() as conn:
            in_ledger = set(conn.execute(sa.select(t.ledger.c.delivery_id)).scalars())
        assert in_ledger == ids_on_topic

        reconciled = subprocess.run(
            [
                sys.executable,
                "-m",
                "pdo.cli.main",
                "billing",
                "reconcile",
                "--period",
                period_of(datetime.now(UTC)),
            ],
            env=settings.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert "drift topic_vs_ledger 0 record(s), ledger_vs_billed 0 record(s)" in reconciled.stdout
        assert worker.poll() is None
    finally:
        engine.dispose()


def _publish(settings, codec, dataset_id: str, count: int) -> None:
    topic = feed_topic(dataset_id, settings)
    schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
    feed = producer(settings, linger_ms=20)
    try:
        for number in range(count):
            record = traffic_record(f"e2e-{number}", DISTRICTS[number % 3])
            feed.send(topic, key=record["record_id"].encode(), value=codec.encode(topic, schema, record))
        feed.flush()
    finally:
        feed.close()


def _wait_for_deliveries(settings, codec, topic: str, total: int, deadline: float) -> list[bytes]:
    """The usage facts on the deliveries topic once `total` distinct deliveries are there (raw values)."""
    while time.monotonic() < deadline:
        values = [m.value for m in topic_messages(settings, topic)]
        if (
            len({ident for value in values for ident in fact_delivery_ids(codec.decode(value).value)})
            >= total
        ):
            return values
        time.sleep(1)
    raise AssertionError(f"fewer than {total} usage facts on {topic} in time")


def _send_again(settings, topic: str, values: list[bytes]) -> None:
    """Duplicates on purpose: the same facts, byte for byte, as a redelivering sharing worker writes them."""
    again = producer(settings, linger_ms=20)
    try:
        for value in values:
            again.send(topic, key=b"duplicate", value=value)
        again.flush()
    finally:
        again.close()
