"""Sharing scaling out: 1, then 2 `pdo sharing worker` processes in one consumer group, on a feed of
--partitions partitions (default 4; topics/feed.yaml declares 3, the benchmark adds one), 1 grant, masking on.

For each worker count in --workers-list, in a topic namespace of its own (as bench/sharing_throughput.py sets
one up, with an in-process schema registry and the database at --database-url):

1. registers the TrafficFlow dataset and approves one grant, then grows the feed to --partitions;
2. starts the workers in one fresh consumer group and waits until the group is stable with all of them;
3. publishes --records records (keyed by record id, so spread over every partition) and waits until every
   delivery is on the tenant topic;
4. reports records/s = records / (last tenant record's timestamp - first tenant record's timestamp).

Run it on the three-node cluster (`pdo broker start --nodes 3`) to measure what the issue asks, e.g.

    PDO_KAFKA_BOOTSTRAP=127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112 .venv/bin/python bench/sharing_scaling.py \
        --records 20000 --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kafka.admin import NewPartitions
from kafka.errors import KafkaError
from sharing_throughput import (
    Setup,
    bench_settings,
    delivery_span_s,
    drop_namespace,
    expected_deliveries,
    prepare,
    publish,
    tenant_topics,
    wait_for_deliveries,
)

from pdo.core import db
from pdo.core.config import Settings
from pdo.core.kafka import admin_client
from pdo.core.serving import ServerThread
from pdo.registry.app import create_app


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20000, help="records published per run")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the feed")
    parser.add_argument("--workers-list", default="1,2", help="worker counts to run, comma separated")
    parser.add_argument("--timeout", type=float, default=600, help="give up on a run after this")
    parser.add_argument("--database-url", default=Settings.from_env().database_url)
    return parser.parse_args()


def grow_feed(setup: Setup, partitions: int) -> None:
    with admin_client(setup.settings) as admin:
        admin.create_partitions({setup.feed: NewPartitions(total_count=partitions)})


def start_workers(setup: Setup, count: int, group: str) -> list[subprocess.Popen]:
    command = [sys.executable, "-m", "pdo.cli.main", "sharing", "worker", "--group", group]
    return [
        subprocess.Popen(
            command,
            # Side by side on one host the workers' metrics endpoints would collide: none is needed here.
            env={**setup.settings.environment(), "PDO_SHARING_METRICS_PORT": "0"},
            stdout=(setup.settings.run_dir / f"worker-{number}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for number in range(count)
    ]


def wait_for_group(setup: Setup, group: str, members: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with admin_client(setup.settings) as admin:
                description = admin.describe_groups([group])[group]
        except KafkaError:  # no coordinator yet: a fresh cluster makes its offsets topic on first use
            description = {"group_state": "", "members": []}
        if description["group_state"] == "Stable" and len(description["members"]) == members:
            return
        time.sleep(0.5)
    raise SystemExit(f"the group {group} did not settle with {members} workers within {timeout_s:.0f} s")


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run(base: Settings, work: Path, workers: int, args: argparse.Namespace) -> tuple[float, float]:
    """(steady records/s, seconds from the first published record to the last delivery)."""
    print(f"\n== {workers} worker(s): setting up", flush=True)
    setup = prepare(base, work, 1)
    processes: list[subprocess.Popen] = []
    try:
        grow_feed(setup, args.partitions)
        group = f"scale-{uuid.uuid4().hex[:6]}"
        processes = start_workers(setup, workers, group)
        wait_for_group(setup, group, workers, args.timeout)
        started = time.monotonic()
        publish(setup, args.records, "s")
        wait_for_deliveries(setup, expected_deliveries(setup, args.records), processes[0], args.timeout)
        wall = time.monotonic() - started
        first, last = delivery_span_s(setup, tenant_topics(setup))
        rate = args.records / max((last - first) / 1000, 1e-3)
        print(f"   {workers} worker(s): {rate:,.0f} records/s steady, {wall:.1f} s publish->last delivery")
        return rate, wall
    finally:
        stop(processes)
        drop_namespace(setup.settings, setup.tag)


def main() -> None:
    args = parse_args()
    counts = [int(part) for part in args.workers_list.split(",") if part.strip()]
    with tempfile.TemporaryDirectory(prefix="pdo-bench-") as folder:
        work = Path(folder)
        registry_db = f"sqlite:///{work / 'registry.db'}"
        db.upgrade(registry_db)
        with ServerThread(create_app(registry_db)) as registry:
            base = bench_settings(registry.url, args.database_url)
            results = {count: run(base, work, count, args) for count in counts}
    brokers = len(base.kafka_bootstrap.split(","))
    print(
        f"\nsharing scaling, {args.records} records, feed of {args.partitions} partitions, 1 grant, "
        f"{brokers} broker(s) listed in PDO_KAFKA_BOOTSTRAP"
    )
    print("workers  records/s  publish->last delivery")
    for count, (rate, wall) in results.items():
        print(f"{count:>7}  {rate:>9,.0f}  {wall:>6.1f} s")


if __name__ == "__main__":
    main()
