# ruff: noqa: F811 - test parameters name the fixtures imported from sharing_support
"""publish -> share -> consume with every client on the broker's SASL_SSL listener: TLS to the broker
(verified against the development CA from deploy/local/tls.sh) under the same SCRAM users and ACLs.

deploy/test.sh starts the suite's broker with the TLS listener (PDO_KAFKA_TLS_PORT) and exports the CA
(PDO_KAFKA_SSL_CAFILE); the sharing worker here runs with PDO_KAFKA_SECURITY_PROTOCOL=SASL_SSL.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import uuid
from collections.abc import Iterator

import pytest
from conftest import REQUIRE_ALL, isolated_namespace
from sharing_support import (  # noqa: F401 - fixtures are imported by name
    ACME,
    Feed,
    db_url,
    grant,
    platform,
    read_topic,
    record_ids,
    register_dataset,
    wait_for,
    workers,
)

from pdo.core import db
from pdo.core.config import Settings
from pdo.core.topics import tenant_topic

pytestmark = pytest.mark.integration


def over_tls(settings: Settings) -> Settings:
    if not (settings.kafka_tls_port and settings.kafka_ssl_cafile):
        message = (
            "the broker's TLS listener (PDO_KAFKA_TLS_PORT, PDO_KAFKA_SSL_CAFILE; deploy/test.sh sets them)"
        )
        if REQUIRE_ALL:
            pytest.fail(f"{message} is not configured")
        pytest.skip(f"{message} is not configured")
    return dataclasses.replace(
        settings, kafka_bootstrap=f"127.0.0.1:{settings.kafka_tls_port}", kafka_security_protocol="SASL_SSL"
    )


@pytest.fixture
def settings(kafka_bootstrap, registry_url, db_url, tmp_path) -> Iterator[Settings]:
    base = dataclasses.replace(over_tls(Settings.from_env()), registry_url=registry_url, database_url=db_url)
    with isolated_namespace(base, tmp_path) as configured:
        db.upgrade(configured.database_url)
        yield configured


def test_the_tls_listener_presents_a_certificate_the_ca_vouches_for(settings):
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    with (
        socket.create_connection(("127.0.0.1", settings.kafka_tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)


def test_publish_share_consume_over_sasl_ssl(settings, workers, platform):
    assert settings.kafka_security_protocol == "SASL_SSL"
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    grant(service, ACME, dataset_id, ("record_id", "district"))
    acme_topic = tenant_topic(ACME, dataset_id, settings)
    feed = Feed(settings, codec, dataset_id)
    worker = workers(f"sharing-{uuid.uuid4().hex[:8]}")
    try:
        published = feed.publish(6, "tls")
        wait_for("deliveries over TLS", lambda: len(read_topic(settings, codec, acme_topic)) >= 6, [worker])
        assert sorted(record_ids(read_topic(settings, codec, acme_topic))) == sorted(published)
    finally:
        feed.close()
