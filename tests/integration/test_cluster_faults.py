# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Faults on a real three-node Kafka cluster, under steady load: a provider publishes TrafficFlow records to
a dataset's feed (acks=all, each send awaited: a record counts as acknowledged once the cluster said so),
`pdo sharing worker` delivers them to a tenant's stream, and the tenant reads it with its own kafka-python
consumer (isolation_level=read_committed). Topics are replicated as the production profile declares (three
replicas, two in sync).

- one broker SIGKILLed: nothing acknowledged is lost, the worker keeps running, delivery resumes;
- a rolling restart of all three brokers (`pdo broker restart --nodes 3`): nothing lost, nothing twice
  (sharing commits each batch in one Kafka transaction, pdo.sharing.transactions);
- two sharing workers, one SIGKILLed: the other takes its partitions, nothing lost.

All tests share ONE cluster (`pdo broker start --nodes 3`, its own run folder and ports from
PDO_TEST_CLUSTER_PORT, default 19700: nodes on +0, +10, +20, controllers one above), not the suite's broker.
Each prints its figures (acknowledged, delivered, seconds until delivery resumed) for the CI log.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import avro.schema
import pytest
from conftest import isolated_namespace, require_program
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sharing_support import (  # noqa: F401
    ACME,
    DISTRICTS,
    PdoProcesses,
    grant,
    platform,
    register_dataset,
    traffic_record,
    wait_for,
)

from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA
from pdo.core import db
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.kafka import admin_client, kafka_python_connection, producer
from pdo.core.topics import feed_topic, tenant_topic
from pdo.stack import broker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    # kafka-python leaves the socket of a connection a killed broker refused to the garbage collector, which
    # then warns in whatever test runs next; the clients themselves are closed.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <socket\.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

NODES = 3
CLUSTER_PORT = int(os.environ.get("PDO_TEST_CLUSTER_PORT", "19700"))
RATE_PER_S = 40  # records the provider publishes per second
STEADY_S = 4  # seconds of load after delivery resumed, before publishing stops
FEED_PARTITIONS = 3  # as topics/feed.yaml declares


def pdo(settings: Settings, *args: str, timeout_s: float = 600) -> str:
    """Runs `pdo <args>` as an operator would, on the cluster's settings; its output (printed for the log)."""
    done = subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", *args],
        env=settings.environment(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    print(f"$ pdo {' '.join(args)}\n{done.stdout}{done.stderr}")
    assert done.returncode == 0, f"`pdo {' '.join(args)}` exited with {done.returncode}"
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Settings]:
    """A three-node cluster of the suite's own, production replication, stopped after the module."""
    require_program("java", "openjdk-17-jre-headless")
    configured = dataclasses.replace(
        Settings.from_env(),
        run_dir=tmp_path_factory.mktemp("cluster") / "run",
        kafka_port=CLUSTER_PORT,
        kafka_controller_port=CLUSTER_PORT + 1,
        kafka_tls_port=0,  # the suite broker's TLS listener is not the cluster's
        kafka_security_protocol="SASL_PLAINTEXT",
        replication_profile="production",
    )
    configured = dataclasses.replace(configured, kafka_bootstrap=broker.bootstrap(configured, NODES))
    started = time.monotonic()
    try:
        pdo(configured, "broker", "start", "--nodes", str(NODES))
        print(f"cluster of {NODES} nodes up in {time.monotonic() - started:.1f} s")
        yield configured
    finally:
        pdo(configured, "broker", "stop", "--nodes", str(NODES))


@pytest.fixture(autouse=True)
def collect_refused_sockets() -> Iterator[None]:
    """Collects the sockets kafka-python drops (see pytestmark) while this module's filter still applies,
    not in whichever test of another module the garbage collector happens to run next."""
    yield
    gc.collect()


@pytest.fixture
def settings(cluster, registry_url, tmp_path) -> Iterator[Settings]:
    base = dataclasses.replace(
        cluster, registry_url=registry_url, database_url=f"sqlite:///{tmp_path / 'pdo.db'}"
    )
    with isolated_namespace(base, tmp_path) as configured:
        db.upgrade(configured.database_url)
        yield configured


@pytest.fixture
def sharing_workers(settings, tmp_path) -> Iterator[PdoProcesses]:
    processes = PdoProcesses(settings, tmp_path)
    yield processes
    processes.stop()


def start_worker(processes: PdoProcesses, group: str) -> subprocess.Popen:
    return processes.start("sharing", "worker", "--group", group, "--loglevel", "info")


# ---------------------------------------------------------------------------------------------- the load


class SteadyLoad:
    """The provider and the tenant, each in a thread: records published at RATE_PER_S to the feed's
    partitions in turn, each send awaited (acks=all); the tenant's read_committed consumer notes every record
    it receives, and when."""

    def __init__(self, settings: Settings, codec: AvroCodec, dataset_id: str, tenant_topic_name: str) -> None:
        self.settings = settings
        self.codec = codec
        self.feed = feed_topic(dataset_id, settings)
        self.tenant_topic = tenant_topic_name
        self.schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
        self.acknowledged: dict[
            str, tuple[int, float]
        ] = {}  # record id -> (feed partition, when acknowledged)
        self.failed: list[str] = []  # sends the cluster never acknowledged (their error)
        self.received: list[
            tuple[str, float]
        ] = []  # (record id, when the tenant received it), duplicates too
        self.consumer_errors: list[str] = []
        self.publishing = threading.Event()
        self.reading = threading.Event()
        self.threads = [
            threading.Thread(target=self._publish, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def __enter__(self) -> SteadyLoad:
        self.publishing.set()
        self.reading.set()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.publishing.clear()
        self.reading.clear()
        for thread in self.threads:
            thread.join(timeout=90)

    def stop_publishing(self) -> None:
        self.publishing.clear()
        self.threads[0].join(timeout=90)

    def _publish(self) -> None:
        sender = producer(self.settings)
        number = 0
        try:
            while self.publishing.is_set():
                record_id = f"r-{number}"
                partition = number % FEED_PARTITIONS
                record = traffic_record(record_id, DISTRICTS[number % len(DISTRICTS)])
                value = self.codec.encode(self.feed, self.schema, record)
                try:
                    sender.send(self.feed, key=record_id.encode(), value=value, partition=partition).get(
                        timeout=60
                    )
                    self.acknowledged[record_id] = (partition, time.monotonic())
                except KafkaError as error:
                    self.failed.append(f"{record_id}: {error!r}")
                number += 1
                time.sleep(1 / RATE_PER_S)
        finally:
            sender.close()

    def _read(self) -> None:
        consumer = KafkaConsumer(
            **kafka_python_connection(self.settings),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            partitions: set[int] = set()
            while not partitions and self.reading.is_set():
                partitions = consumer.partitions_for_topic(self.tenant_topic) or set()
                time.sleep(0.2)
            consumer.assign([TopicPartition(self.tenant_topic, number) for number in sorted(partitions)])
            while self.reading.is_set():
                try:
                    batches = consumer.poll(timeout_ms=200)
                except KafkaError as error:  # a broker going away: the consumer reconnects on the next poll
                    self.consumer_errors.append(repr(error))
                    continue
                now = time.monotonic()
                self.received.extend((m.key.decode(), now) for ms in batches.values() for m in ms)
        finally:
            consumer.close()

    # ------------------------------------------------------------------------------------------ figures

    def delivered(self) -> set[str]:
        return {record_id for record_id, _ in list(self.received)}

    def lost(self) -> set[str]:
        return set(self.acknowledged) - self.delivered()

    def duplicates(self) -> int:
        received = list(self.received)
        return len(received) - len({record_id for record_id, _ in received})

    def resumed_on_every_partition(self, fault_at: float) -> float | None:
        """Seconds from the fault until every feed partition had a record, acknowledged after the fault,
        delivered to the tenant; None while one has not."""
        first: dict[int, float] = {}
        for record_id, when in list(self.received):
            partition, acknowledged_at = self.acknowledged.get(record_id, (-1, 0.0))
            if acknowledged_at > fault_at and partition not in first:
                first[partition] = when
        if len(first) < FEED_PARTITIONS:
            return None
        return max(first.values()) - fault_at

    def longest_publishing_gap(self) -> float:
        times = sorted(when for _, when in self.acknowledged.values())
        return max((later - earlier for earlier, later in zip(times, times[1:], strict=False)), default=0.0)

    def report(self, what: str, fault_at: float | None = None) -> str:
        resumed = self.resumed_on_every_partition(fault_at) if fault_at is not None else None
        line = (
            f"[{what}] acknowledged {len(self.acknowledged)}, not acknowledged {len(self.failed)}, "
            f"delivered {len(self.delivered())} (duplicates {self.duplicates()}), lost {len(self.lost())}, "
            f"longest wait for an acknowledgement {self.longest_publishing_gap():.1f} s"
        )
        if resumed is not None:
            line += f", delivery resumed on every partition {resumed:.1f} s after the fault"
        print(line)
        return line


def open_grant(settings: Settings, platform) -> tuple[str, str]:
    """A dataset and ACME's grant on it (record_id in clear, so the tenant's record key is the record id)."""
    dataset_id = register_dataset(platform["catalog"])
    grant(platform["service"], ACME, dataset_id, ("record_id", "district"))
    return dataset_id, tenant_topic(ACME, dataset_id, settings)


def wait_for_all_delivered(load: SteadyLoad, processes: list[subprocess.Popen]) -> None:
    wait_for("every acknowledged record at the tenant", lambda: not load.lost(), processes)


def wait_for_flow(load: SteadyLoad, processes: list[subprocess.Popen], records: int = 40) -> None:
    wait_for(f"{records} records at the tenant", lambda: len(load.delivered()) >= records, processes)


def node_pid(cluster: Settings, node_id: int) -> int:
    """A node's pid, from the pid file `pdo broker start` keeps in the node's folder."""
    pid_file = broker.BrokerPaths.from_settings(cluster, broker.Node(node_id, NODES)).pid_file
    return int(Path(pid_file).read_text().strip())


def busiest_leader(settings: Settings, topic_names: list[str]) -> int:
    """The node leading most partitions of these topics: the one whose loss the load feels most."""
    with admin_client(settings) as admin:
        leaders = [
            partition["leader_id"]
            for topic in admin.describe_topics(topic_names)
            for partition in topic["partitions"]
        ]
    return max(set(leaders), key=leaders.count)


def bring_back(cluster: Settings) -> None:
    """Start any stopped node again and wait until every partition is back in sync, for the next test."""
    pdo(cluster, "broker", "start", "--nodes", str(NODES))
    broker.wait_until_in_sync(cluster, NODES)


# ---------------------------------------------------------------------------------------------- tests


def test_a_sigkilled_broker_loses_no_acknowledged_record_and_delivery_resumes(
    cluster, settings, sharing_workers, platform
):
    dataset_id, target = open_grant(settings, platform)
    worker = start_worker(sharing_workers, f"sharing-{uuid.uuid4().hex[:8]}")
    with SteadyLoad(settings, platform["codec"], dataset_id, target) as load:
        wait_for_flow(load, [worker])
        victim = busiest_leader(settings, [load.feed, target])
        os.kill(node_pid(cluster, victim), signal.SIGKILL)
        fault_at = time.monotonic()
        print(f"SIGKILLed node {victim} with {len(load.acknowledged)} records acknowledged")
        resumed = wait_for(
            "delivery on every partition after the kill",
            lambda: load.resumed_on_every_partition(fault_at),
            [worker],
        )
        time.sleep(STEADY_S)  # more load on two nodes, so records acknowledged by them alone are counted too
        load.stop_publishing()
        wait_for_all_delivered(load, [worker])
        load.report(f"SIGKILL node {victim} of {NODES}", fault_at)

    assert not load.lost()
    # The load really ran through the fault: records acknowledged by the two nodes left, for STEADY_S and more
    # (at RATE_PER_S when every send is quick; half of it leaves room for sends slowed by the lost node).
    acknowledged_after = [at for _, at in load.acknowledged.values() if at > fault_at]
    assert len(acknowledged_after) > RATE_PER_S * STEADY_S / 2
    assert resumed > 0 and worker.poll() is None  # the same worker, never restarted
    bring_back(cluster)


def test_a_rolling_restart_under_load_loses_nothing(cluster, settings, sharing_workers, platform):
    dataset_id, target = open_grant(settings, platform)
    worker = start_worker(sharing_workers, f"sharing-{uuid.uuid4().hex[:8]}")
    with SteadyLoad(settings, platform["codec"], dataset_id, target) as load:
        wait_for_flow(load, [worker])
        started = time.monotonic()
        pdo(cluster, "broker", "restart", "--nodes", str(NODES))
        restart_s = time.monotonic() - started
        acknowledged_during_restart = sum(when > started for _, when in load.acknowledged.values())
        load.stop_publishing()
        wait_for_all_delivered(load, [worker])
        load.report(f"rolling restart of {NODES} nodes in {restart_s:.0f} s")

    assert not load.lost()
    assert acknowledged_during_restart > RATE_PER_S * 10  # publishing went on while nodes restarted
    # Sharing writes each batch in one transaction: a read_committed tenant sees every record exactly once.
    assert load.delivered() == set(load.acknowledged)
    assert load.duplicates() == 0
    assert worker.poll() is None


def test_two_sharing_workers_one_sigkilled_the_other_takes_its_partitions(
    settings, sharing_workers, platform
):
    dataset_id, target = open_grant(settings, platform)
    group = f"sharing-{uuid.uuid4().hex[:8]}"
    first, second = start_worker(sharing_workers, group), start_worker(sharing_workers, group)
    wait_for("two workers in the group", lambda: group_members(settings, group) == 2, [first, second])
    with SteadyLoad(settings, platform["codec"], dataset_id, target) as load:
        wait_for_flow(load, [first, second])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        fault_at = time.monotonic()
        resumed = wait_for(
            "delivery on every partition after the worker's kill",
            lambda: load.resumed_on_every_partition(fault_at),
            [second],
        )
        time.sleep(STEADY_S)
        load.stop_publishing()
        wait_for_all_delivered(load, [second])
        load.report("SIGKILL one of two sharing workers", fault_at)

    assert not load.lost()
    assert resumed > 0 and second.poll() is None
    assert group_members(settings, group) == 1


def group_members(settings: Settings, group: str) -> int:
    with admin_client(settings) as admin:
        description = admin.describe_groups([group])[group]
    return len(description["members"]) if description["group_state"] == "Stable" else 0
