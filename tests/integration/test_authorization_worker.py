"""The authorization worker end to end: `pdo authorization worker` (faust) as a process, reading the real
topics — it decides a submitted request, suspends a grant on quota-exceeded, dead-letters garbage and
expires a grant on its clock."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from pdo.authorization import projection, records
from pdo.authorization.public import AuthorizationService, RequestSpec, RequestStatus, load_policy
from pdo.authorization.testing import (
    create_topics,
    delete_topics,
    isolated_home,
    register_traffic_dataset,
)
from pdo.catalog.public import CatalogService
from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, event_head, utc_now
from pdo.core.kafka import producer
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId
from pdo.core.vocabulary import GrantStatus, SuspensionCause

pytestmark = pytest.mark.integration

TENANT = "tenant:acme-logistics"
PROVIDER = "provider:transport-bureau"
WAIT_S = 90


@pytest.fixture
def settings(kafka_bootstrap, registry_url, database_url, tmp_path) -> Settings:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    configured = dataclasses.replace(
        Settings.from_env(),
        registry_url=registry_url,
        database_url=database_url,
        home=isolated_home(tmp_path, tag),
        run_dir=tmp_path / "run",
    )
    names = create_topics(configured)
    yield configured
    delete_topics(configured, names)


@pytest.fixture
def worker(settings, tmp_path):
    """`pdo authorization worker` in its own consumer group, on this test's topics and database."""
    db.upgrade(settings.database_url)
    env = settings.environment()
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pdo.cli.main",
                "authorization",
                "worker",
                "--group",
                f"authorization-{uuid.uuid4().hex[:8]}",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text(errors="replace")[-5000:])  # shown when the test fails


@pytest.fixture
def publisher(settings):
    publisher = EventPublisher(settings)
    yield publisher
    publisher.close()


def register_dataset(settings, publisher, engine) -> str:
    return register_traffic_dataset(CatalogService(engine, publisher, publisher.codec.registry, settings))


def wait_for(what: str, check: Callable[[], object], process: subprocess.Popen) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the worker exited with {process.returncode} while waiting for {what}"
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def test_the_worker_decides_suspends_dead_letters_and_expires(settings, worker, publisher):
    engine = db.make_engine(settings.database_url)
    try:
        catalog = CatalogService(engine, publisher, publisher.codec.registry, settings)
        service = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
        dataset_id = register_dataset(settings, publisher, engine)
        start = utc_now()
        request = service.submit_request(
            TENANT,
            RequestSpec(
                dataset_id=dataset_id,
                purpose="congestion forecasting",
                fields=("district", "speed_kmh"),
                valid_from=start,
                valid_until=start + timedelta(days=30),
                expected_daily_records=1000,
            ),
            TENANT,
        )

        # 1. The agent reads DataRequestSubmitted and the policy grants it.
        decided = wait_for(
            "decision",
            lambda: (r := service.get_request(request.request_id)).status != RequestStatus.SUBMITTED and r,
            worker,
        )
        assert (decided.status, decided.decided_by_rule) == (
            RequestStatus.APPROVED,
            "auto-approve-open-non-sensitive",
        )
        grant = service.get_grant(decided.grant_id)
        assert grant.status == GrantStatus.ACTIVE and grant.fields == ("district", "speed_kmh")

        # 1b. A request for a sensitive field goes to review: the worker publishes DataRequestReferred on
        # pdo.requests, reads it back, and skips it (it is not dead-lettered; see the end of the test).
        review = service.submit_request(
            TENANT,
            RequestSpec(
                dataset_id=dataset_id,
                purpose="fleet study",
                fields=("district", "plate_number"),
                valid_from=start,
                valid_until=start + timedelta(days=30),
            ),
            TENANT,
        )
        referred = wait_for(
            "referral",
            lambda: (r := service.get_request(review.request_id)).status != RequestStatus.SUBMITTED and r,
            worker,
        )
        assert (referred.status, referred.decided_by_rule) == (
            RequestStatus.PENDING_REVIEW,
            "review-everything-else",
        )

        # 2. Metering reports the quota reached today: the agent suspends the grant.
        publisher.publish(
            TopicId.QUOTA_EXCEEDED,
            records.QUOTA_EXCEEDED,
            {
                **event_head("system:metering"),
                "grant_id": grant.grant_id,
                "tenant_id": TENANT,
                "dataset_id": dataset_id,
                "day": utc_now().date(),
                "quota_records": 1000,
                "used_records": 1001,
            },
        )
        suspended = wait_for(
            "suspension",
            lambda: (g := service.get_grant(grant.grant_id)).status == GrantStatus.SUSPENDED and g,
            worker,
        )
        assert suspended.suspension_cause == SuspensionCause.QUOTA_EXCEEDED

        # 3. Bytes that are not an event go to the dead-letter topic with their position; the worker lives on.
        sender = producer(settings)
        requests_topic = topics.name(TopicId.REQUESTS, settings)
        metadata = sender.send(requests_topic, key=b"junk", value=b"not avro at all").get(timeout=10)
        sender.close()

        def dead_letters():
            with RegistryClient.for_settings(settings) as registry:
                return projection.read_events(
                    settings, TopicId.DEAD_LETTERS, AvroCodec(registry), timeout_s=30
                )

        (letter,) = wait_for("dead letter", dead_letters, worker)
        assert letter.value["reason_code"] == "UNDECODABLE"
        assert (
            letter.value["source_topic"],
            letter.value["source_partition"],
            letter.value["source_offset"],
        ) == (
            requests_topic,
            metadata.partition,
            metadata.offset,
        )
        assert letter.value["original_value"] == b"not avro at all"

        # 4. The clock: a grant whose validity ends is expired by the worker's timer.
        now = utc_now()
        short = service.submit_request(
            TENANT,
            RequestSpec(
                dataset_id=dataset_id,
                purpose="a short look",
                fields=("district",),
                valid_from=now,
                valid_until=now + timedelta(seconds=2),
            ),
            TENANT,
        )
        expired = wait_for(
            "expiry",
            lambda: (g := service.list_grants(tenant_id=TENANT, status="EXPIRED")) and g,
            worker,
        )
        assert [g.request_id for g in expired] == [short.request_id]
        assert service.get_grant(expired[0].grant_id).history[-1].actor == "system:clock"
        assert worker.poll() is None
        # The referral (read long before now) was skipped: the junk is still the only dead letter.
        assert [event.value["reason_code"] for event in dead_letters()] == ["UNDECODABLE"]
        with RegistryClient.for_settings(settings) as registry:
            on_requests = projection.read_events(settings, TopicId.REQUESTS, AvroCodec(registry), 30)
        assert [e.value["request_id"] for e in on_requests if e.schema_name == records.REFERRED] == [
            review.request_id
        ]
        assert service.get_request(review.request_id) == referred
    finally:
        engine.dispose()
