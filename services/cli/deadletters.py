"""`pdo deadletters list|replay`: inspect the dead-letter topic, and put dead letters back after a fix.

`list` reads the whole dead-letter topic (up to its end when the command starts), prints one line per
dead letter — when, service, reason code, source position, reason, size of the original value, replay
count — and a count by reason. `--json` prints one JSON object per line instead (bytes as base64).

`replay` re-publishes each selected dead letter's original key, value and headers, byte for byte, to its
source topic and partition, adding `pdo-replayed-from: <dead-letter topic>[p]@o` and `pdo-replay-count`,
so the service processes the record again (and dead-letters it again, with a higher count, if it still
fails). Replayed dead-letter positions are recorded in PDO_RUN_DIR/deadletters/replayed.json after each
acknowledged send, and skipped by later replays: a dead letter is replayed at most once. Without --yes
it asks on a terminal and refuses otherwise. `--dry-run` shows what would be replayed and writes nothing.
Each replay is recorded on pdo.access (who replayed which dead letter to where, and why: `--by`, `--reason`)
BEFORE it is sent (pdo.core.access_log); when that cannot be recorded the replay stops there, sending
nothing more, and the command fails with the reason (an entry may name a replay the broker then refused:
it records the act as ordered, and the failure is a second event).
Exit 0: done (or nothing to do); 1: declined or refused; 2: pdo error.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any, TextIO

from pdo.cli.arguments import add_actor_options, positive_int
from pdo.core.access_log import AccessLog, Act, operator_actor
from pdo.core.config import Settings
from pdo.core.deadletters import StoredDeadLetter, replay_count
from pdo.core.errors import PdoError

REASON_WIDTH = 60


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "deadletters", help="list the records services could not process, and replay them after a fix"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list dead letters, oldest first, with a count by reason")
    _add_filters(listing)
    listing.add_argument("--limit", type=positive_int, metavar="N", help="show at most the first N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line (bytes as base64)")
    listing.set_defaults(func=run_list)

    replaying = actions.add_parser(
        "replay", help="re-publish dead letters' original bytes to their source topics (each at most once)"
    )
    _add_filters(replaying)
    replaying.add_argument(
        "--dry-run", action="store_true", help="show what would be replayed; write nothing"
    )
    replaying.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_actor_options(replaying, reason_flag="--why")
    replaying.set_defaults(func=run_replay)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", metavar="CODE", help="only this reason code, e.g. UNDECODABLE")
    parser.add_argument("--source-topic", metavar="TOPIC", help="only dead letters read from this topic")
    parser.add_argument("--service", metavar="NAME", help="only those this service gave up on, e.g. sharing")


# ---------------------------------------------------------------------------------------------- list


def run_list(args: argparse.Namespace) -> int:
    letters = _selected(Settings.from_env(), args)
    shown = letters[: args.limit] if args.limit else letters
    for letter in shown:
        print(json.dumps(letter_json(letter)) if args.json else letter_line(letter))
    if not args.json:
        print_counts(letters, len(shown), sys.stdout)
    return 0


def letter_line(letter: StoredDeadLetter) -> str:
    v = letter.value
    reason = v["reason"] if len(v["reason"]) <= REASON_WIDTH else v["reason"][: REASON_WIDTH - 1] + "…"
    return (
        f"{v['failed_at'].isoformat(timespec='seconds')}  {v['service']}  {v['reason_code']}  "
        f"{letter.source_position}  {reason!r}  {len(v['original_value'])} B  "
        f"replays={replay_count(letter)}  ({letter.position})"
    )


def letter_json(letter: StoredDeadLetter) -> dict[str, Any]:
    v = letter.value
    return {
        "position": letter.position,
        "failed_at": v["failed_at"].isoformat(),
        "service": v["service"],
        "reason_code": v["reason_code"],
        "reason": v["reason"],
        "source_topic": v["source_topic"],
        "source_partition": v["source_partition"],
        "source_offset": v["source_offset"],
        "original_key": _b64(v["original_key"]),
        "original_value": _b64(v["original_value"]),
        "headers": [{"key": h["key"], "value": _b64(h["value"])} for h in v["headers"]],
        "replay_count": replay_count(letter),
    }


def print_counts(letters: list[StoredDeadLetter], shown: int, out: TextIO) -> None:
    by_reason = Counter(letter.value["reason_code"] for letter in letters)
    counts = ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items()))
    more = f" (showing {shown})" if shown < len(letters) else ""
    print(f"{len(letters)} dead letter(s){more}" + (f": {counts}" if counts else ""), file=out)


# ---------------------------------------------------------------------------------------------- replay


def run_replay(args: argparse.Namespace) -> int:
    from pdo.core.deadletters import ReplayLedger

    settings = Settings.from_env()
    ledger = ReplayLedger.for_settings(settings)
    letters = _selected(settings, args)
    pending = [letter for letter in letters if letter not in ledger]
    print(f"{len(pending)} dead letter(s) to replay; {len(letters) - len(pending)} already replayed")
    if not pending:
        return 0
    if args.dry_run:
        for letter in pending:
            print(f"would replay {letter.position} → {letter.source_position.split('@')[0]}")
        return 0
    if not args.yes and not _confirmed(len(pending)):
        return 1
    replayed = replay_all(settings, pending, ledger, ReplayAudit.for_args(settings, args))
    print(f"replayed {replayed} dead letter(s); recorded in {ledger.path}")
    return 0


class ReplayAudit:
    """Records each replay on pdo.access before it is sent: who, which dead letter, to where, why."""

    def __init__(self, log: AccessLog, actor: str, reason: str | None) -> None:
        self.log = log
        self.actor = actor
        self.reason = reason

    @classmethod
    def for_args(cls, settings: Settings, args: argparse.Namespace) -> ReplayAudit:
        from pdo.core.events import OnDemandPublisher

        return cls(AccessLog(OnDemandPublisher(settings)), operator_actor(args.by), args.act_reason)

    def event(self, letter: StoredDeadLetter) -> dict[str, Any]:
        from pdo.core.events import event_head

        v = letter.value
        return {
            **event_head(self.actor),
            "dead_letter": letter.position,
            "source_topic": v["source_topic"],
            "source_partition": v["source_partition"],
            "source_offset": v["source_offset"],
            "reason_code": v["reason_code"],
            "service": v["service"],
            "reason": self.reason,
        }

    def act(self, letter: StoredDeadLetter) -> Act:
        return Act("dead_letter.replayed", f"dead_letter:{letter.source_position}")


def replay_all(
    settings: Settings, letters: Iterable[StoredDeadLetter], ledger: Any, audit: ReplayAudit
) -> int:
    """Replay each letter, recorded on pdo.access first, and in the ledger once the broker acknowledged it;
    how many."""
    from kafka.errors import KafkaError

    from pdo.core.deadletters import replay
    from pdo.core.kafka import producer
    from pdo.core.names import Event

    kafka_producer = producer(settings)
    done = 0
    try:
        for letter in letters:
            try:
                with audit.log.ordered(Event.DEAD_LETTER_REPLAYED, audit.event(letter), audit.act(letter)):
                    target = replay(letter, kafka_producer, settings.kafka_timeout_s)
            except PdoError as error:
                raise PdoError(
                    f"did not replay {letter.position}: {error.message}",
                    hint=f"{done} replayed before it; {error.hint}",
                ) from None
            except KafkaError as error:
                raise PdoError(
                    f"could not replay {letter.position} to {letter.source_position}: {error}",
                    hint=f"{done} replayed before it; run the command again to go on",
                ) from None
            ledger.record(letter, target)
            done += 1
            print(f"replayed {letter.position} ({letter.value['reason_code']}) → {target}")
    finally:
        kafka_producer.close()
    return done


def _confirmed(count: int) -> bool:
    if not sys.stdin.isatty():
        print("pdo: refusing to replay without confirmation: pass --yes", file=sys.stderr)
        return False
    answer = input(f"replay {count} dead letter(s) to their source topics? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


# ---------------------------------------------------------------------------------------------- shared


def _selected(settings: Settings, args: argparse.Namespace) -> list[StoredDeadLetter]:
    from pdo.core.codec import AvroCodec
    from pdo.core.deadletters import read_dead_letters, select
    from pdo.core.registry_client import RegistryClient

    registry = RegistryClient.for_settings(settings)
    try:
        letters = read_dead_letters(settings, AvroCodec(registry))
    finally:
        registry.close()
    return select(letters, reason=args.reason, source_topic=args.source_topic, service=args.service)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()
