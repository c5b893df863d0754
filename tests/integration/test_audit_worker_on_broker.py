"""The audit worker end to end: `pdo audit-worker` (faust) as a process on the real topics records the
platform's events as the services publish them, in each source partition's order, an undecodable message
with its reason, and a re-read of every topic from its beginning appends nothing twice; the log it mirrors to
the pdo.audit topic verifies with the broker alone (`pdo audit verify --from-topic`)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from pdo.audit.checkpoints import Signer, generate_private_key_pem
from pdo.audit.store import AuditStore
from pdo.audit.tables import entries as audit_entries
from pdo.authorization.public import AuthorizationService, RequestSpec, load_policy
from pdo.authorization.testing import create_topics, delete_topics, isolated_home, register_traffic_dataset
from pdo.catalog.public import CatalogService
from pdo.core import db, topics
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, utc_now
from pdo.core.kafka import producer
from pdo.core.topics import TopicId

pytestmark = pytest.mark.integration

TENANT = "tenant:acme-logistics"
OPERATOR = "operator:alice"
WAIT_S = 90


def _signing_key(folder):
    key = folder / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    return key


@pytest.fixture
def settings(kafka_bootstrap, registry_url, database_url, tmp_path) -> Iterator[Settings]:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    configured = dataclasses.replace(
        Settings.from_env(),
        registry_url=registry_url,
        database_url=database_url,
        home=isolated_home(tmp_path, tag),
        run_dir=tmp_path / "run",
        audit_signing_key_file=str(_signing_key(tmp_path)),
        audit_checkpoint_interval_s=1,
    )
    names = create_topics(configured)
    db.upgrade(configured.database_url)
    yield configured
    delete_topics(configured, names)


@pytest.fixture
def engine(settings):
    engine = db.make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def publisher(settings):
    publisher = EventPublisher(settings)
    yield publisher
    publisher.close()


class Worker:
    """`pdo audit-worker` processes in consumer groups of their own, on this test's topics and database."""

    def __init__(self, settings: Settings, folder) -> None:
        self.settings, self.folder = settings, folder
        self.process: subprocess.Popen | None = None
        self.logs: list = []

    def start(self, group: str) -> None:
        log = self.folder / f"{group}.log"
        self.logs.append(log)
        command = [
            sys.executable,
            "-m",
            "pdo.cli.main",
            "audit-worker",
            "--group",
            group,
            "--metrics-port",
            "0",
        ]
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                command, env=self.settings.environment(), stdout=output, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def worker(settings, tmp_path):
    worker = Worker(settings, tmp_path)
    try:
        yield worker
    finally:
        worker.stop()
        for log in worker.logs:
            print(log.read_text(errors="replace")[-5000:])  # shown when the test fails


def logged(engine) -> list[sa.Row]:
    query = sa.select(
        audit_entries.c.seq, audit_entries.c.action, audit_entries.c.subject, audit_entries.c.source
    )
    with engine.connect() as connection:
        return list(connection.execute(query.order_by(audit_entries.c.seq)))


def wait_for(what: str, check: Callable[[], object], worker: Worker) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert worker.process is not None and worker.process.poll() is None, (
            f"the worker exited waiting for {what}"
        )
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def position(source: str) -> tuple[str, int, int]:
    topic, _, rest = source.partition("[")
    partition, _, offset = rest.partition("]@")
    return topic, int(partition), int(offset)


def test_the_worker_records_events_once_in_order(settings, engine, publisher, worker):
    worker.start(f"audit-{uuid.uuid4().hex[:8]}")
    catalog = CatalogService(engine, publisher, publisher.codec.registry, settings)
    service = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
    dataset_id = register_traffic_dataset(catalog)
    start = utc_now()
    spec = RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion forecasting",
        fields=("district", "speed_kmh"),
        valid_from=start,
        valid_until=start + timedelta(days=30),
    )
    request = service.submit_request(TENANT, spec, TENANT)
    service.deny(request.request_id, OPERATOR, "no forecasting this quarter")
    sender = producer(settings)
    junk = sender.send(topics.name(TopicId.REQUESTS, settings), key=b"junk", value=b"not avro").get(
        timeout=10
    )
    junk_source = f"{junk.topic}[{junk.partition}]@{junk.offset}"

    expected = {
        ("dataset.registered", f"dataset:{dataset_id}"),
        ("request.submitted", f"request:{request.request_id}"),
        ("request.denied", f"request:{request.request_id}"),
        ("event.undecodable", f"source:{junk_source}"),
    }
    entries = wait_for(
        "the four entries", lambda: (rows := logged(engine)) and len(rows) >= 4 and rows, worker
    )
    assert {(row.action, row.subject) for row in entries} == expected
    assert [row.seq for row in entries] == list(range(len(entries)))
    # Within a source partition the log keeps the topic's order.
    by_partition: dict[tuple[str, int], list[int]] = {}
    for row in entries:
        topic, partition, offset = position(row.source)
        by_partition.setdefault((topic, partition), []).append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())

    # A fresh group reads every topic from its beginning again: nothing is appended twice. A marker sent
    # after the restart to each partition the log holds says when the re-read has passed the old events.
    worker.stop()
    worker.start(f"audit-{uuid.uuid4().hex[:8]}")
    markers = set()
    for topic, partition in by_partition:
        sent = sender.send(topic, key=b"audit-marker", value=b"marker", partition=partition).get(timeout=10)
        markers.add(f"{sent.topic}[{sent.partition}]@{sent.offset}")
    sender.close()

    def with_markers() -> list[sa.Row]:
        rows = logged(engine)
        return rows if markers <= {row.source for row in rows} else []

    after = wait_for("the markers", with_markers, worker)
    assert [tuple(row) for row in after[: len(entries)]] == [tuple(row) for row in entries]
    assert {row.source for row in after[len(entries) :]} == markers
    assert {row.action for row in after[len(entries) :]} == {"event.undecodable"}

    # The mirror catches up with the log, and what it holds verifies from the topic alone.
    store = AuditStore(engine)
    wait_for("the mirror", lambda: store.mirror_progress()[1] == store.size() == len(after), worker)
    public_key = settings.run_dir / "audit-public-key.pem"
    public_key.write_text(Signer.from_settings(settings).public_key_pem())
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdo.cli.main",
            "audit",
            "verify",
            "--from-topic",
            "--public-key",
            str(public_key),
        ],
        env=settings.environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stderr
    assert f"audit log verified: {len(after)} entries" in verified.stdout
