"""The audit log's Kafka mirror (pdo.audit.mirror): what goes out and in which order, that a crash between
publishing and recording the progress only repeats records, and that reading it back finds what a tamperer
or a broken writer would leave (a differing copy, a gap, a reordering, a foreign record)."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime

import fastavro
import pytest

from pdo.audit import mirror
from pdo.audit.checkpoints import Signer, generate_private_key_pem
from pdo.audit.store import AuditStore, Entry
from pdo.audit.verify import verify_log
from pdo.core import db, schemas
from pdo.core.codec import HEADER
from pdo.core.config import Settings
from pdo.core.events import OutgoingEvent
from pdo.core.names import Event
from pdo.core.topics import TopicId

MOMENT = datetime(2026, 12, 1, 0, 0, 0, 250000, tzinfo=UTC)


def entry(n: int) -> Entry:
    return Entry(
        actor="operator:alice",
        action="grant.revoked",
        subject=f"grant:g-{n}",
        reason="contract ended",
        source=f"pdo.authorizations[0]@{n}",
        occurred_at=MOMENT,
        details={"tenant": "tenant:acme"},
    )


class RecordingPublisher:
    """Stands in for EventPublisher: keeps what a broker would have taken, as Confluent-framed Avro."""

    def __init__(self) -> None:
        self.records: list[mirror.TopicRecord] = []
        self.refuse = False

    def publish_all(self, topic: TopicId, events: list[OutgoingEvent]) -> None:
        assert topic is TopicId.AUDIT
        if self.refuse:
            raise ConnectionError("the broker is away")
        for event in events:
            self.records.append(
                mirror.TopicRecord(
                    len(self.records), event.key.encode(), frame(event.schema_name, event.value)
                )
            )


def frame(schema_name: str, value: dict) -> bytes:
    body = io.BytesIO()
    parsed = fastavro.parse_schema(json.loads(str(schemas.get(schema_name))))
    fastavro.schemaless_writer(body, parsed, value)
    return HEADER.pack(0, 7) + body.getvalue()


@pytest.fixture
def signer(tmp_path) -> Signer:
    key = tmp_path / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    return Signer.from_settings(
        dataclasses.replace(Settings(), audit_signing_key_file=str(key), audit_origin="test.local/audit")
    )


@pytest.fixture
def store(tmp_path) -> AuditStore:
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    return AuditStore(db.make_engine(url))


def grow(store: AuditStore, signer: Signer, start: int, end: int) -> None:
    store.append([entry(n) for n in range(start, end)])
    store.checkpoint(signer)


def test_each_entry_goes_out_once_in_seq_order_and_each_checkpoint_after_its_entries(store, signer):
    publisher = RecordingPublisher()
    grow(store, signer, 0, 3)
    assert mirror.publish_tail(store, publisher, signer.origin) == 4
    grow(store, signer, 3, 5)
    assert mirror.publish_tail(store, publisher, signer.origin) == 3
    assert mirror.publish_tail(store, publisher, signer.origin) == 0
    keys = [record.key.decode() for record in publisher.records]
    assert keys == ["entry:0", "entry:1", "entry:2", "checkpoint:3", "entry:3", "entry:4", "checkpoint:5"]
    assert store.mirror_progress() == (5, 5)


def test_what_is_read_back_verifies_like_the_database(store, signer):
    publisher = RecordingPublisher()
    grow(store, signer, 0, 6)
    mirror.publish_tail(store, publisher, signer.origin)
    mirrored = mirror.read_topic(publisher.records)
    assert mirrored.problems == []
    assert mirrored.entries == store.entries()
    # The topic carries signed_at in milliseconds; what is signed (origin, size, root) comes back exactly.
    signed = [(c.size, c.root, c.signature) for c in store.checkpoints()]
    assert [(c.size, c.root, c.signature) for c in mirrored.checkpoints] == signed
    verdict = verify_log(mirrored.entries, mirrored.checkpoints, signer.public_key)
    assert verdict.problem is None and verdict.size == 6


def test_a_refused_publish_records_no_progress_and_is_sent_again(store, signer):
    publisher = RecordingPublisher()
    grow(store, signer, 0, 2)
    publisher.refuse = True
    with pytest.raises(ConnectionError):
        mirror.publish_tail(store, publisher, signer.origin)
    assert store.mirror_progress() == (0, 0)
    publisher.refuse = False
    assert mirror.publish_tail(store, publisher, signer.origin) == 3


def test_a_tail_published_twice_after_a_crash_reads_as_one_log(store, signer):
    publisher = RecordingPublisher()
    grow(store, signer, 0, 3)
    mirror.publish_tail(store, publisher, signer.origin)
    store.set_mirror_progress(0, 0)  # the crash: acknowledged, but the progress never written
    mirror.publish_tail(store, publisher, signer.origin)
    assert len(publisher.records) == 8
    mirrored = mirror.read_topic(publisher.records)
    assert mirrored.problems == [] and len(mirrored.entries) == 3 and len(mirrored.checkpoints) == 1


def test_a_long_backlog_goes_out_over_several_passes(store, signer, monkeypatch):
    monkeypatch.setattr(mirror, "MAX_ENTRIES_PER_PASS", 2)
    publisher = RecordingPublisher()
    grow(store, signer, 0, 5)
    passes = 0
    while mirror.publish_tail(store, publisher, signer.origin):
        passes += 1
    assert passes == 3
    assert [r.key.decode() for r in publisher.records][-2:] == ["entry:4", "checkpoint:5"]


@pytest.fixture
def published(store, signer) -> list[mirror.TopicRecord]:
    publisher = RecordingPublisher()
    grow(store, signer, 0, 4)
    mirror.publish_tail(store, publisher, signer.origin)
    return publisher.records


def renumbered(records: list[mirror.TopicRecord]) -> list[mirror.TopicRecord]:
    return [dataclasses.replace(record, offset=n) for n, record in enumerate(records)]


def test_a_second_copy_that_differs_is_named(published):
    value = mirror.entry_event(
        "test.local/audit",
        dataclasses.replace(
            mirror.read_topic(published).entries[1], body='{"occurred_at":"2026-12-01T00:00:00.250Z"}'
        ),
    )
    forged = mirror.TopicRecord(99, b"entry:1", frame(Event.AUDIT_ENTRY_LOGGED, value))
    problems = mirror.read_topic([*published, forged]).problems
    assert problems == ["offset 99: a second, different copy of entry 1"]


def test_a_missing_entry_is_named_where_the_next_one_appears(published):
    problems = mirror.read_topic(renumbered(published[:1] + published[2:])).problems
    assert problems[0] == "offset 1: entry 2 where entry 1 was due (missing or reordered)"


def test_two_swapped_entries_are_named(published):
    swapped = renumbered([published[0], published[2], published[1], *published[3:]])
    assert (
        mirror.read_topic(swapped).problems[0]
        == "offset 1: entry 2 where entry 1 was due (missing or reordered)"
    )


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (b"grant:1", b"\x00\x00\x00\x00\x07\x00", "neither entry:<seq> nor checkpoint:<size>"),
        (b"entry:0", b"{}", "not Confluent-framed Avro"),
        (b"entry:0", b"\x00\x00\x00\x00\x07\xff", "does not decode as pdo.audit.v1.AuditEntryLogged"),
        (None, None, "neither entry:<seq> nor checkpoint:<size>"),
    ],
)
def test_a_foreign_record_is_named_not_taken(key, value, problem):
    mirrored = mirror.read_topic([mirror.TopicRecord(0, key, value)])
    assert mirrored.entries == [] and len(mirrored.problems) == 1
    assert problem in mirrored.problems[0]


def test_a_key_that_disagrees_with_its_value_is_named(published):
    lying = dataclasses.replace(published[0], key=b"entry:5")
    assert mirror.read_topic([lying]).problems == ["offset 0: key says entry 5, the value is entry 0"]
