"""Pipeline: feed -> sharing -> metering -> ledger in one run, beside the plain aiokafka loops, as ratios.

In a topic namespace of its own, with an in-process schema registry and a fresh database beside
--database-url (a new SQLite file, or a new PostgreSQL database dropped afterwards):

1. registers a TrafficFlow dataset and approves --grants grants (as bench/sharing_throughput.py: masking on,
   every second grant filtered to a third of the rows), publishes --records feed records (a backlog);
2. **sharing**: `pdo sharing worker` until the tenant topics hold every delivery, committed (its Kafka
   transactions commit the deliveries, their usage facts and the feed offsets together); deliveries/s =
   deliveries / (last - first tenant record timestamp);
3. **metering**: then `pdo metering worker` (read_committed; STEADY_BATCH_FACTS usage facts per ledger
   transaction, see bench/ledger_throughput.py) over the usage facts sharing wrote, until the ledger holds
   every delivery; deliveries metered/s = deliveries / (last - first ledger row seen);
4. **ceilings**: the plain aiokafka loops of bench/sharing_throughput.py on the same feed records: `copy`
   (bytes unchanged) and `avro` (decode, shape per grant, encode, produce);
5. prints the figures and the ratios the issue asks for: metering / sharing (goal >= 2) and sharing / the
   plain decode+shape+encode loop (goal >= 0.6).

Kafka's own ProducerPerformance is not run here: the broker's Maven download has no kafka-tools jar.

    PDO_KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/pipeline.py --records 20000 --grants 10 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:55433/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ledger_throughput import fresh_database, wait_for_ledger
from sharing_throughput import (
    Stages,
    delivery_span_s,
    drop_namespace,
    expected_deliveries,
    loop,
    loop_outputs,
    prepare,
    publish,
    start_worker,
    tenant_topics,
    wait_for_deliveries,
)

from pdo.core import db
from pdo.core.config import Settings
from pdo.core.serving import ServerThread
from pdo.registry.app import create_app


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20000, help="feed records in the backlog")
    parser.add_argument("--grants", type=int, default=10)
    parser.add_argument("--database-url", default=Settings.from_env().database_url)
    parser.add_argument("--timeout", type=float, default=900, help="give up on a worker after this")
    return parser.parse_args()


def stop(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()


def start_metering(settings: Settings) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "pdo.cli.main",
        "metering",
        "worker",
        "--group",
        f"bench-{uuid.uuid4().hex[:6]}",
    ]
    log = (settings.run_dir / "metering.log").open("wb")
    return subprocess.Popen(command, env=settings.environment(), stdout=log, stderr=subprocess.STDOUT)


def run(base: Settings, work: Path, args: argparse.Namespace) -> list[str]:
    setup = prepare(base, work, args.grants)
    try:
        publish(setup, args.records, "bulk")
        deliveries = expected_deliveries(setup, args.records)

        sharing = start_worker(setup)
        try:
            wait_for_deliveries(setup, deliveries, sharing, args.timeout)
            first_ms, last_ms = delivery_span_s(setup, tenant_topics(setup))
        finally:
            stop(sharing)
        shared = deliveries / ((last_ms - first_ms) / 1000)
        print(f"   sharing: {shared:,.0f} deliveries/s", flush=True)

        engine = db.make_engine(setup.settings.database_url)
        metering = start_metering(setup.settings)
        try:
            first_row, done = wait_for_ledger(engine, metering, deliveries, args.timeout)
        finally:
            stop(metering)
            engine.dispose()
        metered = deliveries / (done - first_row)
        print(f"   metering: {metered:,.0f} deliveries/s", flush=True)

        ceilings = {}
        for mode in ("copy", "avro"):
            seconds, written = asyncio.run(
                loop(setup, mode, args.records, loop_outputs(setup, mode, "p"), Stages())
            )
            ceilings[mode] = (args.records / seconds, written / seconds)
        avro_records, avro_deliveries = ceilings["avro"]
        return [
            f"sharing worker              {shared / deliveries * args.records:>10,.0f}  {shared:>12,.0f}",
            f"metering worker -> ledger   {'':>10}  {metered:>12,.0f}",
            f"aiokafka copy (ceiling)     {ceilings['copy'][0]:>10,.0f}  {ceilings['copy'][1]:>12,.0f}",
            f"aiokafka avro (ceiling)     {avro_records:>10,.0f}  {avro_deliveries:>12,.0f}",
            "",
            f"metering / sharing (deliveries/s, goal >= 2):             {metered / shared:.2f}",
            f"sharing / aiokafka decode+shape+encode (goal >= 0.6):     {shared / avro_deliveries:.2f}",
            f"sharing / aiokafka copy (records/s):                       "
            f"{shared / deliveries * args.records / ceilings['copy'][0]:.2f}",
        ]
    finally:
        setup.codec.registry.close()
        drop_namespace(setup.settings, setup.tag)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="pdo-bench-") as folder:
        work = Path(folder)
        registry_db = f"sqlite:///{work / 'registry.db'}"
        db.upgrade(registry_db)
        started = time.perf_counter()
        with (
            ServerThread(create_app(registry_db)) as registry,
            fresh_database(args.database_url, work) as url,
        ):
            # No audit worker runs in a benchmark: approving its grants must not wait for one.
            base = dataclasses.replace(
                Settings.from_env(), registry_url=registry.url, audit_fail_closed_after_s=0, database_url=url
            )
            rows = run(base, work, args)
    backend = args.database_url.split(":", 1)[0].split("+")[0]
    print(
        f"\npipeline, {args.records} backlog records, {args.grants} grants, TrafficFlow, masking on, {backend} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print("stage                        records/s  deliveries/s")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
