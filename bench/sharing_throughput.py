"""Sharing throughput and latency: the real sharing worker beside plain aiokafka loops on the same records.

For each grant count in --grants-list (default 1,10) the script, in a topic namespace of its own, with an
in-process schema registry and the database at --database-url:

1. registers a TrafficFlow dataset (plate_number KEEP_FIRST_LAST, driver_phone MASK_MIDDLE_DIGITS) and
   approves one grant per tenant (G tenants; every grant delivers the masked plate and phone; every
   second grant also has the row filter district == 'Haidian', a third of the rows);
2. publishes --records TrafficFlow records to the feed before any consumer runs (a backlog);
3. **worker**: starts `pdo sharing worker` (faust, a subprocess, fresh group) and waits until every
   expected delivery is on the tenant topics. Throughput is steady state: input records / (last tenant
   record's timestamp - first tenant record's timestamp), so worker start-up and the first fence are not
   counted (the time from worker start to the last delivery is printed too);
4. **latency**: with that worker caught up, publishes --latency-records records at --rate per second;
   latency = tenant record's Kafka timestamp - feed record's Kafka timestamp (both CreateTime set by
   producers on this machine), over every delivery; then the worker is stopped;
5. **ceilings**, plain aiokafka on the same feed records, same broker, one process:
   - `copy`: consume -> produce the bytes unchanged to one topic (no Avro);
   - `avro`: consume -> decode (fastavro, our codec) -> `pdo.sharing.transform.shape` per grant -> encode
     -> produce to one topic per grant (tenant records only, no usage facts);
   - `handler`: consume -> the service's own `FeedHandler.handle` (decode, shape, encode; usage facts go
     per transaction since sharing batches them)
     -> produce everything it returns;
   each produces without waiting per record (acks=all, awaited per fetched batch), then the `avro` and
   `handler` loops are timed live for latency the same way as the worker;
6. prints a table, and a per-record breakdown of where the `avro` / `handler` loops spend their time.

    PDO_KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/sharing_throughput.py --records 20000 \
        --grants-list 1,10 --database-url postgresql+psycopg://postgres@127.0.0.1:55433/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import avro.schema
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from kafka.admin import NewTopic

from pdo.authorization.public import AuthorizationService, RequestSpec, load_policy
from pdo.authorization.testing import (
    TRAFFIC_FLOW_SCHEMA,
    approved_grant,
    create_topics,
    isolated_home,
    register_traffic_dataset,
)
from pdo.catalog.public import CatalogService, get_dataset
from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.deadletters import source_message
from pdo.core.events import EventPublisher, utc_now
from pdo.core.kafka import admin_client, aiokafka_connection, producer, require_credentials
from pdo.core.registry_client import RegistryClient
from pdo.core.serving import ServerThread
from pdo.core.topics import TopicId, feed_topic, tenant_topic
from pdo.registry.app import create_app
from pdo.sharing.agents import FeedHandler
from pdo.sharing.app import masking_key
from pdo.sharing.grants import GrantBook
from pdo.sharing.transform import Provenance, shape

PROVIDER = "provider:transport-bureau"
DISTRICTS = ("Haidian", "Chaoyang", "Dongcheng")
FIELDS = ("record_id", "district", "plate_number", "vehicle_type", "speed_kmh", "driver_phone")
FILTER = "district == 'Haidian'"
# Seconds a read-back may take before it counts as stalled (a read of 100,000 records takes a few).
READ_TIMEOUT_S = 120
# Seconds the tenant topics' committed ends must stand still before a run counts as delivered.
SETTLED_S = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20000, help="backlog records per grant count")
    parser.add_argument("--grants-list", default="1,10", help="grant counts to run, comma separated")
    parser.add_argument("--latency-records", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200, help="records per second in the latency phase")
    parser.add_argument("--timeout", type=float, default=900, help="give up on a worker run after this")
    parser.add_argument("--database-url", default=Settings.from_env().database_url)
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile FeedHandler.handle over the records"
    )
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------- setup


@dataclasses.dataclass
class Setup:
    settings: Settings
    tag: str
    dataset_id: str
    feed: str
    grants: list[tuple[str, str, bool]]  # (grant id, tenant id, filtered)
    codec: AvroCodec
    book: GrantBook


def bench_settings(registry_url: str, database_url: str) -> Settings:
    """This environment's settings with the run's registry and database. No audit worker runs in a benchmark:
    approving its grants must not wait for one. Each run moves its run folder, where a local broker keeps the
    admin's password, into its own namespace: the password is carried over, as a deployment would hand it on.
    Masking keys its pseudonyms with a key of the run's own (the workers refuse the published placeholder)."""
    local = Settings.from_env()
    return dataclasses.replace(
        local,
        registry_url=registry_url,
        database_url=database_url,
        audit_fail_closed_after_s=0,
        kafka_password=require_credentials(local)[1],
        masking_key=secrets.token_urlsafe(48),
    )


def prepare(base: Settings, work: Path, grant_count: int) -> Setup:
    tag = f"bench-{uuid.uuid4().hex[:6]}"
    folder = work / tag
    folder.mkdir()
    settings = dataclasses.replace(base, home=isolated_home(folder, tag), run_dir=folder / "run")
    settings.run_dir.mkdir()
    create_topics(settings)
    db.upgrade(settings.database_url)
    engine = db.make_engine(settings.database_url)
    publisher = EventPublisher(settings)
    try:
        catalog = CatalogService(engine, publisher, publisher.codec.registry, settings)
        service = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
        dataset_id = register_traffic_dataset(catalog, title="Traffic flow (benchmark)")
        grants = []
        start = utc_now() - timedelta(minutes=1)
        for number in range(grant_count):
            tenant = f"tenant:bench{number}"
            filtered = number % 2 == 1
            request = service.submit_request(
                tenant,
                RequestSpec(
                    dataset_id=dataset_id,
                    purpose="sharing throughput benchmark",
                    fields=FIELDS,
                    row_filter=FILTER if filtered else None,
                    valid_from=start,
                    valid_until=start + timedelta(days=1),
                ),
                tenant,
            )
            grants.append((approved_grant(service, request.request_id, "operator:bench"), tenant, filtered))
    finally:
        publisher.close()
        engine.dispose()
    codec = AvroCodec(RegistryClient.for_settings(settings))
    return Setup(
        settings, tag, dataset_id, feed_topic(dataset_id, settings), grants, codec, read_book(settings, codec)
    )


def read_book(settings: Settings, codec: AvroCodec) -> GrantBook:
    """The grant book as a worker would build it: every authorization event from the beginning."""
    book = GrantBook()
    for _, _, _, value in read_range(settings, topics.name(TopicId.AUTHORIZATIONS, settings)):
        decoded = codec.decode(value)
        book.apply(decoded.schema_name, decoded.value)
    return book


def drop_namespace(settings: Settings, tag: str) -> None:
    with admin_client(settings) as admin:
        admin.delete_topics([name for name in admin.list_topics() if name.startswith(f"pdo.{tag}.")])


def make_topic(settings: Settings, name: str) -> None:
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])


def traffic_record(record_id: str, number: int) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "checkpoint_id": f"cp-{number % 40}",
        "district": DISTRICTS[number % len(DISTRICTS)],
        "plate_number": f"京A{(number * 7919) % 100000:05d}",
        "vehicle_type": "PASSENGER_CAR",
        "speed_kmh": 40.0 + number % 50,
        "lane": number % 4 + 1,
        "direction": "NORTHBOUND",
        "observed_at": datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
        "driver_phone": f"138{number % 100000000:08d}",
    }


def publish(setup: Setup, count: int, label: str, rate: float | None = None) -> dict[bytes, int]:
    """Publish `count` records (paced at `rate`/s if given); record id -> the feed record's timestamp (ms)."""
    schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
    kafka = producer(
        setup.settings, linger_ms=5 if rate is None else 0, max_in_flight_requests_per_connection=5
    )
    futures = []
    started = time.perf_counter()
    try:
        for number in range(count):
            record = traffic_record(f"{label}-{number}", number)
            key = record["record_id"].encode()
            futures.append(
                (key, kafka.send(setup.feed, key=key, value=setup.codec.encode(setup.feed, schema, record)))
            )
            if rate:
                time.sleep(max(0.0, started + (number + 1) / rate - time.perf_counter()))
        kafka.flush()
        return {key: future.get(timeout=30).timestamp for key, future in futures}
    finally:
        kafka.close()


def expected_deliveries(setup: Setup, count: int) -> int:
    haidian = sum(1 for number in range(count) if number % len(DISTRICTS) == 0)
    return sum(haidian if filtered else count for _, _, filtered in setup.grants)


# ---------------------------------------------------------------------------------------------- reading


def _committed_consumer(settings: Settings) -> AIOKafkaConsumer:
    # read_committed: sharing writes tenant records and usage facts in Kafka transactions, so a reader that
    # counts them must not see an aborted batch. aiokafka, not kafka-python: kafka-python's fetch stalled on
    # transactional batches after seeks.
    return AIOKafkaConsumer(
        **aiokafka_connection(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


async def _partitions(consumer: AIOKafkaConsumer, names: list[str]) -> list[TopicPartition]:
    # A consumer without a subscription knows a topic's partitions only from metadata it fetched itself.
    cluster = await consumer._client.fetch_all_metadata()
    return [
        TopicPartition(name, n) for name in names for n in sorted(cluster.partitions_for_topic(name) or ())
    ]


async def _end_offsets(settings: Settings, names: list[str]) -> dict[TopicPartition, int]:
    consumer = _committed_consumer(settings)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, names)
        return await consumer.end_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()


def end_offsets(settings: Settings, names: list[str]) -> dict[TopicPartition, int]:
    """The last stable offset of each partition of `names`: everything before it is committed or aborted."""
    return asyncio.run(_end_offsets(settings, names))


async def _read_committed(
    settings: Settings, names: list[str], start: dict[TopicPartition, int]
) -> list[ConsumerRecord]:
    consumer = _committed_consumer(settings)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, names)
        ends = await consumer.end_offsets(partitions) if partitions else {}
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(tp, 0))
        return await _read_to(consumer, ends)
    finally:
        await consumer.stop()


async def _read_to(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> list[ConsumerRecord]:
    """The committed records before `ends`. A partition is done when its position reached its end, whether or
    not a record came: a transactional partition ends with a commit marker, which is no record, but which the
    consumer's position steps over."""
    found: list[ConsumerRecord] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while behind := [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"reading back stalled: {len(behind)} partitions short of their end, e.g. {behind[0]}"
            )
        batch = await consumer.getmany(*behind, timeout_ms=200, max_records=5000)
        for tp, messages in batch.items():
            found.extend(message for message in messages if message.offset < ends[tp])
    return found


def read_committed(
    settings: Settings, names: list[str], start: dict[TopicPartition, int] | None = None
) -> list[ConsumerRecord]:
    """Every committed record of the topics `names` from `start` (default: the beginning) to their last
    stable offsets now, as a read_committed tenant sees them."""
    return asyncio.run(_read_committed(settings, names, start or {}))


def read_range(
    settings: Settings, topic: str, start: dict[TopicPartition, int] | None = None
) -> list[tuple[int, int, bytes | None, bytes]]:
    """(partition, timestamp ms, key, value) of `topic`'s committed records from `start` to its end now."""
    return [(m.partition, m.timestamp, m.key, m.value) for m in read_committed(settings, [topic], start)]


# ---------------------------------------------------------------------------------------------- worker


def start_worker(setup: Setup) -> subprocess.Popen:
    settings = setup.settings
    env = settings.environment()
    command = [
        sys.executable,
        "-m",
        "pdo.cli.main",
        "sharing",
        "worker",
        "--group",
        f"bench-{uuid.uuid4().hex[:6]}",
    ]
    log = (settings.run_dir / "worker.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a worker's log, for an error message (the run folder is deleted on exit)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def tenant_topics(setup: Setup) -> list[str]:
    return [tenant_topic(tenant, setup.dataset_id, setup.settings) for _, tenant, _ in setup.grants]


def wait_for_deliveries(
    setup: Setup,
    target: int,
    worker: subprocess.Popen,
    timeout_s: float,
    start: dict[TopicPartition, int] | None = None,
) -> list[ConsumerRecord]:
    """Until the tenant topics hold `target` committed records after `start`; those records. Their last stable
    offsets count the records and one commit marker per partition per transaction, so once the offsets reach
    `target` and stop moving, the records are read back and counted."""
    deadline = time.monotonic() + timeout_s
    last_print = time.monotonic()
    base = sum((start or {}).values())
    seen, still_since = -1, time.monotonic()
    while True:
        if worker.poll() is not None:
            raise SystemExit(
                f"the worker exited with {worker.returncode}; its log ends:\n"
                + log_tail(setup.settings.run_dir / "worker.log")
            )
        done = sum(end_offsets(setup.settings, tenant_topics(setup)).values()) - base
        if done != seen:
            seen, still_since = done, time.monotonic()
        if done >= target and time.monotonic() - still_since >= SETTLED_S:
            committed = read_committed(setup.settings, tenant_topics(setup), start)
            if len(committed) >= target:
                return committed
            still_since = time.monotonic()  # markers, not records, reached the target: wait for more
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done}/{target} deliveries after {timeout_s:.0f} s")
        if time.monotonic() - last_print > 15:
            print(f"    ... {done}/{target} deliveries", flush=True)
            last_print = time.monotonic()
        time.sleep(0.5)


def delivery_span_s(setup: Setup, names: list[str]) -> tuple[float, float]:
    """First and last committed record timestamps (ms) over the topics `names`."""
    return delivery_span(read_committed(setup.settings, names))


def delivery_span(records: list[ConsumerRecord]) -> tuple[float, float]:
    """First and last timestamps (ms) of `records`."""
    stamps = [record.timestamp for record in records]
    return min(stamps), max(stamps)


def latencies(records: list[ConsumerRecord], published: dict[bytes, int]) -> list[float]:
    """Milliseconds from each published feed record to each of its deliveries among `records`, sorted."""
    return sorted(record.timestamp - published[record.key] for record in records if record.key in published)


# ---------------------------------------------------------------------------------------------- loops


class Stages:
    """Seconds spent per stage, summed over records."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def report(self, records: int) -> str:
        total = sum(self.seconds.values())
        parts = [f"{name} {seconds / records * 1e6:.0f} µs" for name, seconds in self.seconds.items()]
        return f"{total / records * 1e6:.0f} µs/record = " + " + ".join(parts)


async def loop(
    setup: Setup,
    mode: str,
    count: int,
    out: dict[str, str],
    stages: Stages | None = None,
    live: threading.Event | None = None,
    backlog: int = 0,
) -> tuple[float, int]:
    """Consume `count` feed records from the beginning and produce per `mode`; (seconds from the first
    record received to the last acknowledgement, messages written). `live` is set once `backlog` records
    are processed and acknowledged (the loop has caught up)."""
    settings = setup.settings
    consumer = AIOKafkaConsumer(
        **aiokafka_connection(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    kafka = AIOKafkaProducer(**aiokafka_connection(settings), acks="all", linger_ms=0)
    await consumer.start()
    await kafka.start()
    engine = db.make_engine(settings.database_url)
    scopes = setup.book.active_for(setup.dataset_id, utc_now())
    dataset = get_dataset(engine, setup.dataset_id)
    # The dataset as the worker holds it (its in-memory view of pdo.catalog), not a SQL query per record.
    helper = FeedHandler(settings, setup.codec, lambda d: dataset, setup.book, masking_key(settings))
    handler = helper if mode == "handler" else None
    plans = {scope.grant_id: helper.plan(scope, dataset) for scope in scopes}
    key_bytes = masking_key(settings)
    try:
        partitions = await _partitions(consumer, [setup.feed])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = written = 0
        first = None
        pending: list = []
        clock = time.perf_counter
        while seen < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            for messages in batch.values():
                for message in messages:
                    first = first or clock()
                    seen += 1
                    if mode == "copy":
                        pending.append(await kafka.send(out["copy"], message.value, key=message.key))
                        continue
                    if mode == "handler":
                        t0 = clock()
                        published_at = datetime.fromtimestamp(message.timestamp / 1000, UTC)
                        prepared = handler.handle(source_message(message), published_at)
                        t1 = clock()
                        for item in prepared.outgoing:
                            pending.append(await kafka.send(item.topic, item.value, key=item.key))
                        stages.seconds["FeedHandler.handle"] += t1 - t0
                        stages.seconds["produce (enqueue)"] += clock() - t1
                        continue
                    t0 = clock()
                    decoded = setup.codec.decode(message.value)
                    t1 = clock()
                    stages.seconds["decode"] += t1 - t0
                    published_at = datetime.fromtimestamp(message.timestamp / 1000, UTC)
                    for scope in scopes:
                        t1 = clock()
                        plan = plans[scope.grant_id]
                        provenance = Provenance(
                            setup.dataset_id,
                            message.topic,
                            message.partition,
                            message.offset,
                            scope.grant_id,
                            plan.policy_version,
                            published_at,
                        )
                        shaped = shape(decoded.value, scope, plan.rows, provenance, key_bytes)
                        t2 = clock()
                        stages.seconds["shape+mask"] += t2 - t1
                        if shaped is None:
                            continue
                        value = setup.codec.encode(out[scope.grant_id], plan.tenant_schema, shaped)
                        t3 = clock()
                        stages.seconds["encode"] += t3 - t2
                        pending.append(await kafka.send(out[scope.grant_id], value, key=message.key))
                        stages.seconds["produce (enqueue)"] += clock() - t3
            if pending:
                t0 = clock()
                await asyncio.gather(*pending)
                written += len(pending)
                pending = []
                if stages is not None:
                    stages.seconds["await acks"] += clock() - t0
            if live is not None and seen >= backlog:
                live.set()
        return clock() - (first or clock()), written
    finally:
        await consumer.stop()
        await kafka.stop()
        engine.dispose()


def loop_outputs(setup: Setup, mode: str, label: str) -> dict[str, str]:
    names = (
        {"copy": f"pdo.{setup.tag}.bench.{label}.copy"}
        if mode == "copy"
        else {
            grant_id: f"pdo.{setup.tag}.bench.{label}.{mode}.{number}"
            for number, (grant_id, _, _) in enumerate(setup.grants)
        }
    )
    if mode != "handler":
        for name in names.values():
            make_topic(setup.settings, name)
    return names


def run_live_loop(setup: Setup, mode: str, label: str, total: int, publish_count: int, rate: float):
    """Latency of a loop running live: start it, wait until it has caught up, publish paced records."""
    out = loop_outputs(setup, mode, label)
    names = tenant_topics(setup) if mode == "handler" else list(out.values())
    before = {tp: o for tp, o in end_offsets(setup.settings, names).items()}
    live = threading.Event()
    result: dict[str, Any] = {}

    def target() -> None:
        result["r"] = asyncio.run(loop(setup, mode, total + publish_count, out, Stages(), live, total))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    if not live.wait(300):
        raise SystemExit(f"the {mode} loop did not catch up")
    time.sleep(1.0)
    published = publish(setup, publish_count, f"lat-{label}-{mode}", rate)
    thread.join(120)
    return latencies(read_committed(setup.settings, names, before), published)


def profile_handler(setup: Setup, count: int) -> str:
    """cProfile of the service's FeedHandler.handle over the first `count` feed records (no producing)."""
    import cProfile
    import io
    import pstats

    settings = setup.settings
    engine = db.make_engine(settings.database_url)
    dataset = get_dataset(engine, setup.dataset_id)
    handler = FeedHandler(settings, setup.codec, lambda d: dataset, setup.book, masking_key(settings))
    messages = read_committed(settings, [setup.feed])[:count]
    profiler = cProfile.Profile()
    profiler.enable()
    for message in messages:
        handler.handle(source_message(message), datetime.fromtimestamp(message.timestamp / 1000, UTC))
    profiler.disable()
    engine.dispose()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    return "FeedHandler.handle under cProfile (tottime, top 14):\n      " + "\n      ".join(lines[-16:])


# ---------------------------------------------------------------------------------------------- main


def pct(values: list[float], share: float) -> float:
    return values[max(0, round(share * len(values)) - 1)] if values else float("nan")


def run(base: Settings, work: Path, grant_count: int, args: argparse.Namespace) -> list[str]:
    rows = []
    print(f"\n== {grant_count} grant(s): setting up", flush=True)
    setup = prepare(base, work, grant_count)
    try:
        count = args.records
        t0 = time.perf_counter()
        publish(setup, count, "bulk")
        print(f"   published {count} records in {time.perf_counter() - t0:.1f} s", flush=True)
        target = expected_deliveries(setup, count)

        # worker: backlog throughput, then live latency
        started = time.time()
        worker = start_worker(setup)
        try:
            first_ms, last_ms = delivery_span(wait_for_deliveries(setup, target, worker, args.timeout))
            span = (last_ms - first_ms) / 1000
            total_s = last_ms / 1000 - started
            rows.append(
                f"worker (faust)      {grant_count:>2}  {count / span:>9.0f}  {target / span:>12.0f}  "
                f"{span:>7.1f} s (start->last {total_s:.1f} s)"
            )
            print("   " + rows[-1], flush=True)
            before = end_offsets(setup.settings, tenant_topics(setup))
            published = publish(setup, args.latency_records, "lat-worker", args.rate)
            lat = latencies(
                wait_for_deliveries(
                    setup, expected_deliveries(setup, args.latency_records), worker, 120, before
                ),
                published,
            )
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        lat_rows = [
            f"worker (faust)      {grant_count:>2}  {len(lat):>6}  {pct(lat, 0.5):>7.0f}  {pct(lat, 0.99):>7.0f}  {lat[-1] if lat else 0:>7.0f}"
        ]
        total = count + args.latency_records

        # ceilings over the same records (backlog + latency records)
        breakdowns = []
        for mode in ("copy", "avro", "handler"):
            stages = Stages()
            out = loop_outputs(setup, mode, "tp")
            seconds, written = asyncio.run(loop(setup, mode, total, out, stages))
            rows.append(
                f"aiokafka {mode:<10} {grant_count:>2}  {total / seconds:>9.0f}  {written / seconds:>12.0f}  "
                f"{seconds:>7.1f} s"
            )
            print("   " + rows[-1], flush=True)
            if mode != "copy":
                breakdowns.append(f"aiokafka {mode}: {stages.report(total)}")
        if args.profile:
            breakdowns.append(profile_handler(setup, total))
        for mode in ("avro", "handler"):
            lat_loop = run_live_loop(
                setup,
                mode,
                f"l{mode}",
                total + (args.latency_records if mode == "handler" else 0),
                args.latency_records,
                args.rate,
            )
            lat_rows.append(
                f"aiokafka {mode:<10} {grant_count:>2}  {len(lat_loop):>6}  {pct(lat_loop, 0.5):>7.0f}  "
                f"{pct(lat_loop, 0.99):>7.0f}  {lat_loop[-1] if lat_loop else 0:>7.0f}"
            )
        return rows, lat_rows, breakdowns
    finally:
        setup.codec.registry.close()
        drop_namespace(setup.settings, setup.tag)


def main() -> None:
    args = parse_args()
    counts = [int(part) for part in args.grants_list.split(",") if part.strip()]
    with tempfile.TemporaryDirectory(prefix="pdo-bench-") as folder:
        work = Path(folder)
        registry_db = f"sqlite:///{work / 'registry.db'}"
        db.upgrade(registry_db)
        with ServerThread(create_app(registry_db)) as registry:
            base = bench_settings(registry.url, args.database_url)
            results = [run(base, work, count, args) for count in counts]
    backend = args.database_url.split(":", 1)[0].split("+")[0]
    print(f"\nsharing throughput, {args.records} backlog records per run, TrafficFlow, masking on, {backend}")
    print(
        "steady state: input records / (last - first output record timestamp); ceilings: first record received -> last ack"
    )
    print("pipeline           grants  records/s  deliveries/s  span")
    for rows, _, _ in results:
        print("\n".join(rows))
    print(
        f"\nlatency, feed record timestamp -> tenant record timestamp, {args.latency_records} records at {args.rate:.0f}/s (ms)"
    )
    print("pipeline           grants  deliveries  p50      p99      max")
    for _, lat_rows, _ in results:
        print("\n".join(lat_rows))
    print("\nwhere the time goes (per input record, CPU in the loop + waiting for acks):")
    for count, (_, _, breakdowns) in zip(counts, results, strict=True):
        for line in breakdowns:
            print(f"  {count:>2} grant(s) {line}")
    print(
        "  worker: batches of up to 500 records (or what arrives within 5 ms); a batch's messages (a tenant"
    )
    print(
        "  record and a usage fact per delivery) are acknowledged (acks=all) before the next batch, one thread hop each."
    )


if __name__ == "__main__":
    main()
