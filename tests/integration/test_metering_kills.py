# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Exactly-once metering under SIGKILL: tens of thousands of usage facts, thousands of them sent twice on
purpose, a `pdo metering worker` killed several times at random moments while it works and restarted each
time. At the end the ledger holds exactly the distinct delivery ids, with exactly the right record and byte
sums per grant, the MINUTE and DAY windows sum to the ledger, and the newest UsageRecorded event per window on
pdo.usage equals the window (the worker's timer published them while they grew, across the kills)."""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from metering_support import (  # noqa: F401
    Deliveries,
    ledger_count,
    pdo_workers,
    sums_by_grant,
    wait_for_progress,
)
from sharing_support import db_url, read_topic, settings  # noqa: F401

from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId
from pdo.metering import tables as t
from pdo.metering.handler import WINDOW_GRACE
from pdo.metering.ledger import DAY, MINUTE
from pdo.metering.testing import insert_grant, usage_fact
from pdo.metering.usage import list_windows

pytestmark = pytest.mark.integration

FACTS = 20_000
DUPLICATES = 3_000
GRANTS = 5
KILLS = 4
GARBAGE = (b"", b"\x00\x00", b"\x07 not avro at all")
DEADLINE_S = 150


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_ledger_equals_the_distinct_deliveries_after_repeated_sigkills(settings, pdo_workers):
    generator = random.Random()
    engine = db.make_engine(settings.database_url)
    codec = AvroCodec(RegistryClient.for_settings(settings))
    started = datetime.now(UTC)
    grants = [f"g-kill-{n}" for n in range(GRANTS)]
    for n, grant_id in enumerate(grants):
        insert_grant(engine, grant_id, started - timedelta(days=1), tenant_id=f"tenant:t{n}")
    facts = [
        usage_fact(
            f"d-{uuid.uuid4().hex}",
            grant_id,
            # Spread over a few minutes that closed before the test began: the worker's timer publishes their
            # windows as they grow, so the topic's newest event per window must end equal to the table.
            started - timedelta(minutes=5) + timedelta(milliseconds=number * 7),
            tenant_id=f"tenant:t{grants.index(grant_id)}",
            records=generator.randrange(1, 4),
            size=generator.randrange(50, 5000),
            offset=number,
        )
        for number, grant_id in enumerate(generator.choice(grants) for _ in range(FACTS))
    ]
    expected = Counter()
    for fact in facts:
        for delivery in fact.deliveries:
            expected[(fact.grant_id, "records")] += delivery.records
            expected[(fact.grant_id, "bytes")] += delivery.bytes
    resent = generator.sample(facts, DUPLICATES)

    deliveries = Deliveries(settings, codec)
    for index, fact in enumerate(facts):
        deliveries.send(fact)
        if index % 7 == 0 and resent:
            deliveries.send(resent.pop())  # a duplicate soon after, as a redelivering sharing worker sends
        if index in (5_000, 12_000, 19_000):
            deliveries.raw(GARBAGE[(index // 7_000) % len(GARBAGE)])
    for fact in resent:
        deliveries.send(fact)
    positions = deliveries.flush()
    deliveries.close()
    assert len(positions) == FACTS + DUPLICATES + 3

    group = f"metering-{uuid.uuid4().hex[:8]}"
    command = ("metering", "worker", "--group", group, "--batch-size", "250", "--loglevel", "info")
    deadline = time.monotonic() + DEADLINE_S
    kills_while_working = 0
    worker = pdo_workers(*command)
    try:
        for _ in range(KILLS):
            at_start = wait_for_progress(engine, worker, deadline, FACTS)
            target = at_start + generator.randrange(300, 2_500)
            while ledger_count(engine) < min(target, FACTS) and time.monotonic() < deadline:
                assert worker.poll() is None, f"the worker exited with {worker.returncode}"
                time.sleep(0.02)
            if ledger_count(engine) < FACTS:
                kills_while_working += 1
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            worker = pdo_workers(*command)
        while ledger_count(engine) < FACTS and time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            time.sleep(0.2)
        print(
            f"{kills_while_working} SIGKILLs while working; {time.monotonic() - deadline + DEADLINE_S:.0f} s"
        )
        assert kills_while_working >= 3
        time.sleep(3)  # anything counted twice would arrive now

        with engine.connect() as conn:
            ids = set(conn.execute(sa.select(t.ledger.c.delivery_id)).scalars())
            billed = conn.execute(
                sa.select(sa.func.count()).select_from(t.ledger).where(t.ledger.c.billing_period.is_not(None))
            ).scalar_one()
        assert ids == {delivery.delivery_id for fact in facts for delivery in fact.deliveries}
        assert billed == FACTS
        ledger_sums = sums_by_grant(engine, t.ledger)
        assert ledger_sums == {g: (expected[(g, "records")], expected[(g, "bytes")]) for g in grants}
        assert sums_by_grant(engine, t.windows, window_kind=MINUTE) == ledger_sums
        assert sums_by_grant(engine, t.windows, window_kind=DAY) == ledger_sums

        # Every closed window was published at its final version, open ones (today's DAY) not at all: the
        # newest UsageRecorded per window equals the closed windows.
        while _unpublished_closed_windows(engine) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _unpublished_closed_windows(engine) == 0
        newest = {}
        for _, _, event in sorted(
            read_topic(settings, codec, topics.name(TopicId.USAGE, settings)), key=_position
        ):
            newest[(event["grant_id"], event["window"], event["window_start"])] = (
                event["records"],
                event["bytes"],
            )
        every = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        closed_by = datetime.now(UTC) - WINDOW_GRACE
        assert newest == {
            (w.grant_id, w.window, w.window_start): (w.records, w.bytes)
            for kind in (MINUTE, DAY)
            for w in list_windows(engine, kind, *every)
            if w.window_end <= closed_by
        }
        assert len(newest) >= 3 * GRANTS  # the facts span at least three minutes per grant

        # The garbage was dead-lettered with its reason (possibly more than once after a kill), never counted.
        letters = read_topic(settings, codec, topics.name(TopicId.DEAD_LETTERS, settings))
        assert {(v["reason_code"], v["original_value"]) for _, _, v in letters} == {
            ("UNDECODABLE", value) for value in GARBAGE
        }
        assert worker.poll() is None
    finally:
        codec.registry.close()
        engine.dispose()


def _unpublished_closed_windows(engine) -> int:
    w = t.windows.c
    with engine.connect() as conn:
        query = (
            sa.select(sa.func.count())
            .select_from(t.windows)
            .where(w.version != w.published_version, w.window_end <= datetime.now(UTC) - WINDOW_GRACE)
        )
        return conn.execute(query).scalar_one()


def _position(found: tuple) -> tuple[int, int]:
    partition, offset, _ = found
    return partition, offset
