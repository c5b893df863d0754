"""Pipeline: feed -> sharing -> metering -> ledger in one run, beside the ceilings (Kafka's own perf tools on the
same broker, the plain aiokafka loops), as the ratios issue #17 sets goals for. The README's Performance
table comes from this command.

1. **Kafka's ceiling**: `org.apache.kafka.tools.ProducerPerformance` (--perf-records records of
   --perf-record-size bytes, unthrottled) then `ConsumerPerformance` over those records, from the broker's own
   Kafka version (bench/kafka-tools/pom.xml, fetched with Maven once), against the same secured broker as the
   admin (SASL, credentials in a temporary 0600 properties file, deleted afterwards), on a topic of a
   namespace of its own. When the jars or Java cannot be had, the table says why and the run goes on.

Then, for each grant count in --grants, in a topic namespace of its own, with an in-process schema registry
and a fresh database beside --database-url (a new SQLite file, or a new PostgreSQL database dropped after):

2. registers a TrafficFlow dataset and approves the grants (as bench/sharing_throughput.py: masking on,
   every second grant filtered to a third of the rows), publishes --records feed records (a backlog);
3. **sharing**: `pdo sharing worker` until the tenant topics hold every delivery, committed (its Kafka
   transactions commit the deliveries, their usage facts and the feed offsets together), read back as a
   read_committed tenant reads them (aiokafka) and counted; deliveries/s = deliveries / (last - first tenant
   record timestamp);
4. **metering**: `pdo metering worker` (read_committed) over the usage facts sharing wrote, until the ledger
   holds every delivery, with the sharing worker caught up and idle; deliveries metered/s = deliveries
   written after the first ledger rows seen / the time from then to the last. The worker takes at most
   STEADY_BATCH_FACTS facts per ledger transaction (bench/ledger_throughput.py), fewer when the backlog has
   fewer than MIN_TRANSACTIONS times that many, so that a steady state exists to be timed;
5. **latency**: with the sharing worker caught up, --latency-records records at --rate per second; feed
   record timestamp -> tenant record timestamp (Kafka CreateTime, both set on this machine);
6. **edges** (in the 1-grant run, unless --ingest-records 0): `pdo gateway serve` on the run's namespace; the
   dataset's provider posts --ingest-records records over HTTP in calls of 1,000 (each with an
   Idempotency-Key), one call after the other; then the grant's tenant reads its delivered records from the
   earliest as server-sent events (records/s from the first record event to the last);
7. **plain loops** of bench/sharing_throughput.py on the same feed records: `copy` (bytes unchanged) and
   `avro` (decode, shape per grant, encode, produce), then the `avro` loop live at --rate for its latency;
8. prints one table: pdo's figures, the ceilings, and the ratios (goals: metering / sharing >= 2, sharing /
   the plain decode+shape+encode loop >= 0.6, p99 latency <= 50 ms at 1 grant and <= 60 ms at 10).

The defaults (20,000 records, 1 and 10 grants) take about 1.5 minutes on the 2-core development machine;
smaller backlogs finish sooner but time sub-second spans, and their figures scatter more. Measure on a broker
without thousands of topics left by earlier runs (the summary line says how many it had): the sharing
worker subscribes by pattern, so each metadata refresh walks every topic, which shows in the latency tail.

    PDO_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python bench/pipeline.py --records 20000 --grants 1,10 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from ledger_throughput import (
    STEADY_BATCH_FACTS,
    LedgerFill,
    fresh_database,
    ledger_rows,
    start_metering,
    wait_for_ledger,
)
from sharing_throughput import (
    PROVIDER,
    Setup,
    Stages,
    bench_settings,
    delivery_span,
    drop_namespace,
    end_offsets,
    expected_deliveries,
    latencies,
    loop,
    loop_outputs,
    make_topic,
    pct,
    prepare,
    publish,
    read_committed,
    run_live_loop,
    start_worker,
    tenant_topics,
    traffic_record,
    wait_for_deliveries,
)

from pdo.core import db, topics
from pdo.core.config import Settings, write_private
from pdo.core.errors import Conflict, PdoError
from pdo.core.kafka import SASL_MECHANISM, admin_client, require_credentials
from pdo.core.serving import ServerThread, free_port
from pdo.core.topics import TopicId
from pdo.gateway.principals import PrincipalStore
from pdo.registry.app import create_app
from pdo.stack.broker import KAFKA_VERSION, require_tool

KAFKA_TOOLS = Path(__file__).resolve().parent / "kafka-tools"
# Ledger transactions the metering run must at least take, so that it has a steady state to time.
MIN_TRANSACTIONS = 10
# A perf tool that has not finished in this long is stuck (200,000 records take seconds).
TOOL_TIMEOUT_S = 300


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20000, help="feed records in the backlog")
    parser.add_argument("--grants", default="1,10", help="grant counts to run, comma separated")
    parser.add_argument("--latency-records", type=int, default=400)
    parser.add_argument("--rate", type=float, default=200, help="records per second in the latency phase")
    parser.add_argument("--perf-records", type=int, default=200_000, help="records of Kafka's perf tools")
    parser.add_argument("--perf-record-size", type=int, default=200, help="bytes per perf tool record")
    parser.add_argument("--database-url", default=Settings.from_env().database_url)
    parser.add_argument("--timeout", type=float, default=600, help="give up on a worker after this")
    parser.add_argument(
        "--ingest-records",
        type=int,
        default=20000,
        help="records posted over HTTP in calls of 1,000 in the 1-grant run (0: no edges stage)",
    )
    return parser.parse_args()


def progress(line: str) -> None:
    print(f"   {line}", flush=True)


# ---------------------------------------------------------------------------------------------- Kafka's tools


@dataclasses.dataclass(frozen=True)
class KafkaCeiling:
    """records/s of Kafka's own ProducerPerformance and ConsumerPerformance, or why they did not run."""

    produced: float = float("nan")
    consumed: float = float("nan")
    unavailable: str = ""


def kafka_tools_jars() -> Path:
    """bench/kafka-tools/target/lib, fetched with Maven the first time; a PdoError saying why it cannot be."""
    lib = KAFKA_TOOLS / "target" / "lib"
    stamp = (
        lib / f".fetched-{KAFKA_VERSION}"
    )  # written only after Maven succeeded: a half copy is fetched again
    if stamp.exists():
        return lib
    mvn = require_tool("mvn")
    progress(f"fetching Kafka {KAFKA_VERSION}'s perf tools with Maven into {lib} (first time only)...")
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(KAFKA_TOOLS / "pom.xml"), "package"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise PdoError(
            f"Maven could not fetch kafka-tools {KAFKA_VERSION} (exit {result.returncode}): {last[0]}"
        )
    stamp.touch()
    return lib


def java_client_properties(settings: Settings) -> str:
    """The admin's connection as a Java client's properties (the same principal as every client here)."""
    username, password = require_credentials(settings)

    def jaas_quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f"username={jaas_quoted(username)} password={jaas_quoted(password)};"
    )
    lines = {
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanism": SASL_MECHANISM,
        # A properties file reads a backslash as an escape: the JAAS line's own escapes are doubled.
        "sasl.jaas.config": jaas.replace("\\", "\\\\"),
    }
    if settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_ssl_cafile:
        lines |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": settings.kafka_ssl_cafile}
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def run_tool(lib: Path, tool: str, arguments: list[str]) -> str:
    """Run org.apache.kafka.tools.<tool> on the fetched jars; its standard output."""
    command = [
        require_tool("java"),
        "-Xmx512m",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp",
        f"{lib}{os.sep}*",
        f"org.apache.kafka.tools.{tool}",
        *arguments,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PdoError(f"{tool} exited with {result.returncode}: {last[0]}")
    return result.stdout


def producer_rate(output: str) -> float:
    """records/s of ProducerPerformance's summary: "200000 records sent, 61234.5 records/sec (11.68 MB/sec), ..."."""
    found = re.findall(r"records sent, ([\d.]+) records/sec", output)
    if not found:
        raise PdoError(f"no summary in ProducerPerformance's output: {output.strip()[-200:]!r}")
    return float(found[-1])


def consumer_rate(output: str) -> float:
    """fetch.nMsg.sec of ConsumerPerformance's CSV line: records/s while fetching, the group join left out
    (as pdo's own figures leave start-up out)."""
    header, row = output.strip().splitlines()[-2:]
    values = dict(zip((name.strip() for name in header.split(",")), row.split(","), strict=True))
    return float(values["fetch.nMsg.sec"])


def kafka_ceiling(settings: Settings, work: Path, args: argparse.Namespace) -> KafkaCeiling:
    """Kafka's ProducerPerformance, then ConsumerPerformance over its records, on a topic of its own."""
    print("\n== Kafka's own perf tools", flush=True)
    try:
        lib = kafka_tools_jars()
    except PdoError as error:
        return KafkaCeiling(unavailable=str(error).replace("\n", " "))
    tag = f"bench-{uuid.uuid4().hex[:6]}"
    topic = f"pdo.{tag}.bench.perf"
    properties = work / "kafka-tools" / "client.properties"
    try:
        make_topic(settings, topic)
        write_private(properties, java_client_properties(settings))
        bootstrap = ["--bootstrap-server", settings.kafka_bootstrap, "--command-config", str(properties)]
        produced = producer_rate(
            run_tool(
                lib,
                "ProducerPerformance",
                [
                    *bootstrap,
                    "--topic",
                    topic,
                    "--num-records",
                    str(args.perf_records),
                    "--record-size",
                    str(args.perf_record_size),
                    "--throughput",
                    "-1",
                ],
            )
        )
        progress(f"ProducerPerformance: {produced:,.0f} records/s")
        consumed = consumer_rate(
            run_tool(
                lib,
                "ConsumerPerformance",
                [*bootstrap, "--topic", topic, "--num-records", str(args.perf_records), "--timeout", "30000"],
            )
        )
        progress(f"ConsumerPerformance: {consumed:,.0f} records/s")
        return KafkaCeiling(produced, consumed)
    except (PdoError, subprocess.TimeoutExpired) as error:
        return KafkaCeiling(unavailable=str(error).replace("\n", " "))
    finally:
        properties.unlink(missing_ok=True)
        drop_namespace(settings, tag)


# ---------------------------------------------------------------------------------------------- pdo's run


@dataclasses.dataclass(frozen=True)
class GrantRun:
    """The figures of one grant count."""

    grants: int
    deliveries: int
    committed: int  # deliveries read back by a read_committed consumer
    sharing_records: float  # feed records/s
    sharing_deliveries: float
    facts: int  # usage facts on the deliveries topic
    metering_batch: int  # most facts per ledger transaction
    metered: float  # deliveries/s into the ledger
    ledger: int  # ledger rows
    copy: float  # plain aiokafka copy, records/s
    avro_records: float
    avro_deliveries: float
    latency: list[float]
    loop_latency: list[float]
    edges: Edges | None = None


# ---------------------------------------------------------------------------------------------- edges


@dataclasses.dataclass(frozen=True)
class Edges:
    """HTTP ingest by one provider client and one tenant's server-sent-event stream, through a real gateway."""

    ingested: int
    ingest_rate: float  # records/s over the calls
    call_ms: list[float]  # each call's duration
    streamed: int
    stream_rate: float  # records/s from the first to the last record event


INGEST_BATCH = 1000  # records per call, the most a call takes (pdo.gateway.routes_ingest.MAX_BATCH)


def edges(setup: Setup, args: argparse.Namespace, streamable: int) -> Edges:
    """`pdo gateway serve` on this run's namespace and database: the dataset's provider posts --ingest-records
    records in calls of 1,000 (each with an Idempotency-Key, as a careful provider sends them), one after the
    other; then the first grant's tenant reads its delivered records from the earliest (up to `streamable`)
    as server-sent events, as a plain HTTP client would."""
    settings = dataclasses.replace(setup.settings, gateway_port=free_port())
    provider_key, tenant_key = party_keys(setup)
    log = (settings.run_dir / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "pdo.cli.main", "gateway", "serve"],
        env=settings.environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{settings.gateway_port}"
    try:
        wait_for_gateway(base, gateway)
        with httpx.Client(base_url=base, timeout=60) as client:
            ingested, calls, ingest_s = ingest(client, setup, provider_key, args.ingest_records)
            progress(
                f"HTTP ingest: {ingested / ingest_s:,.0f} records/s ({len(calls)} calls of {INGEST_BATCH})"
            )
            streamed, stream_s = stream(client, setup, tenant_key, streamable)
            progress(f"SSE stream: {streamed / stream_s:,.0f} records/s ({streamed} records)")
    finally:
        stop(gateway)
        log.close()
    return Edges(ingested, ingested / ingest_s, calls, streamed, streamed / stream_s)


def party_keys(setup: Setup) -> tuple[str, str]:
    """API keys of the dataset's provider and of the first grant's tenant (the principals made as needed)."""
    engine = db.make_engine(setup.settings.database_url)
    store = PrincipalStore(engine)
    try:
        keys = []
        for party in (PROVIDER, setup.grants[0][1]):
            kind, name = party.split(":", 1)
            with suppress(Conflict):
                store.create_principal(kind, name, f"benchmark {kind}", False)
            keys.append(store.issue_key(party).key)
        return keys[0], keys[1]
    finally:
        engine.dispose()


def wait_for_gateway(base: str, gateway: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise PdoError(
                f"the gateway exited with {gateway.returncode}", hint="see gateway.log in the run folder"
            )
        with suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise PdoError(f"the gateway did not answer in {timeout_s:.0f} s")


def ingest(client: httpx.Client, setup: Setup, key: str, count: int) -> tuple[int, list[float], float]:
    """Records accepted, each call's ms, and the seconds from the first call's start to the last's answer."""
    bodies = [
        {
            "records": [
                json_record(f"http-{start + n}", start + n) for n in range(min(INGEST_BATCH, count - start))
            ]
        }
        for start in range(0, count, INGEST_BATCH)
    ]
    accepted, calls = 0, []
    started = time.perf_counter()
    for body in bodies:
        before = time.perf_counter()
        answer = client.post(
            f"/v1/datasets/{setup.dataset_id}/records",
            json=body,
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
        )
        calls.append((time.perf_counter() - before) * 1000)
        if answer.status_code != 200:
            raise PdoError(f"ingest answered {answer.status_code}: {answer.text[:300]}")
        accepted += answer.json()["accepted"]
    return accepted, calls, time.perf_counter() - started


def json_record(record_id: str, number: int) -> dict[str, Any]:
    """A TrafficFlow record as a provider's JSON carries it (timestamps as ISO 8601 text)."""
    record = traffic_record(record_id, number)
    record["observed_at"] = datetime.now(UTC).isoformat()
    return record


def stream(client: httpx.Client, setup: Setup, key: str, limit: int) -> tuple[int, float]:
    """Record events read from the earliest (`limit` of them), and the seconds from the first to the last."""
    received, first, last = 0, 0.0, 0.0
    with client.stream(
        "GET",
        f"/v1/streams/{setup.dataset_id}",
        params={"limit": limit, "idle_timeout_s": 10},
        headers={"Authorization": f"Bearer {key}"},
    ) as answer:
        if answer.status_code != 200:
            raise PdoError(f"the stream answered {answer.status_code}: {answer.read()[:300]!r}")
        for line in answer.iter_lines():
            if line == "event: record":
                last = time.perf_counter()
                first = first or last
                received += 1
    return received, last - first


def stop(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def meter(setup: Setup, deliveries: int, timeout_s: float) -> tuple[int, int, LedgerFill, int]:
    """(usage facts, facts per ledger transaction, how the ledger filled, ledger rows) of `pdo metering
    worker` over the usage facts sharing committed."""
    facts = len(read_committed(setup.settings, [topics.name(TopicId.DELIVERIES, setup.settings)]))
    batch = max(1, min(STEADY_BATCH_FACTS, facts // MIN_TRANSACTIONS))
    engine = db.make_engine(setup.settings.database_url)
    worker = start_metering(setup.settings, batch)
    try:
        fill = wait_for_ledger(engine, worker, deliveries, timeout_s)
        return facts, batch, fill, ledger_rows(engine)
    finally:
        stop(worker)
        engine.dispose()


def ceilings(setup: Setup, count: int) -> dict[str, tuple[float, float]]:
    """(records/s, messages written/s) of the plain aiokafka loops over the first `count` feed records."""
    rates = {}
    for mode in ("copy", "avro"):
        seconds, written = asyncio.run(loop(setup, mode, count, loop_outputs(setup, mode, "p"), Stages()))
        rates[mode] = (count / seconds, written / seconds)
        progress(f"aiokafka {mode}: {count / seconds:,.0f} records/s, {written / seconds:,.0f} messages/s")
    return rates


def measure(base: Settings, work: Path, grants: int, args: argparse.Namespace) -> GrantRun:
    print(f"\n== {grants} grant(s): setting up", flush=True)
    with fresh_database(args.database_url, work) as url:
        setup = prepare(dataclasses.replace(base, database_url=url), work, grants)
        try:
            publish(setup, args.records, "bulk")
            deliveries = expected_deliveries(setup, args.records)
            progress(f"published {args.records} feed records ({deliveries} deliveries expected)")
            sharing = start_worker(setup)
            try:
                committed = wait_for_deliveries(setup, deliveries, sharing, args.timeout)
                first_ms, last_ms = delivery_span(committed)
                shared = deliveries / ((last_ms - first_ms) / 1000)
                progress(f"sharing: {shared:,.0f} deliveries/s; {len(committed)} read back committed")
                facts, batch, fill, ledger = meter(setup, deliveries, args.timeout)
                metered = fill.steady_rate(deliveries)
                progress(
                    f"metering: {metered:,.0f} deliveries/s ({facts} usage facts, {batch} per transaction)"
                )
                before = end_offsets(setup.settings, tenant_topics(setup))
                published = publish(setup, args.latency_records, "lat-worker", args.rate)
                expected = expected_deliveries(setup, args.latency_records)
                latency = latencies(wait_for_deliveries(setup, expected, sharing, 120, before), published)
                progress(
                    f"sharing latency at {args.rate:.0f}/s: p50 {pct(latency, 0.5):.0f} ms, p99 {pct(latency, 0.99):.0f} ms"
                )
                edged = (
                    edges(setup, args, deliveries // grants) if args.ingest_records and grants == 1 else None
                )
            finally:
                stop(sharing)
            # Every record on the feed: the plain loops read them all, then time the live ones after them.
            total = args.records + args.latency_records + (edged.ingested if edged is not None else 0)
            rates = ceilings(setup, total)
            loop_latency = run_live_loop(setup, "avro", "lavro", total, args.latency_records, args.rate)
            progress(
                f"aiokafka avro latency: p50 {pct(loop_latency, 0.5):.0f} ms, p99 {pct(loop_latency, 0.99):.0f} ms"
            )
            return GrantRun(
                grants=grants,
                deliveries=deliveries,
                committed=len(committed),
                sharing_records=shared / deliveries * args.records,
                sharing_deliveries=shared,
                facts=facts,
                metering_batch=batch,
                metered=metered,
                ledger=ledger,
                copy=rates["copy"][0],
                avro_records=rates["avro"][0],
                avro_deliveries=rates["avro"][1],
                latency=latency,
                loop_latency=loop_latency,
                edges=edged,
            )
        finally:
            setup.codec.registry.close()
            drop_namespace(setup.settings, setup.tag)


# ---------------------------------------------------------------------------------------------- table


def table(runs: list[GrantRun], kafka: KafkaCeiling) -> list[str]:
    def row(label: str, cells: list[str], goal: str = "") -> str:
        return f"{label:<52}" + "".join(f"{cell:>20}" for cell in cells) + (f"   {goal}" if goal else "")

    def each(figure) -> list[str]:
        return [figure(run) for run in runs]

    def ms(values: list[float]) -> str:
        return f"{pct(values, 0.5):.0f} / {pct(values, 0.99):.0f}"

    lines = [
        row("", [f"{run.grants} grant{'s' if run.grants > 1 else ''}" for run in runs], "goal"),
        row("sharing worker, feed records/s", each(lambda r: f"{r.sharing_records:,.0f}")),
        row("sharing worker, deliveries/s", each(lambda r: f"{r.sharing_deliveries:,.0f}")),
        row(
            "  committed deliveries read back / expected",
            each(lambda r: f"{r.committed:,} / {r.deliveries:,}"),
        ),
        row("metering worker -> ledger, deliveries/s", each(lambda r: f"{r.metered:,.0f}")),
        row(
            "  usage facts (most per ledger transaction)", each(lambda r: f"{r.facts:,} ({r.metering_batch})")
        ),
        row("  ledger rows / deliveries", each(lambda r: f"{r.ledger:,} / {r.deliveries:,}")),
        row(
            "metering / sharing (deliveries/s)",
            each(lambda r: f"{r.metered / r.sharing_deliveries:.2f}"),
            ">= 2",
        ),
        row("aiokafka copy (ceiling), records/s", each(lambda r: f"{r.copy:,.0f}")),
        row("aiokafka decode+shape+encode (ceiling), records/s", each(lambda r: f"{r.avro_records:,.0f}")),
        row("aiokafka decode+shape+encode, deliveries/s", each(lambda r: f"{r.avro_deliveries:,.0f}")),
        row(
            "sharing / decode+shape+encode (deliveries/s)",
            each(lambda r: f"{r.sharing_deliveries / r.avro_deliveries:.2f}"),
            ">= 0.6",
        ),
        row("sharing / aiokafka copy (records/s)", each(lambda r: f"{r.sharing_records / r.copy:.2f}")),
        row(
            "latency feed -> tenant, p50 / p99 ms", each(lambda r: ms(r.latency)), "p99 <= 50 (1), <= 60 (10)"
        ),
        row("  plain decode+shape+encode loop, p50 / p99 ms", each(lambda r: ms(r.loop_latency))),
    ]
    edged = [run.edges for run in runs if run.edges is not None]
    for edge in edged:
        lines += [
            row(
                "HTTP ingest, 1 client, 1,000 per call, records/s", [f"{edge.ingest_rate:,.0f}"], ">= 10,000"
            ),
            row(
                "  call p50 / max ms",
                [f"{statistics.median(edge.call_ms):.0f} / {max(edge.call_ms):.0f}"],
            ),
            row("tenant SSE stream from earliest, records/s", [f"{edge.stream_rate:,.0f}"], ">= 20,000"),
            row("  records streamed", [f"{edge.streamed:,}"]),
        ]
    if kafka.unavailable:
        lines.append(
            f"Kafka's ProducerPerformance / ConsumerPerformance: ceiling unavailable ({kafka.unavailable})"
        )
        return lines
    lines += [
        row("Kafka ProducerPerformance, records/s", [f"{kafka.produced:,.0f}"]),
        row("Kafka ConsumerPerformance (fetching), records/s", [f"{kafka.consumed:,.0f}"]),
        row(
            "sharing deliveries/s / ProducerPerformance",
            each(lambda r: f"{r.sharing_deliveries / kafka.produced:.2f}"),
        ),
        row(
            "aiokafka copy records/s / ProducerPerformance", each(lambda r: f"{r.copy / kafka.produced:.2f}")
        ),
    ]
    return lines


def broker_topics(settings: Settings) -> int:
    """How many topics the broker holds. The sharing worker subscribes by pattern, so each metadata refresh
    (every 5 s) walks them all: with thousands left by earlier runs, the latency tail grows."""
    with admin_client(settings) as admin:
        return len(admin.list_topics())


def main() -> None:
    args = parse_args()
    counts = [int(part) for part in args.grants.split(",") if part.strip()]
    started = time.perf_counter()
    load = os.getloadavg()
    topics_before = broker_topics(Settings.from_env())
    with tempfile.TemporaryDirectory(prefix="pdo-bench-") as folder:
        work = Path(folder)
        registry_db = f"sqlite:///{work / 'registry.db'}"
        db.upgrade(registry_db)
        with ServerThread(create_app(registry_db)) as registry:
            base = bench_settings(registry.url, args.database_url)
            kafka = kafka_ceiling(base, work, args)
            runs = [measure(base, work, count, args) for count in counts]
    backend = args.database_url.split(":", 1)[0].split("+")[0]
    load = [max(before, after) for before, after in zip(load, os.getloadavg(), strict=True)]
    print(
        f"\npipeline: {args.records} backlog feed records, TrafficFlow, masking on, {backend}; latency "
        f"{args.latency_records} records at {args.rate:.0f}/s; Kafka's tools {args.perf_records} records of "
        f"{args.perf_record_size} B; {time.perf_counter() - started:.0f} s; load average (1/5/15 min, "
        f"higher of start and end) {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {topics_before:,} topics on "
        "the broker at the start"
    )
    print("\n".join(table(runs, kafka)))


if __name__ == "__main__":
    main()
