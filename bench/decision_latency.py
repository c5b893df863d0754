"""Decision latency: from a tenant's submitted request to the AuthorizationGranted event on the topic.

Runs the real authorization worker (`pdo authorization worker`, a faust app) against the running Kafka
broker, an in-process schema registry and the database at --database-url (PostgreSQL recommended),
on topics of its own, and prints median, p95 and p99 over --requests auto-approved requests.

    .venv/bin/python bench/decision_latency.py --requests 300 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from kafka import KafkaConsumer

from pdo.authorization.public import AuthorizationService, RequestSpec, load_policy
from pdo.authorization.testing import create_topics, delete_topics, isolated_home
from pdo.catalog.public import CatalogService, DatasetRegistration
from pdo.core import db, schemas, topics
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, utc_now
from pdo.core.kafka import kafka_python_connection
from pdo.core.serving import ServerThread
from pdo.core.topics import TopicId
from pdo.core.vocabulary import Classification, Domain, Openness, PriceKind, PricePlan
from pdo.registry.app import create_app

TENANT = "tenant:bench"
PROVIDER = "provider:environment-bureau"
NON_SENSITIVE_FIELDS = ("station_id", "district", "pm25", "aqi", "observed_at")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests to time (default 300)")
    parser.add_argument("--interval-ms", type=float, default=20, help="pause between submissions")
    parser.add_argument("--database-url", default=Settings.from_env().database_url)
    return parser.parse_args()


class GrantWatcher:
    """Notes when each grant's first event appears on the authorizations topic."""

    def __init__(self, settings: Settings) -> None:
        self.seen: dict[str, float] = {}
        self._consumer = KafkaConsumer(
            topics.name(TopicId.AUTHORIZATIONS, settings),
            **kafka_python_connection(settings),
            auto_offset_reset="earliest",
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=50).values():
                for record in records:
                    self.seen.setdefault(record.key.decode(), time.perf_counter())

    def __enter__(self) -> GrantWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def register_open_dataset(catalog: CatalogService) -> str:
    dataset_id = f"air-bench-{uuid.uuid4().hex[:8]}"
    catalog.register(
        PROVIDER,
        DatasetRegistration(
            dataset_id=dataset_id,
            owner_department="Environment Bureau",
            title="Air quality (benchmark)",
            domain=Domain.ENVIRONMENT,
            classification=Classification.GENERAL,
            openness=Openness.OPEN,
            record_schema=schemas.path_of("pdo.datasets.v1.AirQuality").read_text(),
            sensitive_fields=(),
            price_plan=PricePlan(PriceKind.FREE, Decimal("0.00")),
        ),
        PROVIDER,
    )
    return dataset_id


def submit(service: AuthorizationService, dataset_id: str) -> str:
    now = utc_now()
    spec = RequestSpec(
        dataset_id=dataset_id,
        purpose="decision latency benchmark",
        fields=NON_SENSITIVE_FIELDS,
        valid_from=now,
        valid_until=now + timedelta(days=1),
    )
    return service.submit_request(TENANT, spec, TENANT).request_id


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(0.02)


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[max(0, round(share * len(sorted_values)) - 1)]


def start_worker(settings: Settings, log: Path) -> subprocess.Popen:
    env = settings.environment()
    command = [sys.executable, "-m", "pdo.cli.main", "authorization", "worker"]
    command += ["--group", f"bench-{uuid.uuid4().hex[:6]}"]
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def measure(settings: Settings, requests: int, interval_s: float) -> list[float]:
    db.upgrade(settings.database_url)
    publisher = EventPublisher(settings)
    engine = db.make_engine(settings.database_url)
    catalog = CatalogService(engine, publisher, publisher.codec.registry, settings)
    service = AuthorizationService(engine, publisher, catalog, load_policy(settings), settings)
    worker = start_worker(settings, settings.run_dir / "worker.log")
    try:
        with GrantWatcher(settings) as watcher:
            dataset_id = register_open_dataset(catalog)
            print("waiting for the worker to decide a first request ...", flush=True)
            first = submit(service, dataset_id)
            wait_until(lambda: f"g-{first}" in watcher.seen, 120, "the worker's first decision")
            submitted: dict[str, float] = {}
            for count in range(1, requests + 1):
                started = time.perf_counter()
                submitted[f"g-{submit(service, dataset_id)}"] = started
                if count % 100 == 0:
                    print(f"  submitted {count}/{requests}", flush=True)
                time.sleep(interval_s)
            wait_until(lambda: submitted.keys() <= watcher.seen.keys(), 60, "every grant event")
            return sorted((watcher.seen[grant] - at) * 1000 for grant, at in submitted.items())
    finally:
        worker.terminate()
        worker.wait(30)
        publisher.close()
        engine.dispose()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="pdo-bench-") as folder:
        work = Path(folder)
        registry_db = f"sqlite:///{work / 'registry.db'}"
        db.upgrade(registry_db)
        with ServerThread(create_app(registry_db)) as registry:
            settings = dataclasses.replace(
                Settings.from_env(),
                home=isolated_home(work, f"bench-{uuid.uuid4().hex[:6]}"),
                run_dir=work / "run",
                registry_url=registry.url,
                database_url=args.database_url,
            )
            settings.run_dir.mkdir()
            names = create_topics(settings)
            try:
                latencies = measure(settings, args.requests, args.interval_ms / 1000)
            finally:
                delete_topics(settings, names)
    backend = args.database_url.split(":", 1)[0]
    print(
        f"decision latency, submit -> AuthorizationGranted on the topic, {len(latencies)} requests, {backend}:\n"
        f"  median {statistics.median(latencies):.1f} ms   p95 {percentile(latencies, 0.95):.1f} ms   "
        f"p99 {percentile(latencies, 0.99):.1f} ms   max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
