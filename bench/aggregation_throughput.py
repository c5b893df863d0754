"""Aggregation throughput: feed records counted into windows and committed to SQL, per second.

Measures the aggregation worker's own path without the broker: decoded TrafficFlow-like records in batches
of the worker's size (BATCH_RECORDS) through `Aggregator.apply` and `Aggregator.save` (one transaction per
batch: groups, positions, watermarks, closed windows and their outbox rows), on the database at
--database-url (a fresh SQLite file by default). Records are spread over --groups districts, one per second of
event time, with one aggregate grant of --window seconds; prints records/s and windows closed.

    .venv/bin/python bench/aggregation_throughput.py --records 200000 --groups 20 --window 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pdo.aggregation.app import BATCH_RECORDS
from pdo.aggregation.grants import AggregateGrants
from pdo.aggregation.state import Aggregator, FeedRecord, TopicNames
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage
from pdo.core.names import Event
from pdo.core.vocabulary import AggregateFunction, AggregateSpec, aggregate_spec_to_avro

START = datetime(2026, 3, 1, tzinfo=UTC)
DATASET = "bench-traffic"
FEED = f"pdo.feed.{DATASET}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--window", type=int, default=60, help="window length in seconds of event time")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        db.upgrade(url)
        engine = db.make_engine(url)
        grants = AggregateGrants()
        spec = AggregateSpec(args.window, ("district",), ("speed_kmh",), tuple(AggregateFunction))
        grants.apply(
            Event.AUTHORIZATION_GRANTED,
            {
                "grant_id": f"g-bench-{int(time.time())}",
                "tenant_id": "tenant:bench",
                "dataset_id": DATASET,
                "valid_from": START,
                "valid_until": START + timedelta(days=365),
                "kind": "AGGREGATE",
                "aggregate": aggregate_spec_to_avro(spec),
            },
        )
        aggregator = Aggregator(engine, lateness_s=5, floor=10, names=TopicNames(Settings.from_env()))
        aggregator.load()
        feeds = {DATASET: [(FEED, 0)]}
        closed = 0
        began = time.perf_counter()
        for first in range(0, args.records, BATCH_RECORDS):
            batch = [record(n, args.groups) for n in range(first, min(first + BATCH_RECORDS, args.records))]
            changes = aggregator.apply(batch, grants, {}, feeds, lambda where: True)
            aggregator.save(changes)
            closed += len(changes.closed)
        elapsed = time.perf_counter() - began
        engine.dispose()
    print(f"{args.records} records, {args.groups} groups, {args.window} s windows on {url.split(':')[0]}")
    print(
        f"  {args.records / elapsed:,.0f} records/s counted and committed ({elapsed:.2f} s), {closed} windows closed"
    )


def record(number: int, groups: int) -> FeedRecord:
    source = SourceMessage(FEED, 0, number, None, b"")
    value = {"district": f"district-{number % groups}", "speed_kmh": float(number % 120)}
    return FeedRecord(source, DATASET, START + timedelta(seconds=number), value)


if __name__ == "__main__":
    main()
