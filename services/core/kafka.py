"""Kafka clients built from Settings, failing within seconds with a clear message when no broker answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from pdo.core.config import Settings
from pdo.core.errors import PdoError


def _unreachable(settings: Settings) -> PdoError:
    return PdoError(
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
