"""Recovery on the real broker: how long HTTP ingest and delivery stall after a broker restart, and how long a
dead sharing worker's partitions wait before the other worker delivers them.

In a topic namespace of its own (as bench/sharing_throughput.py sets one up: in-process schema registry, the
TrafficFlow dataset, one grant, database at --database-url):

1. **broker restart.** One `pdo sharing worker` and an in-process gateway; a client POSTs one record every
   --interval seconds to `/v1/datasets/<id>/records` (each with its own Idempotency-Key, retrying nothing).
   The broker is stopped (`pdo broker stop`), left down --down seconds, started again (`pdo broker start`
   returns once it answers: "ready"). Printed: seconds from ready to the first ingest call answered 200, and
   from ready to the first record the worker delivers to the tenant's topic (its Kafka timestamp).
2. **a worker dies.** Two workers in one group share the feed's partitions; records are published straight to
   the feed at --rate per second; after --kill-after seconds one worker is SIGKILLed. Printed, per feed
   partition, the delivery latency of the first record published after the kill: the dead worker's partitions
   show how long they waited for the group to hand them over.

Needs the local broker started by `pdo broker start` (it is restarted). Run with the same environment as it:

    .venv/bin/python bench/recovery.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import avro.schema
import httpx
from sharing_scaling import start_workers, stop, wait_for_group
from sharing_throughput import Setup, drop_namespace, prepare, read_range, tenant_topics, traffic_record

from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA
from pdo.catalog.public import CatalogService
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.events import EventPublisher
from pdo.core.kafka import producer, require_credentials
from pdo.core.serving import ServerThread
from pdo.gateway.app import create_app as create_gateway
from pdo.gateway.principals import PrincipalStore
from pdo.registry.app import create_app as create_registry


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--down", type=float, default=3.0, help="seconds the broker stays stopped")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between ingest calls")
    parser.add_argument("--rate", type=float, default=100, help="feed records per second in part 2")
    parser.add_argument("--kill-after", type=float, default=8.0, help="seconds of publishing before the kill")
    parser.add_argument("--after-kill", type=float, default=25.0, help="seconds of publishing after the kill")
    parser.add_argument("--parts", default="restart,death", help="which parts to run, comma separated")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file of the run")
    return parser.parse_args()


# ------------------------------------------------------------------------------------ 1. broker restart


@dataclasses.dataclass
class Call:
    started: float
    answered: float
    status: int


class IngestClient(threading.Thread):
    """POSTs one fresh record every `interval` seconds until stopped; keeps every call's outcome."""

    def __init__(self, url: str, dataset_id: str, key: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.dataset_id, self.key, self.interval = url, dataset_id, key, interval
        self.calls: list[Call] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        number = 0
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while not self.stopped.is_set():
                record = traffic_record(f"ingest-{number}", number)
                record["observed_at"] = record["observed_at"].isoformat()
                started = time.time()
                try:
                    status = http.post(
                        f"/v1/datasets/{self.dataset_id}/records",
                        content=json.dumps({"records": [record]}),
                        headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                self.calls.append(Call(started, time.time(), status))
                number += 1
                self.stopped.wait(self.interval)


def broker_command(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pdo.cli.main", "broker", *args], check=True, capture_output=True)


def restart_broker(down_s: float) -> tuple[float, float]:
    """(when the broker was stopped, when it answered again), wall-clock seconds."""
    stopped = time.time()
    broker_command("stop")
    time.sleep(down_s)
    broker_command("start")
    return stopped, time.time()


def gateway_for(setup: Setup) -> tuple[ServerThread, str]:
    """An in-process gateway over the setup's catalog, and a key of the dataset's provider."""
    engine = db.make_engine(setup.settings.database_url)
    publisher = EventPublisher(setup.settings)
    catalog = CatalogService(engine, publisher, publisher.codec.registry, setup.settings)
    principals = PrincipalStore(engine)
    key = principals.issue_key(principals.create_principal("provider", "transport-bureau").principal_id).key
    return ServerThread(create_gateway(setup.settings, catalog, None, engine)), key


def first_after(stamps: list[float], moment: float) -> float | None:
    later = [stamp for stamp in stamps if stamp >= moment]
    return min(later) - moment if later else None


def broker_restart(base: Settings, work: Path, args: argparse.Namespace) -> dict[str, float | None]:
    print("\n== 1. broker restart: one worker, HTTP ingest every", args.interval, "s", flush=True)
    setup = prepare(base, work, 1)
    group = f"recovery-{uuid.uuid4().hex[:6]}"
    workers = start_workers(setup, 1, group)
    server, key = gateway_for(setup)
    try:
        wait_for_group(setup, group, 1, 120)
        with server:
            client = IngestClient(server.url, setup.dataset_id, key, args.interval)
            client.start()
            time.sleep(3)
            stopped, ready = restart_broker(args.down)
            time.sleep(40)
            client.stopped.set()
            client.join()
        delivered = [
            ts / 1000 for name in tenant_topics(setup) for _, ts, _, _ in read_range(setup.settings, name)
        ]
        appended = [ts / 1000 for _, ts, _, _ in read_range(setup.settings, setup.feed)]
        first_appended = first_after(appended, ready)
        ingested = [call.answered for call in client.calls if call.status == 200]
        last_before = max((stamp for stamp in ingested if stamp < stopped), default=stopped)
        first_ingest = first_after(ingested, ready)
        figures = {
            "ready after stop (s)": ready - stopped,
            "ingest: ready -> first 200 (s)": first_ingest,
            "ingest: stalled for (s), last 200 before stop -> first after": (
                None if first_ingest is None else ready + first_ingest - last_before
            ),
            "feed: ready -> first record appended (s)": first_appended,
            "delivery: ready -> first tenant record (s)": first_after(delivered, ready),
            "delivery: first record appended after ready -> its delivery (s)": (
                None if first_appended is None else first_after(delivered, ready + first_appended)
            ),
            "ingest calls answered 503 or not at all": sum(1 for call in client.calls if call.status != 200),
        }
        for name, value in figures.items():
            print(f"   {name}: {'never' if value is None else f'{value:.1f}'}", flush=True)
        return figures
    finally:
        stop(workers)
        drop_namespace(setup.settings, setup.tag)


# -------------------------------------------------------------------------------------- 2. a worker dies


def publish_paced(setup: Setup, rate: float, seconds: float, label: str) -> list[tuple[str, int, float]]:
    """(record id, feed partition, feed timestamp s) of records published at `rate`/s for `seconds`."""
    schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
    kafka = producer(setup.settings, linger_ms=0)
    futures = []
    started = time.time()
    try:
        number = 0
        while time.time() < started + seconds:
            record = traffic_record(f"{label}-{number}", number)
            value = setup.codec.encode(setup.feed, schema, record)
            futures.append(
                (record["record_id"], kafka.send(setup.feed, key=record["record_id"].encode(), value=value))
            )
            number += 1
            time.sleep(max(0.0, started + number / rate - time.time()))
        kafka.flush()
        return [(rid, f.get(30).partition, f.get(30).timestamp / 1000) for rid, f in futures]
    finally:
        kafka.close()


def worker_death(base: Settings, work: Path, args: argparse.Namespace) -> dict[int, float | None]:
    print("\n== 2. a worker dies: two workers, SIGKILL one", flush=True)
    setup = prepare(base, work, 1)
    group = f"recovery-{uuid.uuid4().hex[:6]}"
    workers = start_workers(setup, 2, group)
    try:
        wait_for_group(setup, group, 2, 120)
        killed_at: list[float] = []

        def kill_later() -> None:
            time.sleep(args.kill_after)
            killed_at.append(time.time())
            os.kill(workers[0].pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_later)
        killer.start()
        published = publish_paced(setup, args.rate, args.kill_after + args.after_kill, "death")
        killer.join()
        time.sleep(10)  # the last records reach the tenant
        delivered = {
            key.decode(): ts / 1000
            for name in tenant_topics(setup)
            for _, ts, key, _ in read_range(setup.settings, name)
            if key is not None
        }
        latency: dict[int, float | None] = {}
        for partition in sorted({p for _, p, _ in published}):
            after = [(ts, rid) for rid, p, ts in published if p == partition and ts >= killed_at[0]]
            first_ts, first_id = min(after)
            latency[partition] = delivered[first_id] - first_ts if first_id in delivered else None
        for partition, value in latency.items():
            shown = "never delivered" if value is None else f"{value:.2f} s"
            print(f"   partition {partition}: first record published after the kill delivered after {shown}")
        return latency
    finally:
        stop(workers[1:])
        drop_namespace(setup.settings, setup.tag)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="pdo-bench-") as folder:
        work = Path(folder)
        registry_db = f"sqlite:///{work / 'registry.db'}"
        db.upgrade(registry_db)
        with ServerThread(create_registry(registry_db)) as registry:
            database_url = args.database_url or f"sqlite:///{work / 'pdo.db'}"
            local = Settings.from_env()
            # The run's settings live in their own run folder: carry the local broker's admin password over.
            password = require_credentials(local)[1]
            base = dataclasses.replace(
                local,
                registry_url=registry.url,
                database_url=database_url,
                kafka_password=password,
                audit_fail_closed_after_s=0,  # no audit worker in this run
                masking_key=secrets.token_urlsafe(48),
            )
            parts = args.parts.split(",")
            restart = broker_restart(base, work, args) if "restart" in parts else {}
            death = worker_death(base, work, args) if "death" in parts else {}
    print("\nrecovery figures")
    for name, value in restart.items():
        print(f"  {name}: {'never' if value is None else f'{value:.1f}'}")
    if death:
        worst = max((value for value in death.values() if value is not None), default=None)
        shown = "never" if worst is None else f"{worst:.1f} s"
        print(f"  worker death: the slowest partition resumed after {shown}")


if __name__ == "__main__":
    main()
