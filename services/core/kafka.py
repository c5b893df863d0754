"""Kafka clients built from Settings, failing within seconds with a clear message when no broker answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.net.compat import KafkaNetClient

from pdo.core.config import Settings
from pdo.core.errors import Unavailable


def _unreachable(settings: Settings) -> Unavailable:
    return Unavailable(
        f"cannot reach the Kafka broker at {settings.kafka_bootstrap} within {settings.kafka_timeout_s} s",
        hint="start the local one with `pdo broker start`, or point PDO_KAFKA_BOOTSTRAP at a running broker",
    )


def _timeouts(settings: Settings) -> dict:
    timeout_ms = settings.kafka_timeout_s * 1000
    return {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "bootstrap_timeout_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
    }


@contextmanager
def admin_client(settings: Settings) -> Iterator[KafkaAdminClient]:
    try:
        client = KafkaAdminClient(client_id="pdo-admin", **_timeouts(settings))
    except KafkaError as error:
        raise _unreachable(settings) from error
    try:
        yield client
    finally:
        client.close()


def producer(settings: Settings, **config) -> KafkaProducer:
    """A producer that waits for the broker's acknowledgement and never reorders a partition's records.

    A send to a topic the broker does not have gives up after PDO_KAFKA_TIMEOUT_S, not kafka-python's 60 s.
    """
    defaults = {
        "acks": "all",
        "linger_ms": 5,
        "max_in_flight_requests_per_connection": 1,
        "max_block_ms": settings.kafka_timeout_s * 1000,
    }
    try:
        return KafkaProducer(client_id="pdo", **_timeouts(settings), **{**defaults, **config})
    except KafkaError as error:
        raise _unreachable(settings) from error


def consumer(settings: Settings, **config) -> KafkaConsumer:
    """A consumer with pdo's timeouts; Unavailable when no broker answers, leaving nothing running behind.

    kafka-python bootstraps inside the constructor and, when that fails, leaves the network client it
    started running (an IO thread per attempt: a leak in a long-lived process such as the gateway). The
    client is caught as it is made, through the documented `kafka_client` factory, and closed here.
    """
    made: list[KafkaNetClient] = []

    def network_client(**client_config) -> KafkaNetClient:
        made.append(KafkaNetClient(**client_config))
        return made[-1]

    try:
        return KafkaConsumer(kafka_client=network_client, **{**_timeouts(settings), **config})
    except KafkaError as error:
        for client in made:
            client.close()
        raise _unreachable(settings) from error
