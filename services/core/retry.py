"""The stream workers' one failure policy: what is transient, and how it is retried.

A worker meets two kinds of failure. **Transient**: a backing service does not answer right now (the
database, the broker, the schema registry, the network). The event is valid and must not be lost, so the
step is retried with backoff, doubling up to a ceiling (pdo.core.kafka.RETRY_MAX_BACKOFF_S: a step resumes
within that of the service answering again), forever: the stall shows as consumer lag, each
retry is logged and counted in `pdo_worker_retries_total{service,step}`, and the event is applied once the
service is back. **Permanent**: the event itself is bad (it does not decode, it breaks a rule). Retrying
cannot help, so the worker dead-letters it at once with its reason and goes on.

`is_transient` is the one notion of transient; `retrying` is the one retry loop. Anything else raised by
the work propagates at once, for the caller to dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import httpx
import sqlalchemy.exc
from aiokafka import errors as aiokafka_errors
from kafka import errors as kafka_errors
from prometheus_client import Counter

from pdo.core.errors import Unavailable
from pdo.core.kafka import RETRY_MAX_BACKOFF_S
from pdo.core.registry_client import RegistryError, SchemaIdNotFound

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES = Counter(
    "pdo_worker_retries_total",
    "Steps a stream worker retried because a backing service did not answer, by service and step",
    ["service", "step"],
)


def is_transient(exc: BaseException) -> bool:
    """True when `exc` says a backing service did not answer (retry), False when the input is at fault."""
    if isinstance(exc, SchemaIdNotFound):
        return False  # the event names a schema the registry never had: retrying cannot find it
    if isinstance(exc, Unavailable | RegistryError):
        # Unavailable is pdo's own "did not answer"; a RegistryError is the registry unreachable or
        # refusing this process (its credentials, its ACLs): the process's state, not the event's.
        return True
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.TimeoutError):
        return True  # a lost or refused connection, a pool exhausted for a while
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return bool(exc.connection_invalidated)  # a disconnect; other DBAPI errors are the statement's
    if isinstance(exc, kafka_errors.KafkaTimeoutError | aiokafka_errors.KafkaTimeoutError):
        return True
    if isinstance(exc, kafka_errors.KafkaError | aiokafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, OSError | TimeoutError | httpx.TransportError)


def _service_of(work: Callable[..., object]) -> str:
    """The service a step belongs to, from the module that defines it: pdo.<service>.… → <service>."""
    parts = str(getattr(work, "__module__", "") or "").split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pdo" else "unknown"


async def retrying(
    what: str,
    work: Callable[..., T],
    *args: object,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = RETRY_MAX_BACKOFF_S,
) -> T:
    """Run blocking `work(*args)` in a thread; retry it while it fails transiently, backing off, forever.

    `what` names the step (e.g. "deciding a request"); it labels the retry counter, so it must be a fixed
    text, never one with ids or counts in it. A non-transient exception propagates at once.
    """
    backoff = first_backoff_s
    while True:
        try:
            return await asyncio.to_thread(work, *args)
        except Exception as error:
            if not is_transient(error):
                raise
            RETRIES.labels(_service_of(work), what).inc()
            log.warning("%s waits %.1f s: %s: %s", what, backoff, type(error).__name__, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
