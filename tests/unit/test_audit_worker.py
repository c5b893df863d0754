"""The audit worker's batch step: one entry per event in order, undecodable events recorded with their
reason, a re-read batch appended nothing twice, a registry outage waited out, checkpoints signed on growth."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from pdo.audit import tables
from pdo.audit.app import Runtime, record
from pdo.audit.checkpoints import Signer, generate_private_key_pem
from pdo.audit.store import AuditStore
from pdo.core.codec import Decoded, UndecodableError
from pdo.core.config import Settings
from pdo.core.db import make_engine
from pdo.core.deadletters import SourceMessage
from pdo.core.errors import Unavailable
from pdo.core.names import Event

AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
EVENTS = {
    b"submitted": (
        Event.REQUEST_SUBMITTED,
        {"actor": "tenant:acme", "occurred_at": AT, "request_id": "r-1", "tenant_id": "tenant:acme",
         "dataset_id": "traffic-flow", "fields": ["lane"]},
    ),
    b"denied": (
        Event.AUTHORIZATION_DENIED,
        {"actor": "service.authorization", "occurred_at": AT, "request_id": "r-1", "tenant_id": "tenant:acme",
         "dataset_id": "traffic-flow", "rule": "core-never", "reason": "CORE data"},
    ),
}  # fmt: skip


class FakeCodec:
    """Decodes the few values above; anything else is undecodable. `outages` registry failures come first."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.calls = 0

    def decode(self, data: bytes | None) -> Decoded:
        self.calls += 1
        if self.outages:
            self.outages -= 1
            raise Unavailable("the schema registry does not answer")
        if data not in EVENTS:
            raise UndecodableError("no Confluent header")
        name, value = EVENTS[data]
        return Decoded(1, name, value)


@pytest.fixture
def runtime(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    tables.metadata.create_all(engine)
    key = tmp_path / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    signer = Signer.from_settings(dataclasses.replace(Settings.from_env(), audit_signing_key_file=str(key)))
    # Mirroring is tested in test_audit_mirror.py; these tests never reach the publisher.
    yield Runtime(engine, FakeCodec(), AuditStore(engine), signer, publisher=None)
    engine.dispose()


def message(offset: int, value: bytes, topic: str = "pdo.requests") -> SourceMessage:
    return SourceMessage(topic, 0, offset, None, value)


def logged(runtime: Runtime) -> list[tuple[str, str, str]]:
    query = sa.select(tables.entries.c.action, tables.entries.c.subject, tables.entries.c.source)
    with runtime.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query.order_by(tables.entries.c.seq))]


def test_a_batch_becomes_entries_in_order_and_a_reread_appends_nothing(runtime):
    batch = [message(0, b"submitted"), message(1, b"denied", topic="pdo.authorizations")]
    assert asyncio.run(record(runtime, batch)) == 2
    assert asyncio.run(record(runtime, batch)) == 0
    assert logged(runtime) == [
        ("request.submitted", "request:r-1", "pdo.requests[0]@0"),
        ("request.denied", "request:r-1", "pdo.authorizations[0]@1"),
    ]


def test_an_undecodable_event_is_recorded_with_its_source_and_reason(runtime):
    assert asyncio.run(record(runtime, [message(5, b"\x01garbage"), message(6, b"submitted")])) == 2
    assert logged(runtime)[0] == ("event.undecodable", "source:pdo.requests[0]@5", "pdo.requests[0]@5")
    with runtime.engine.connect() as connection:
        reason = connection.scalar(sa.select(tables.entries.c.reason).where(tables.entries.c.seq == 0))
    assert reason == "UndecodableError: no Confluent header"


def test_a_registry_that_does_not_answer_is_waited_out(runtime):
    runtime.codec = FakeCodec(outages=1)
    assert asyncio.run(record(runtime, [message(0, b"submitted")])) == 1
    assert runtime.codec.calls == 2
    assert logged(runtime) == [("request.submitted", "request:r-1", "pdo.requests[0]@0")]


def test_a_checkpoint_is_signed_when_the_log_grew(runtime):
    asyncio.run(record(runtime, [message(0, b"submitted")]))
    runtime.checkpoint()
    runtime.checkpoint()  # nothing new: no second checkpoint
    with runtime.engine.connect() as connection:
        sizes = list(connection.scalars(sa.select(tables.checkpoints.c.size)))
    assert sizes == [1]
