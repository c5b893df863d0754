"""The audit store on SQLite and PostgreSQL: writers appending at once leave no gap and no duplicate, and the
log they leave (with its checkpoint, bytes round-tripped through the database) verifies offline."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime

import pytest

from pdo.audit.checkpoints import Signer, generate_private_key_pem
from pdo.audit.store import AuditStore, Entry
from pdo.audit.verify import verify_log
from pdo.core import db
from pdo.core.config import Settings

pytestmark = pytest.mark.integration

WRITERS = 3
BATCHES = 10


def batch(writer: int, number: int) -> list[Entry]:
    moment = datetime(2026, 11, 30, tzinfo=UTC)
    # Every writer also re-reads one shared source: it must be logged once, whoever wins.
    shared = Entry("service.audit", "test.shared", "shared", None, f"shared@{number}", moment)
    own = [
        Entry("service.audit", "test.own", f"w{writer}", None, f"w{writer}@{number}.{i}", moment)
        for i in range(3)
    ]
    return [shared, *own]


def test_concurrent_writers_leave_a_gapless_log_that_verifies(database_url, tmp_path):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    store = AuditStore(engine)
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        for number in range(BATCHES):
            try:
                store.append(batch(writer, number))
            except BaseException as error:  # noqa: BLE001 - reported to the test below
                failures.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    key = tmp_path / "key.pem"
    key.write_text(generate_private_key_pem())
    signer = Signer.from_settings(dataclasses.replace(Settings(), audit_signing_key_file=str(key)))
    store.checkpoint(signer)
    logged = store.entries()
    assert failures == []  # appends are serialised (a table lock; BEGIN IMMEDIATE on SQLite)
    assert [entry.seq for entry in logged] == list(range(len(logged)))
    sources = [json.loads(entry.body)["source"] for entry in logged]
    assert len(set(sources)) == len(sources)
    assert {f"shared@{number}" for number in range(BATCHES)} <= set(sources)
    assert verify_log(logged, store.checkpoints(), signer.public_key).good
    engine.dispose()  # before the fixture drops the database
