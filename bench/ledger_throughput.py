"""Ledger throughput: usage facts per second into the metering ledger, on the database at --database-url.

Two measurements, each on a fresh database (a new SQLite file, or a new PostgreSQL database on the server of
--database-url, dropped afterwards):

1. **ledger**: `Ledger.record` alone, in batches of N for each N in --batch-sizes, over --facts facts spread
   over --grants grants (each batch one transaction: period lock, insert-or-ignore with RETURNING, MINUTE and
   DAY window upserts, quota check on every grant, since every grant has a quota). Then the same facts
   again: a redelivery, every fact a duplicate;
2. **worker**: --facts deliveries (plus 10 % duplicates) written to a deliveries topic of its own namespace
   before any consumer runs (a backlog), then `pdo metering worker` (faust, a subprocess, fresh group, batch
   size 1000) until the ledger holds them all; twice: as one RecordsDelivered per delivery (sharing before
   its transactions) and as RecordsDeliveredBatch of --deliveries-per-fact deliveries (sharing now). Steady
   state: deliveries / (time from the first ledger row to the last), so start-up is not counted (the time
   from start is printed too).

    PDO_KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/ledger_throughput.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:55433/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pdo.authorization.testing import create_topics, isolated_home
from pdo.core import db, schemas, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.kafka import admin_client, producer
from pdo.core.names import Event
from pdo.core.registry_client import RegistryClient
from pdo.core.serving import ServerThread
from pdo.core.topics import TopicId
from pdo.metering import tables as t
from pdo.metering.ledger import Ledger, UsageFact
from pdo.metering.testing import insert_grant, records_delivered_event, usage_fact
from pdo.registry.app import create_app

# Usage facts per ledger transaction in the batched worker runs (~15,000 deliveries): a worker that is behind
# takes up to 1,000 per transaction; fewer keep several transactions in a run, so the steady state (first to
# last ledger row) can be timed at all.
STEADY_BATCH_FACTS = 100


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=Settings.from_env().database_url)
    parser.add_argument("--facts", type=int, default=20000, help="distinct usage facts per run")
    parser.add_argument("--batch-sizes", default="1,100,1000", help="ledger batch sizes, comma separated")
    parser.add_argument("--grants", type=int, default=10)
    parser.add_argument("--skip-worker", action="store_true", help="measure the ledger write path only")
    parser.add_argument("--timeout", type=float, default=600, help="give up on the worker after this")
    parser.add_argument(
        "--deliveries-per-fact",
        type=int,
        default=150,
        help="deliveries per RecordsDeliveredBatch in the batched worker run (sharing at 10 grants writes ~170: "
        "a batch of 500 records over 3 feed partitions)",
    )
    return parser.parse_args()


@contextlib.contextmanager
def fresh_database(url: str, folder: Path) -> Iterator[str]:
    """An empty, migrated database beside `url`: a new SQLite file, or a new database on the same server."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        fresh = f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        db.upgrade(fresh)
        yield fresh
        return
    name = f"pdo_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        fresh = parsed.set(database=name).render_as_string(hide_password=False)
        db.upgrade(fresh)
        yield fresh
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_facts(count: int, grants: list[str], start: datetime) -> list[UsageFact]:
    generator = random.Random(1)
    return [
        usage_fact(
            f"d-{uuid.uuid4().hex}",
            grant_id,
            start + timedelta(milliseconds=number * 3),
            tenant_id=f"tenant:{grant_id}",
            size=generator.randrange(100, 2000),
            offset=number,
        )
        for number, grant_id in enumerate(grants[number % len(grants)] for number in range(count))
    ]


def with_grants(url: str, grants: list[str], start: datetime) -> None:
    engine = db.make_engine(url)
    try:
        for grant_id in grants:  # every grant has a quota, never reached: the quota check runs in full
            insert_grant(
                engine, grant_id, start - timedelta(days=1), f"tenant:{grant_id}", daily_quota_records=10**9
            )
    finally:
        engine.dispose()


def ledger_rate(url: str, facts: list[UsageFact], batch: int) -> tuple[float, float]:
    """(new facts/s, duplicate facts/s) through Ledger.record in batches of `batch`."""
    engine = db.make_engine(url)
    ledger = Ledger(engine)
    try:
        rates = []
        for _ in ("new", "redelivered"):
            started = time.perf_counter()
            for first in range(0, len(facts), batch):
                ledger.record(facts[first : first + batch])
            rates.append(len(facts) / (time.perf_counter() - started))
        assert ledger_rows(engine) == len(facts)
        return rates[0], rates[1]
    finally:
        engine.dispose()


def worker_rate(
    base: Settings, folder: Path, facts: list[UsageFact], timeout_s: float, per_fact: int
) -> tuple[float, float]:
    """(steady-state deliveries/s, deliveries/s from worker start) of `pdo metering worker` over a backlog
    of usage facts with `per_fact` deliveries each."""
    tag = f"bench-{uuid.uuid4().hex[:6]}"
    settings = dataclasses.replace(base, home=isolated_home(folder / tag, tag), run_dir=folder / tag / "run")
    create_topics(settings)
    codec = AvroCodec(RegistryClient.for_settings(settings))
    try:
        publish_backlog(settings, codec, facts, per_fact)
        engine = db.make_engine(settings.database_url)
        worker = start_metering(settings, 1000 if per_fact == 1 else STEADY_BATCH_FACTS)
        started = time.perf_counter()
        try:
            fill = wait_for_ledger(engine, worker, len(facts), timeout_s)
        finally:
            worker.terminate()
            worker.wait(30)
            engine.dispose()
        return fill.steady_rate(len(facts)), len(facts) / (fill.done_at - started)
    finally:
        codec.registry.close()
        with admin_client(settings) as admin:
            admin.delete_topics([name for name in admin.list_topics() if name.startswith(f"pdo.{tag}.")])


def publish_backlog(settings: Settings, codec: AvroCodec, facts: list[UsageFact], per_fact: int) -> None:
    """The facts (+10 % again) as RecordsDelivered, one per delivery (`per_fact` 1, sharing before its
    transactions), or as RecordsDeliveredBatch of up to `per_fact` deliveries of one grant each (sharing now)."""
    topic = topics.name(TopicId.DELIVERIES, settings)
    kafka = producer(settings, linger_ms=20, max_in_flight_requests_per_connection=5)
    try:
        for grant_id, value in fact_messages(
            settings, codec, topic, facts + facts[: len(facts) // 10], per_fact
        ):
            kafka.send(topic, key=grant_id.encode(), value=value)
        kafka.flush()
    finally:
        kafka.close()


def fact_messages(
    settings: Settings, codec: AvroCodec, topic: str, facts: list[UsageFact], per_fact: int
) -> Iterator[tuple[str, bytes]]:
    if per_fact == 1:
        schema = schemas.get(Event.RECORDS_DELIVERED, settings.home / "schemas")
        for fact in facts:
            yield fact.grant_id, codec.encode(topic, schema, records_delivered_event(fact))
        return
    schema = schemas.get(Event.RECORDS_DELIVERED_BATCH, settings.home / "schemas")
    by_grant: dict[str, list[UsageFact]] = {}
    for fact in facts:
        by_grant.setdefault(fact.grant_id, []).append(fact)
    for grant_id, of_grant in by_grant.items():
        for first in range(0, len(of_grant), per_fact):
            yield grant_id, codec.encode(topic, schema, batch_event(of_grant[first : first + per_fact]))


def batch_event(facts: list[UsageFact]) -> dict:
    first = facts[0]
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": first.delivered_at,
        "actor": "system:bench",
        "tenant_id": first.tenant_id,
        "dataset_id": first.dataset_id,
        "grant_id": first.grant_id,
        "target_topic": f"pdo.tenant.bench.{first.dataset_id}",
        "source_topic": first.source_topic,
        "source_partition": first.source_partition,
        "masking_policy_version": "m2-bench",
        "deliveries": [
            {
                "delivery_id": delivery.delivery_id,
                "source_offset": delivery.first_offset,
                "bytes": delivery.bytes,
            }
            for fact in facts
            for delivery in fact.deliveries
        ],
    }


def start_metering(settings: Settings, batch_size: int) -> subprocess.Popen:
    env = settings.environment()
    command = [
        sys.executable,
        "-m",
        "pdo.cli.main",
        "metering",
        "worker",
        "--group",
        f"bench-{uuid.uuid4().hex[:6]}",
        "--batch-size",
        str(batch_size),
    ]
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    # Its own log: in bench/pipeline.py a sharing worker's worker.log is beside it.
    log = (settings.run_dir / "metering.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


@dataclasses.dataclass(frozen=True)
class LedgerFill:
    """How the ledger filled: when it first held rows (time.perf_counter), how many, when it held them all."""

    first_at: float
    first_rows: int
    done_at: float

    def steady_rate(self, total: int) -> float:
        """Rows per second after the first rows seen (those were written before `first_at`); NaN when one
        ledger transaction wrote them all, so no steady state could be timed."""
        if self.done_at <= self.first_at:
            return float("nan")
        return (total - self.first_rows) / (self.done_at - self.first_at)


def ledger_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t.ledger)).scalar_one()


def wait_for_ledger(engine, worker: subprocess.Popen, total: int, timeout_s: float) -> LedgerFill:
    """Until the ledger holds `total` rows, polling every 20 ms."""
    deadline = time.perf_counter() + timeout_s
    first: tuple[float, int] | None = None
    while time.perf_counter() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with {worker.returncode}")
        count = ledger_rows(engine)
        now = time.perf_counter()
        if count and first is None:
            first = (now, count)
        if first is not None and count >= total:
            return LedgerFill(first[0], first[1], now)
        time.sleep(0.02)
    raise SystemExit(f"the ledger did not reach {total} rows within {timeout_s} s")


def main() -> None:
    args = parse_args()
    batches = [int(part) for part in args.batch_sizes.split(",") if part.strip()]
    grants = [f"g-bench-{number}" for number in range(args.grants)]
    backend = make_url(args.database_url).get_backend_name()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdo-bench-") as folder:
        work = Path(folder)
        start = datetime.now(UTC)
        for batch in batches:
            count = min(args.facts, 2000) if batch == 1 else args.facts  # one fact per transaction is slow
            facts = make_facts(count, grants, start)
            with fresh_database(args.database_url, work) as url:
                with_grants(url, grants, start)
                new, duplicate = ledger_rate(url, facts, batch)
            rows.append(f"ledger, batches of {batch:<5}  {count:>7}  {new:>10,.0f}  {duplicate:>12,.0f}")
        if not args.skip_worker:
            registry_db = f"sqlite:///{work / 'registry.db'}"
            db.upgrade(registry_db)
            with ServerThread(create_app(registry_db)) as registry:
                for per_fact in (1, args.deliveries_per_fact):
                    with fresh_database(args.database_url, work) as url:
                        with_grants(url, grants, start)
                        base = dataclasses.replace(
                            Settings.from_env(), registry_url=registry.url, database_url=url
                        )
                        facts = make_facts(args.facts, grants, start)
                        steady, overall = worker_rate(base, work, facts, args.timeout, per_fact)
                    shape = "1 delivery per fact" if per_fact == 1 else f"{per_fact} deliveries per fact"
                    rows.append(
                        f"worker, topic -> ledger     {args.facts:>7}  {steady:>10,.0f}  "
                        f"{'':>12}  ({shape}; from start: {overall:,.0f}/s; +10 % duplicates on the topic)"
                    )
    print(f"\nledger throughput on {backend}, {args.grants} grants with quotas (usage facts per second)")
    print("path                        facts    new/s       redelivered/s   (worker: deliveries/s)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
