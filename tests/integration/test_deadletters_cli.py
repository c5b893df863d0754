"""`pdo deadletters list|replay` on the real broker, in an isolated topic namespace.

Dead letters published directly (fast): listed with their reasons and filters; a dry run writes nothing;
a replay puts the original key, value and headers back on the source topic byte for byte, plus the replay
headers; a second replay replays nothing. And a real one: garbage on a feed read by a running sharing
worker is dead-lettered, listed, replayed, and dead-lettered again with its replay count.

The sharing worker fixtures (namespace, worker processes, catalog) are test_sharing_worker's.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_sharing_worker are parameters here)
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kafka.admin import NewTopic
from sharing_support import (  # noqa: F401  (fixtures)
    Feed,
    db_url,
    platform,
    register_dataset,
    settings,
    topic_messages,
    wait_for,
    workers,
)

from pdo.core import topics
from pdo.core.config import Settings
from pdo.core.deadletters import DEAD_LETTER, SourceMessage, dead_letter_event
from pdo.core.events import EventPublisher
from pdo.core.kafka import admin_client
from pdo.core.topics import TopicId, feed_topic

pytestmark = pytest.mark.integration


def pdo(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = settings.environment()
    return subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", "deadletters", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


SOURCES = [
    # (partition, offset, key, value, headers, service, reason code)
    (0, 11, b"k-1", b"\x07 not avro", (("trace", b"abc"), ("empty", None)), "sharing", "UNDECODABLE"),
    (1, 12, None, b"\x00\x00\x00\x00\x09\xff", (), "sharing", "UNKNOWN_SCHEMA"),
    (1, 13, b"k-3", b"", (("trace", b"x"), ("trace", b"y")), "metering", "UNDECODABLE"),
]


@pytest.fixture
def source_topic(settings) -> str:
    name = feed_topic("dl-source", settings)
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    return name


@pytest.fixture
def published(settings, source_topic) -> list[dict]:
    publisher = EventPublisher(settings)
    events = []
    try:
        for partition, offset, key, value, headers, service, reason in SOURCES:
            message = SourceMessage(source_topic, partition, offset, key, value, headers)
            event = dead_letter_event(message, service, reason, f"{reason.lower()} at {message.position}")
            publisher.publish(TopicId.DEAD_LETTERS, DEAD_LETTER, event)
            events.append(event)
    finally:
        publisher.close()
    return events


def test_list_shows_reasons_and_filters(settings, source_topic, published):
    listed = pdo(settings, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 4
    assert f"{source_topic}[0]@11" in lines[0] and "UNDECODABLE" in lines[0] and "sharing" in lines[0]
    assert "10 B" in lines[0] and "replays=0" in lines[0]
    assert "UNKNOWN_SCHEMA" in lines[1] and f"{source_topic}[1]@12" in lines[1]
    assert lines[3] == "3 dead letter(s): UNDECODABLE 2, UNKNOWN_SCHEMA 1"

    by_reason = pdo(settings, "list", "--reason", "UNKNOWN_SCHEMA", "--json").stdout.splitlines()
    assert [json.loads(line)["source_offset"] for line in by_reason] == [12]
    by_service = pdo(settings, "list", "--service", "metering", "--json").stdout.splitlines()
    assert [json.loads(line)["headers"] for line in by_service] == [
        [{"key": "trace", "value": "eA=="}, {"key": "trace", "value": "eQ=="}]
    ]
    assert pdo(settings, "list", "--source-topic", "elsewhere").stdout.strip() == "0 dead letter(s)"
    limited = pdo(settings, "list", "--limit", "1").stdout.splitlines()
    assert limited[-1] == "3 dead letter(s) (showing 1): UNDECODABLE 2, UNKNOWN_SCHEMA 1"


def test_replay_puts_original_bytes_back_once(settings, source_topic, published):
    dry = pdo(settings, "replay", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("would replay") == 3, dry.stdout
    refused = pdo(settings, "replay", "--reason", "UNDECODABLE")  # stdin is not a terminal
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert topic_messages(settings, source_topic) == []
    assert not (settings.run_dir / "deadletters" / "replayed.json").exists()

    first = pdo(settings, "replay", "--reason", "UNDECODABLE", "--yes")
    assert first.returncode == 0, first.stderr
    assert "replayed 2 dead letter(s)" in first.stdout
    dead_letters = topics.name(TopicId.DEAD_LETTERS, settings)
    back = topic_messages(settings, source_topic)
    assert [(m.partition, m.key, m.value, m.headers) for m in back] == [
        (
            0,
            b"k-1",
            b"\x07 not avro",
            [("trace", b"abc"), ("empty", b""), ("pdo-replayed-from", f"{dead_letters}[0]@0".encode())]
            + [("pdo-replay-count", b"1")],
        ),
        (
            1,
            b"k-3",
            b"",
            [("trace", b"x"), ("trace", b"y"), ("pdo-replayed-from", f"{dead_letters}[0]@2".encode())]
            + [("pdo-replay-count", b"1")],
        ),
    ]

    again = pdo(settings, "replay", "--reason", "UNDECODABLE", "--yes")
    assert again.stdout.startswith("0 dead letter(s) to replay; 2 already replayed"), again.stdout
    rest = pdo(settings, "replay", "--yes")
    assert "1 dead letter(s) to replay; 2 already replayed" in rest.stdout
    back = topic_messages(settings, source_topic)
    assert len(back) == 3
    assert (back[2].key, back[2].value) == (None, b"\x00\x00\x00\x00\x09\xff")
    assert pdo(settings, "replay", "--yes").stdout.startswith("0 dead letter(s) to replay; 3 already")


def test_a_real_dead_letter_is_listed_and_replayed_to_the_worker(settings, workers, platform):
    dataset_id = register_dataset(platform["catalog"])
    feed = Feed(settings, platform["codec"], dataset_id)
    worker = workers("sharing-dl")
    try:
        feed.raw(b"\x07 garbage", 0, b"garbage")

        def listed(count: int):
            result = pdo(settings, "list", "--json")
            rows = [json.loads(line) for line in result.stdout.splitlines()]
            return rows if len(rows) >= count else None

        first = wait_for("the dead letter", lambda: listed(1), [worker])
        assert [(r["reason_code"], r["service"], r["source_topic"]) for r in first] == [
            ("UNDECODABLE", "sharing", feed.topic)
        ]
        assert first[0]["replay_count"] == 0
        replayed = pdo(settings, "replay", "--yes", "--source-topic", feed.topic)
        assert replayed.returncode == 0 and "replayed 1 dead letter(s)" in replayed.stdout, replayed.stderr
        # Not fixed: the worker dead-letters the replayed record again, which now says it was replayed once.
        second = wait_for("the replayed record's dead letter", lambda: listed(2), [worker])
        assert second[1]["replay_count"] == 1
        assert second[1]["original_value"] == first[0]["original_value"]
        assert {"key": "pdo-replay-count", "value": "MQ=="} in second[1]["headers"]
    finally:
        feed.close()
