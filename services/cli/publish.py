"""`pdo publish --dataset ID --file records.jsonl|-`: put a provider's JSON Lines records on a dataset's feed.

One JSON object per line, typed as pdo.publishing.conversion describes (timestamps as ISO 8601 text with an
offset, decimals as text, bytes as base64); blank lines are skipped. Records go out in batches through
FeedPublisher, which checks each against the dataset's registered schema and waits for the broker's acks.
Progress goes to stderr every N records, the summary to stdout. A line that is not JSON or does not fit
the schema is not sent: the summary lists the first few by line number, and the command exits 1.
Exit 0: every record was published; 1: some were refused (the others were published); 2: pdo error.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from pdo.cli.arguments import positive_int
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import PdoError

# Records per publish call: the publisher waits for acks once per batch.
BATCH = 500
# A line this long cannot become a record under the feed's 1 MB limit; refused without parsing it.
MAX_LINE_CHARS = 8 * 1024 * 1024


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish", help="publish JSON Lines records to a dataset's feed (for its provider's systems)"
    )
    parser.add_argument("--dataset", required=True, help="catalog id of the dataset, e.g. air-quality")
    parser.add_argument(
        "--file", required=True, help="JSON Lines file, one record per line; '-' reads standard input"
    )
    parser.add_argument(
        "--progress-every",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="report progress every N records",
    )
    parser.add_argument(
        "--show-refused", type=positive_int, default=10, metavar="N", help="list at most N refused records"
    )
    parser.set_defaults(func=run)


@dataclass
class Tally:
    """What a run did: records acknowledged, records refused (the first few kept with their reasons)."""

    keep: int = 10
    accepted: int = 0
    refused: int = 0
    # Records whose record_id reached the feed within PDO_RECORD_ID_WINDOW_S: not sent again.
    duplicates: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return self.accepted + self.refused + self.duplicates

    def refuse(self, line: int, reason: str) -> None:
        self.refused += 1
        if len(self.examples) < self.keep:
            self.examples.append((line, reason))


def run(args: argparse.Namespace) -> int:
    from pdo.publishing.public import FeedPublisher

    settings = Settings.from_env()
    engine = db.make_engine(settings.database_url)
    try:
        with (
            _lines(args.file) as lines,
            FeedPublisher.from_catalog(settings, engine, args.dataset) as publisher,
        ):
            tally = publish_lines(publisher, lines, args.progress_every, keep=args.show_refused)
            topic = publisher.topic
    finally:
        engine.dispose()
    print_summary(tally, topic, sys.stdout)
    return 1 if tally.refused else 0


def publish_lines(publisher: Any, lines: Iterable[str], progress_every: int, keep: int = 10) -> Tally:
    """Parse and publish `lines` in batches; returns the tally. `publisher` needs only `publish_json`."""
    tally = Tally(keep=keep)
    batch: list[tuple[int, Any]] = []  # (line number, record, or the Unparsed reason it is not one)
    size = min(BATCH, progress_every)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            batch.append((number, parse_line(line)))
        except ValueError as error:
            batch.append((number, Unparsed(str(error))))
        if len(batch) >= size:
            _publish_batch(publisher, batch, tally, progress_every)
            batch = []
    _publish_batch(publisher, batch, tally, progress_every)
    return tally


@dataclass(frozen=True)
class Unparsed:
    """A line that is not JSON, kept in its batch so refusals are tallied in line order."""

    reason: str


def parse_line(line: str) -> Any:
    """One JSON value, or ValueError saying why the line is not one (NaN and Infinity are not JSON)."""
    if len(line) > MAX_LINE_CHARS:
        raise ValueError(f"the line has {len(line)} characters; a record may have at most about 1 MB")
    try:
        return json.loads(line, parse_constant=_not_json)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None


def print_summary(tally: Tally, topic: str, out: TextIO) -> None:
    print(f"published {tally.accepted} record(s) to {topic}; {tally.refused} refused", file=out)
    if tally.duplicates:
        print(
            f"  {tally.duplicates} record(s) not sent again: their record_id is on the feed already "
            "(published within PDO_RECORD_ID_WINDOW_S)",
            file=out,
        )
    for line, reason in tally.examples:
        print(f"  line {line}: {reason}", file=out)
    if tally.refused > len(tally.examples):
        print(f"  … and {tally.refused - len(tally.examples)} more refused", file=out)


def _publish_batch(publisher: Any, batch: list[tuple[int, Any]], tally: Tally, progress_every: int) -> None:
    if not batch:
        return
    before = tally.seen
    records = [(number, item) for number, item in batch if not isinstance(item, Unparsed)]
    report = publisher.publish_json([record for _, record in records])
    tally.accepted += report.accepted
    tally.duplicates += len(report.duplicates)
    refusals = [(number, item.reason) for number, item in batch if isinstance(item, Unparsed)]
    refusals += [(records[rejection.index][0], rejection.reason) for rejection in report.rejected]
    for number, reason in sorted(refusals):
        tally.refuse(number, reason)
    if tally.seen // progress_every > before // progress_every:
        print(f"… {tally.seen} records: {tally.accepted} published, {tally.refused} refused", file=sys.stderr)


@contextmanager
def _lines(path: str) -> Iterator[Iterable[str]]:
    """The file's lines (or stdin's); undecodable bytes reach the checks as such rather than end the run."""
    if path == "-":
        # utf-8-sig drops a byte-order mark some Windows tools write; surrogateescape keeps bad bytes per line.
        yield io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape")
        return
    with _open(path) as handle:
        yield handle


def _open(path: str) -> TextIO:
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape")
    except OSError as error:
        raise PdoError(
            f"cannot read {path}: {error.strerror}", hint="give a JSON Lines file, or - for stdin"
        ) from None


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity by default; JSON has neither, and the schema checks refuse them.
    raise ValueError(f"not valid JSON: {constant} is not a JSON number (publish null for a missing value)")
