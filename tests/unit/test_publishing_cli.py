"""`pdo publish` without a broker: line numbers in refusals, NaN and bad JSON per line, progress, the summary."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from pdo.cli import publish
from pdo.publishing.conversion import RecordError, from_json
from pdo.publishing.public import PublishReport
from pdo.publishing.publisher import Rejection

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "deploy/examples/air-quality.dataset.json").read_text())["record_schema"]
LINES = (ROOT / "deploy/examples/air-quality.records.jsonl").read_text().splitlines(keepends=True)


class CheckingPublisher:
    """Checks records as the real publisher does, sends nowhere; remembers batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def publish_json(self, records: list) -> PublishReport:
        self.batches.append(len(records))
        report = PublishReport("pdo.feed.air-quality")
        for index, record in enumerate(records):
            try:
                from_json(SCHEMA, record)
            except RecordError as error:
                report.rejected.append(Rejection(index, error.message))
            else:
                report.accepted += 1
        return report


def test_the_example_file_publishes_cleanly():
    tally = publish.publish_lines(CheckingPublisher(), LINES, progress_every=1000)

    assert (tally.accepted, tally.refused) == (20, 0)


def test_refusals_carry_line_numbers_counting_blank_lines():
    bad = json.loads(LINES[1])
    bad["pm25"] = "high"
    lines = [LINES[0], "\n", json.dumps(bad) + "\n", "{not json\n", LINES[2], '{"pm10": NaN}\n', "   \n"]

    tally = publish.publish_lines(CheckingPublisher(), lines, progress_every=1000)

    assert tally.accepted == 2
    assert tally.examples == [
        (3, "pm25: expected double, got 'high'"),
        (4, "not valid JSON: Expecting property name enclosed in double quotes at column 2"),
        (6, "not valid JSON: NaN is not a JSON number (publish null for a missing value)"),
    ]


def test_batches_follow_progress_and_progress_is_reported(capsys):
    publisher = CheckingPublisher()

    publish.publish_lines(publisher, LINES, progress_every=8)

    assert publisher.batches == [8, 8, 4]
    progress = capsys.readouterr().err.splitlines()
    assert progress == ["… 8 records: 8 published, 0 refused", "… 16 records: 16 published, 0 refused"]


def test_only_the_first_refusals_are_kept_but_all_are_counted():
    tally = publish.publish_lines(CheckingPublisher(), ["[]\n"] * 30, progress_every=1000, keep=3)

    assert tally.refused == 30
    assert [line for line, _ in tally.examples] == [1, 2, 3]
    out = io.StringIO()
    publish.print_summary(tally, "pdo.feed.air-quality", out)
    assert out.getvalue().splitlines() == [
        "published 0 record(s) to pdo.feed.air-quality; 30 refused",
        "  line 1: expected record AirQuality (a JSON object), got a list of 0",
        "  line 2: expected record AirQuality (a JSON object), got a list of 0",
        "  line 3: expected record AirQuality (a JSON object), got a list of 0",
        "  … and 27 more refused",
    ]


def test_an_overlong_line_is_refused_without_parsing():
    with pytest.raises(ValueError, match="at most about 1 MB"):
        publish.parse_line("x" * (publish.MAX_LINE_CHARS + 1))


def test_deeply_nested_json_is_a_refusal_not_a_crash():
    with pytest.raises(ValueError, match="not valid JSON"):
        publish.parse_line("[" * 100_000 + "]" * 100_000)


def test_the_command_line_is_parsed():
    parser = argparse.ArgumentParser()
    publish.register(parser.add_subparsers())

    args = parser.parse_args(["publish", "--dataset", "air-quality", "--file", "-", "--progress-every", "5"])

    assert (args.dataset, args.file, args.progress_every, args.show_refused) == ("air-quality", "-", 5, 10)
    with pytest.raises(SystemExit):
        parser.parse_args(["publish", "--dataset", "x", "--file", "-", "--progress-every", "0"])


def test_a_missing_file_is_a_clear_error(tmp_path):
    from pdo.core.errors import PdoError

    with pytest.raises(PdoError, match="cannot read"), publish._lines(str(tmp_path / "nope.jsonl")):
        pass


class RememberingPublisher(CheckingPublisher):
    """As the real publisher with its record-id window: a record_id published before comes back a duplicate."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def publish_json(self, records: list) -> PublishReport:
        report = PublishReport("pdo.feed.air-quality")
        for index, record in enumerate(records):
            if record["record_id"] in self.seen:
                report.duplicates.append(index)
            else:
                self.seen.add(record["record_id"])
                report.accepted += 1
        return report


def test_records_already_on_the_feed_are_counted_and_named_as_not_sent_again():
    publisher = RememberingPublisher()
    publish.publish_lines(publisher, LINES[:5], progress_every=1000)

    tally = publish.publish_lines(publisher, LINES[:8], progress_every=1000)

    out = io.StringIO()
    publish.print_summary(tally, "pdo.feed.air-quality", out)
    assert (tally.accepted, tally.duplicates, tally.refused) == (3, 5, 0)
    assert out.getvalue().splitlines() == [
        "published 3 record(s) to pdo.feed.air-quality; 0 refused",
        "  5 record(s) not sent again: their record_id is on the feed already (published within "
        "PDO_RECORD_ID_WINDOW_S)",
    ]
