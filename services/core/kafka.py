"""Kafka clients built from Settings: always authenticated (SASL/SCRAM-SHA-512, optionally over TLS), failing
within seconds with a clear message when no broker answers or the broker refuses the credentials.

Every client pdo makes — kafka-python's producer, consumer and admin, aiokafka consumers, faust apps — takes
its connection settings from here, so no code path can talk to Kafka without credentials.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.net.compat import KafkaNetClient

from pdo.core.config import ConfigError, Settings, local_secret_path
from pdo.core.errors import Unavailable

SASL_MECHANISM = "SCRAM-SHA-512"

# Recovery after a broker restart, in one place. kafka-python backs off reconnecting from 50 ms, doubling up
# to reconnect_backoff_max_ms (30 s by default): after an outage of half a minute a client could wait up to 30 s
# more before it tried again, so HTTP ingest stalled ~25 s after the broker was back. Capped at 1 s, a client
# tries a down broker once a second (a connection attempt is cheap) and resumes within ~1 s of its answer.
# aiokafka (and faust on it) has no growing backoff: it retries every retry_backoff_ms (100 ms); the workers'
# own retry policy (pdo.core.retry) caps at RETRY_MAX_BACKOFF_S.
RECONNECT_BACKOFF_MAX_MS = 1000
RETRY_MAX_BACKOFF_S = 2.0

# kafka-python warns "exchanging credentials in the clear" on every SASL_PLAINTEXT login, SCRAM included;
# SCRAM sends a salted proof, never the password, so the warning is noise in every log.
logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)


def _unreachable(settings: Settings, error: Exception | None = None) -> Unavailable:
    if error is not None and "authentication" in str(error).lower():
        return Unavailable(
            f"the Kafka broker at {settings.kafka_bootstrap} refused user {settings.kafka_username!r}",
            hint="check PDO_KAFKA_USERNAME / PDO_KAFKA_PASSWORD (a local stack keeps them in "
            "<PDO_RUN_DIR>/secrets/), or issue the user's credentials again",
        )
    return Unavailable(
        f"cannot reach the Kafka broker at {settings.kafka_bootstrap} within {settings.kafka_timeout_s} s "
        f"as user {settings.kafka_username!r}",
        hint="start the local one with `pdo broker start`, or point PDO_KAFKA_BOOTSTRAP at a running broker; "
        "a wrong PDO_KAFKA_PASSWORD looks the same from here: see the broker's log",
    )


def require_credentials(settings: Settings) -> tuple[str, str]:
    """(username, password): PDO_KAFKA_PASSWORD, else the local stack's secret for the user; a ConfigError
    that says where credentials come from when there is neither (there is no built-in password)."""
    username = settings.kafka_username
    if settings.kafka_password:
        return username, settings.kafka_password
    try:
        return username, local_secret_path(settings.run_dir, f"kafka-{username}").read_text().strip()
    except OSError:
        raise ConfigError(
            f"no Kafka password for user {username!r}: set PDO_KAFKA_PASSWORD, or start the local broker "
            f"(`pdo broker start`), which writes {local_secret_path(settings.run_dir, 'kafka-admin')}"
        ) from None


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of a SASL_SSL connection (verifying the broker against PDO_KAFKA_SSL_CAFILE)."""
    if settings.kafka_security_protocol != "SASL_SSL":
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def connection(settings: Settings) -> dict[str, Any]:
    """kafka-python's (and aiokafka's) security settings for this process's principal."""
    username, password = require_credentials(settings)
    return {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": SASL_MECHANISM,
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }


def kafka_python_connection(settings: Settings) -> dict[str, Any]:
    config = connection(settings)
    if settings.kafka_security_protocol == "SASL_SSL":
        config["ssl_cafile"] = settings.kafka_ssl_cafile or None
        config["ssl_check_hostname"] = True
    return config


def aiokafka_connection(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer / AIOKafkaProducer: servers, SASL and, for SASL_SSL, TLS."""
    config = connection(settings)
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    return config


def _timeouts(settings: Settings) -> dict[str, Any]:
    timeout_ms = settings.kafka_timeout_s * 1000
    return {
        **kafka_python_connection(settings),
        "bootstrap_timeout_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }


@contextmanager
def admin_client(settings: Settings) -> Iterator[KafkaAdminClient]:
    try:
        client = KafkaAdminClient(client_id="pdo-admin", **_timeouts(settings))
    except KafkaError as error:
        raise _unreachable(settings, error) from error
    try:
        yield client
    finally:
        client.close()


def producer(settings: Settings, **config: Any) -> KafkaProducer:
    """An idempotent producer that waits for the broker's acknowledgement and never reorders a partition's
    records.

    Idempotent (KIP-98): the broker keeps the producer's id and a sequence number per partition and drops a
    batch it already appended, so the producer's own retries (a request timed out, a connection dropped after
    the broker wrote) never duplicate or reorder a record. kafka-python 3.x enables it by default; asking for
    it explicitly makes a conflicting setting (acks other than all, retries 0) an error instead of silently
    turning it off. It needs only WRITE on the topic (KIP-679). It does not make an application's resend of
    the same record idempotent: that is the feed's record_id window (pdo.publishing.record_ids).

    A send to a topic the broker does not have gives up after PDO_KAFKA_TIMEOUT_S, not kafka-python's 60 s.
    """
    defaults = {
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_in_flight_requests_per_connection": 1,
        "max_block_ms": settings.kafka_timeout_s * 1000,
    }
    try:
        return KafkaProducer(client_id="pdo", **_timeouts(settings), **{**defaults, **config})
    except KafkaError as error:
        raise _unreachable(settings, error) from error


def consumer(settings: Settings, **config: Any) -> KafkaConsumer:
    """A consumer with pdo's timeouts; Unavailable when no broker answers, leaving nothing running behind.

    kafka-python bootstraps inside the constructor and, when that fails, leaves the network client it
    started running (an IO thread per attempt: a leak in a long-lived process such as the gateway). The
    client is caught as it is made, through the documented `kafka_client` factory, and closed here.
    """
    made: list[KafkaNetClient] = []

    def network_client(**client_config: Any) -> KafkaNetClient:
        made.append(KafkaNetClient(**client_config))
        return made[-1]

    try:
        return KafkaConsumer(kafka_client=network_client, **{**_timeouts(settings), **config})
    except KafkaError as error:
        for client in made:
            client.close()
        raise _unreachable(settings, error) from error


def librdkafka_config(settings: Settings) -> dict[str, str]:
    """The same connection for librdkafka clients (confluent-kafka, kcat): the properties a tenant is given."""
    username, password = require_credentials(settings)
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanisms": SASL_MECHANISM,
        "sasl.username": username,
        "sasl.password": password,
    }
    if settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_ssl_cafile:
        config["ssl.ca.location"] = settings.kafka_ssl_cafile
    return config
