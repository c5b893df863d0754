"""Reconciliation on the real broker: tenant records with provenance on real tenant topics, ledger rows in SQL,
statements issued by a real close (its StatementIssued events read back from the topic).

March 2026: acme gets 4 records (one of them written twice, a redelivery), citylab 3, all metered and
billed; one more acme record from March was metered late and billed in April. Everything reconciles; then a
ledger row is removed and a row for a record nobody delivered is added, and the exact drift shows, in the
command's table and exit status and in the gauges.
"""

# ruff: noqa: F811  (pytest fixtures imported from sharing_support are parameters here)
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import avro.schema
import pytest
from billing_support import add_grant, add_usage, per_thousand
from prometheus_client import CollectorRegistry
from sharing_support import db_url, read_topic, settings  # noqa: F401  (fixtures)

from pdo.billing.gauges import billing_metrics, export_billing_metrics
from pdo.billing.reconcile import reconcile
from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.kafka import admin_client, producer
from pdo.core.provenance import delivery_id, provenance_schema
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId, tenant_topic, tenant_topic_part
from pdo.metering import tables as t

pytestmark = pytest.mark.integration

ACME, CITYLAB = "tenant:acme", "tenant:citylab"
DATASET = "traffic"
IN_MARCH = datetime(2026, 3, 15, 9, tzinfo=UTC)
IN_APRIL = datetime(2026, 4, 20, tzinfo=UTC)
TENANT_SCHEMA = avro.schema.parse(
    json.dumps(
        {
            "type": "record",
            "name": "Trip_0123abcd",
            "namespace": "pdo.tenant.v1",
            "fields": [
                {"name": "record_id", "type": "string"},
                {"name": "pdo_provenance", "type": provenance_schema()},
            ],
        }
    )
)


class TenantTopics:
    """Writes tenant records as the sharing service does (with provenance), Kafka timestamps chosen."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = RegistryClient.for_settings(settings)
        self.codec = AvroCodec(self.registry)
        self.producer = producer(settings)
        self.feed = f"pdo.feed.{DATASET}"

    def create(self, tenant_id: str) -> str:
        """The tenant's topic as declared, but kept forever: the records carry March 2026 timestamps, which
        the declared 7-day retention would delete at the broker's next retention check."""
        name = tenant_topic(tenant_id, DATASET, self.settings)
        spec = topics.spec(TopicId.TENANT_STREAM, self.settings)
        rendered = spec.render(tenant_id=tenant_topic_part(tenant_id), dataset_id=DATASET)
        with admin_client(self.settings) as admin:
            topics.apply(admin, [dataclasses.replace(rendered, retention_ms=-1)])
        return name

    def deliver(
        self, tenant_id: str, grant_id: str, source_offset: int, at: datetime, partition: int | None = None
    ) -> str:
        """One tenant record of feed offset `source_offset`; its delivery id."""
        provenance = {
            "dataset_id": DATASET,
            "source_topic": self.feed,
            "source_partition": 0,
            "source_offset": source_offset,
            "grant_id": grant_id,
            "masking_policy_version": "m1-000000000000",
            "published_at": at,
        }
        topic = tenant_topic(tenant_id, DATASET, self.settings)
        value = self.codec.encode(
            topic, TENANT_SCHEMA, {"record_id": f"r{source_offset}", "pdo_provenance": provenance}
        )
        self.producer.send(topic, key=b"r", value=value, timestamp_ms=int(at.timestamp() * 1000)).get(
            timeout=10
        )
        return delivery_id(self.feed, 0, source_offset, grant_id)

    def close(self) -> None:
        self.producer.close()
        self.registry.close()


def pdo_billing(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = settings.environment()
    return subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", "billing", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_reconciliation_is_zero_then_shows_the_exact_drift(settings) -> None:
    engine = db.make_engine(settings.database_url)
    tenants = TenantTopics(settings)
    try:
        for tenant in (ACME, CITYLAB):
            tenants.create(tenant)
        with engine.begin() as conn:
            add_grant(conn, "g-acme", ACME, DATASET, per_thousand("1.00"))
            add_grant(conn, "g-citylab", CITYLAB, DATASET, per_thousand("2.00"))
        acme_ids = [tenants.deliver(ACME, "g-acme", offset, IN_MARCH) for offset in range(4)]
        tenants.deliver(ACME, "g-acme", 0, IN_MARCH)  # the sharing service redelivered offset 0
        citylab_ids = [tenants.deliver(CITYLAB, "g-citylab", offset, IN_MARCH) for offset in range(3)]
        late_id = tenants.deliver(ACME, "g-acme", 4, IN_MARCH.replace(day=31))
        with engine.begin() as conn:
            for grant, tenant, ids in (("g-acme", ACME, acme_ids), ("g-citylab", CITYLAB, citylab_ids)):
                for delivery in ids:
                    add_usage(conn, grant, tenant, DATASET, 1, 120, IN_MARCH, delivery_id=delivery)
            add_usage(conn, "g-acme", ACME, DATASET, 1, 120, IN_MARCH.replace(day=31), billing_period="2026-04",
                      delivery_id=late_id)  # fmt: skip

        closed = pdo_billing(settings, "statements", "close", "--period", "2026-03", "--by", "operator:alice")
        assert closed.returncode == 0, closed.stderr
        assert "period 2026-03 closed: 2 statement(s) issued" in closed.stdout
        again = pdo_billing(settings, "statements", "close", "--period", "2026-03")
        assert again.returncode == 2 and "period 2026-03 was closed at" in again.stderr
        verified = pdo_billing(settings, "statements", "verify", "--period", "2026-03")
        assert verified.returncode == 0 and "recompute to the cent" in verified.stdout
        issued = read_topic(settings, tenants.codec, topics.name(TopicId.STATEMENTS, settings))
        assert sorted((v["tenant_id"], v["total"]) for _, _, v in issued) == [
            (ACME, Decimal("0.00")),  # 4 x 1.00 / 1,000 = 0.004 -> 0.00
            (CITYLAB, Decimal("0.01")),  # 3 x 2.00 / 1,000 = 0.006 -> 0.01
        ]

        clean = reconcile(settings, engine, "2026-03", tenants.codec)
        figures = {f.grant_id: f for f in clean.grants}
        assert clean.clean and clean.drift("topic_vs_ledger") == 0 and clean.drift("ledger_vs_billed") == 0
        assert (figures["g-acme"].on_topic, figures["g-acme"].in_ledger, figures["g-acme"].billed) == (
            4,
            4,
            4,
        )
        assert figures["g-acme"].duplicates_on_topic == 1
        assert (figures["g-citylab"].on_topic, figures["g-citylab"].billed) == (3, 3)
        april = reconcile(settings, engine, "2026-04", tenants.codec)
        assert [(f.grant_id, f.on_topic, f.in_ledger, f.billed) for f in april.grants] == [
            ("g-acme", 1, 1, None)
        ]
        done = pdo_billing(settings, "reconcile", "--period", "2026-03")
        assert done.returncode == 0, done.stderr
        assert "drift topic_vs_ledger 0 record(s), ledger_vs_billed 0 record(s)" in done.stdout
        assert "1 redelivered copy(ies)" in done.stdout

        with engine.begin() as conn:
            conn.execute(t.ledger.delete().where(t.ledger.c.delivery_id == acme_ids[2]))  # metering lost one
            add_usage(
                conn, "g-citylab", CITYLAB, DATASET, 1, 120, IN_MARCH, delivery_id="f" * 32
            )  # never delivered

        drifted = reconcile(settings, engine, "2026-03", tenants.codec)
        figures = {f.grant_id: f for f in drifted.grants}
        acme, citylab = figures["g-acme"], figures["g-citylab"]
        assert (acme.on_topic, acme.in_ledger, acme.billed, acme.missing_from_ledger, acme.not_on_topic) == (
            4,
            3,
            4,
            1,
            0,
        )
        assert (
            citylab.on_topic,
            citylab.in_ledger,
            citylab.billed,
            citylab.missing_from_ledger,
            citylab.not_on_topic,
        ) == (3, 4, 3, 0, 1)
        assert drifted.drift("topic_vs_ledger") == 2 and drifted.drift("ledger_vs_billed") == 2
        done = pdo_billing(settings, "reconcile", "--period", "2026-03")
        assert done.returncode == 1
        rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:3]}
        assert set(rows) == {"g-acme", "g-citylab"}, done.stdout + done.stderr
        # topic, ledger, set_aside, billed, missing_from_ledger, not_on_topic, ledger-billed
        assert rows["g-acme"][3:] == ["4", "3", "0", "4", "1", "0", "-1"], done.stdout
        assert rows["g-citylab"][3:] == ["3", "4", "0", "3", "0", "1", "1"], done.stdout
        assert "drift topic_vs_ledger 2 record(s), ledger_vs_billed 2 record(s)" in done.stdout

        metrics = billing_metrics(CollectorRegistry())
        with engine.begin() as conn:
            add_usage(conn, "g-citylab", CITYLAB, DATASET, 1_500, 9, IN_APRIL)  # 1,500 x 2.00 / 1,000 = 3.00
        results = export_billing_metrics(settings, engine, IN_APRIL, metrics, tenants.codec)
        assert [r.period for r in results] == ["2026-03", "2026-04"]
        assert (
            metrics.drift.labels(check="topic_vs_ledger")._value.get() == 2 + 1500
        )  # April's row has no topic record
        assert metrics.drift.labels(check="ledger_vs_billed")._value.get() == 2
        assert metrics.period_charges.labels(tenant=CITYLAB, currency="CNY")._value.get() == 3.00
        assert (
            metrics.period_charges.labels(tenant=ACME, currency="CNY")._value.get() == 0.00
        )  # 1 x 1.00 / 1,000
    finally:
        tenants.close()
        engine.dispose()


def test_records_retention_deleted_from_the_topic_are_past_retention_not_drift(settings) -> None:
    from kafka.structs import TopicPartition

    engine = db.make_engine(settings.database_url)
    tenants = TenantTopics(settings)
    try:
        topic = tenants.create(ACME)
        with engine.begin() as conn:
            add_grant(conn, "g-acme", ACME, DATASET, per_thousand("1.00"))
        for day in (1, 2, 3):
            at = IN_MARCH.replace(day=day)
            delivery = tenants.deliver(ACME, "g-acme", day, at, partition=0)
            with engine.begin() as conn:
                add_usage(conn, "g-acme", ACME, DATASET, 1, 120, at, delivery_id=delivery)
        with admin_client(settings) as admin:  # what retention does to old segments: the log starts later
            admin.delete_records({TopicPartition(topic, 0): 2})

        result = reconcile(settings, engine, "2026-03", tenants.codec)

        (acme,) = result.grants
        assert (acme.on_topic, acme.in_ledger, acme.past_retention, acme.not_on_topic) == (1, 3, 2, 0)
        assert result.clean
    finally:
        tenants.close()
        engine.dispose()
