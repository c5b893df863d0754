# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Delivery digests end to end on the real broker and PostgreSQL: records a provider publishes flow through a
real sharing worker to a tenant's topic; the metering worker counts them and digests them on its timer; the
audit worker records each digest as a "deliveries.digested" entry. The digests cover exactly the deliveries
on the tenant's topic (as the tenant reads it with its own Kafka credentials), each once, and every audit
entry carries its digest's count and root."""

from __future__ import annotations

import dataclasses
import hmac
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import avro.schema
import pytest
import sqlalchemy as sa
from conftest import admin_credentials, serving_registry
from sharing_support import (  # noqa: F401
    ACME,
    DISTRICTS,
    PdoProcesses,
    db_url,
    grant,
    platform,
    register_dataset,
    settings,
    traffic_record,
)

from pdo.audit.checkpoints import generate_private_key_pem
from pdo.audit.tables import entries as audit_entries
from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA
from pdo.cli.verify_statement import read_properties, received_delivery_ids, tenant_settings
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.events import OnDemandPublisher
from pdo.core.kafka import producer
from pdo.core.provenance import delivery_root
from pdo.core.topics import feed_topic
from pdo.gateway.kafka_credentials import KafkaCredentialIssuer
from pdo.metering import digests
from pdo.registry.auth import Guard

pytestmark = pytest.mark.integration

RECORDS = 30
DEADLINE_S = 180


@pytest.fixture
def tenant_passwords() -> dict[str, str]:
    """Kafka users the test issued, and their passwords: the registry below lets them read their subjects."""
    return {}


@pytest.fixture
def registry_url(tmp_path, tenant_passwords) -> Iterator[str]:
    """The test's registry, knowing the suite's admin and the tenants the test issued credentials to (a
    stand-in for the Kafka login and ACL listing `pdo registry serve` uses)."""

    def guard(metrics):
        admin, password = admin_credentials()

        def known(user: str, given: str) -> bool:
            expected = password if user == admin else tenant_passwords.get(user, "\0")
            return hmac.compare_digest(expected, given)

        def may_read(user: str, topic: str) -> bool:
            return user in tenant_passwords and f".tenant.{user.partition('.')[2]}." in topic

        return Guard(known, may_read, metrics)

    with serving_registry(f"sqlite:///{tmp_path / 'registry.db'}", guard) as url:
        yield url


@pytest.fixture
def digesting(settings, tmp_path) -> Iterator[tuple[Settings, Callable[..., subprocess.Popen]]]:
    """The test's settings with a digest every second and an audit signing key of its own, and a starter of
    `pdo <args…>` processes running with them."""
    key = tmp_path / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    configured = dataclasses.replace(settings, metering_digest_interval_s=1, audit_signing_key_file=str(key))
    processes = PdoProcesses(configured, tmp_path)
    yield configured, processes.start
    processes.stop()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_delivered_records_are_digested_once_and_recorded_in_the_audit_log(
    digesting, platform, tmp_path, tenant_passwords
):
    digesting, pdo_workers = digesting
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    grant_id = grant(service, ACME, dataset_id, ("record_id", "district"))
    engine = db.make_engine(digesting.database_url)
    try:
        tag = uuid.uuid4().hex[:8]
        for command in (
            ("sharing", "worker", "--group", f"sharing-{tag}", "--metrics-port", "0"),
            ("metering", "worker", "--group", f"metering-{tag}", "--metrics-port", "0"),
            ("audit-worker", "--group", f"audit-{tag}", "--metrics-port", "0"),
        ):
            pdo_workers(*command)
        _publish(digesting, codec, dataset_id)

        recorded = _wait_for_digest_entries(engine, grant_id, RECORDS)
        with engine.connect() as conn:
            made = {d.digest_id: d for d in digests.list_digests(conn, grant_id=grant_id)}
            leaves = {digest_id: digests.delivery_ids(conn, digest_id) for digest_id in made}
        # Each delivery in exactly one digest, each digest's root over its own ids.
        every = [delivery for ids in leaves.values() for delivery in ids]
        assert len(every) == len(set(every)) == RECORDS
        for digest_id, digest in made.items():
            assert (digest.count, digest.root) == (len(leaves[digest_id]), delivery_root(leaves[digest_id]))
        # The tenant, with its own Kafka credentials, finds on its topic exactly the digested deliveries (ids
        # from its records' provenance): what `pdo audit verify-statement` checks billed ids against.
        access_events = OnDemandPublisher(digesting)  # closed below: its connections are the test's
        issuer = KafkaCredentialIssuer(digesting, lambda provider: [], events=access_events)
        issued = issuer.issue(ACME)
        tenant_passwords[issued.username] = issued.password
        try:
            properties = tmp_path / "acme.properties"
            properties.write_text(issued.client_properties())
            as_tenant = tenant_settings(digesting, read_properties(properties), None)
            assert as_tenant.kafka_username == issued.username
            statement = {"tenant_id": ACME, "lines": [{"dataset_id": dataset_id}]}
            assert received_delivery_ids(as_tenant, statement) == set(every)
        finally:
            issuer.revoke(ACME)
            access_events.close()
        # The audit log recorded every digest with its count and root (a resent one would repeat them).
        assert {details["digest"] for details in recorded} == set(made)
        for details in recorded:
            digest = made[details["digest"]]
            assert (details["tenant"], details["count"], details["root"]) == (
                ACME,
                str(digest.count),
                digest.root.hex(),
            )
    finally:
        engine.dispose()


def _publish(settings, codec, dataset_id: str) -> None:
    topic = feed_topic(dataset_id, settings)
    schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
    feed = producer(settings)
    try:
        for number in range(RECORDS):
            record = traffic_record(f"digest-{number}", DISTRICTS[number % 3])
            feed.send(topic, key=record["record_id"].encode(), value=codec.encode(topic, schema, record))
        feed.flush()
    finally:
        feed.close()


def _wait_for_digest_entries(engine, grant_id: str, total: int) -> list[dict]:
    """The details of the grant's deliveries.digested entries once their counts reach `total`."""
    deadline = time.monotonic() + DEADLINE_S
    query = sa.select(audit_entries.c.body).where(
        audit_entries.c.action == "deliveries.digested", audit_entries.c.subject == f"grant:{grant_id}"
    )
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            found = [json.loads(body)["details"] for body in conn.execute(query).scalars()]
        if sum(int(details["count"]) for details in found) >= total:
            return found
        time.sleep(0.5)
    raise AssertionError(f"the audit log did not record digests of {total} deliveries within {DEADLINE_S} s")
