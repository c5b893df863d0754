"""The workers' one failure policy (pdo.core.retry): what is transient, and retrying it forever."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy.exc
from aiokafka import errors as aiokafka_errors
from kafka import errors as kafka_errors

from pdo.core import retry
from pdo.core.codec import UndecodableError, UnknownSchemaError
from pdo.core.errors import InvalidInput, NotFound, Unavailable
from pdo.core.registry_client import RegistryError, SchemaIdNotFound


def operational() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))


@pytest.mark.parametrize(
    "error",
    [
        operational(),
        sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        sqlalchemy.exc.TimeoutError("pool exhausted"),
        kafka_errors.KafkaConnectionError("no broker"),
        kafka_errors.KafkaTimeoutError("no ack"),
        aiokafka_errors.KafkaTimeoutError(),
        aiokafka_errors.NotLeaderForPartitionError(),
        RegistryError("cannot reach the schema registry"),
        Unavailable("database down"),
        ConnectionRefusedError(),
        TimeoutError(),
        httpx.ConnectError("refused"),
    ],
    ids=type,
)
def test_a_backing_service_that_does_not_answer_is_transient(error):
    assert retry.is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        UndecodableError("magic byte is 7"),
        UnknownSchemaError("no schema 9"),
        SchemaIdNotFound(9),
        InvalidInput("bad field"),
        NotFound("no grant"),
        ValueError("bug"),
        KeyError("grant_id"),
        sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate")),
        kafka_errors.MessageSizeTooLargeError(),
    ],
    ids=type,
)
def test_a_bad_event_or_a_bug_is_not_transient(error):
    assert not retry.is_transient(error)


class FailsFirst:
    """Blocking work that raises `error` the first `times` calls, then returns how often it was called."""

    def __init__(self, error: BaseException, times: int) -> None:
        self.error = error
        self.times = times
        self.calls = 0

    def __call__(self, value: str) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return f"{value} after {self.calls}"


def retries(step: str) -> float:
    return retry.RETRIES.labels("unknown", step)._value.get()


def test_transient_failures_are_retried_until_the_work_succeeds():
    work = FailsFirst(operational(), times=12)
    before = retries("a test step")
    done = asyncio.run(retry.retrying("a test step", work, "applied", first_backoff_s=0.0))
    assert done == "applied after 13"
    assert retries("a test step") - before == 12


def test_a_permanent_failure_propagates_at_once():
    work = FailsFirst(InvalidInput("bad event"), times=1)
    with pytest.raises(InvalidInput):
        asyncio.run(retry.retrying("a test step", work, "x", first_backoff_s=0.0))
    assert work.calls == 1


def test_the_backoff_doubles_up_to_its_ceiling(monkeypatch):
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(retry.asyncio, "sleep", no_wait)
    asyncio.run(
        retry.retrying(
            "a test step", FailsFirst(Unavailable("down"), 5), "x", first_backoff_s=1, max_backoff_s=4
        )
    )
    assert waits == [1, 2, 4, 4, 4]


def test_retries_are_counted_under_the_service_that_defines_the_step():
    from pdo.authorization.datasets import ProjectedDatasets

    assert retry._service_of(ProjectedDatasets.get) == "authorization"
    assert retry._service_of(FailsFirst(Unavailable("x"), 0)) == "unknown"
