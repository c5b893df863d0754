"""Entry point of the `pdo` command: gathers each area's subcommands and turns PdoError into a clean exit."""

from __future__ import annotations

import argparse
import logging
import sys

from pdo.cli import (
    acls,
    aggregation,
    audit,
    audit_worker,
    authorization,
    billing,
    broker,
    catalog,
    config,
    db,
    deadletters,
    demo,
    gateway,
    metering,
    products,
    publish,
    registry,
    sharing,
    topics,
    up,
)
from pdo.core.errors import PdoError

# Each module adds its own subcommands through register(subparsers); order is the order in --help.
COMMAND_MODULES = (
    up,
    demo,
    broker,
    topics,
    acls,
    registry,
    catalog,
    authorization,
    sharing,
    billing,
    metering,
    aggregation,
    products,
    audit_worker,
    gateway,
    publish,
    deadletters,
    audit,
    db,
    config,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdo", description="pdo: the public-data operations platform")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Client libraries narrate every connection at INFO; our commands print what matters.
        for noisy in ("kafka", "aiokafka", "httpx", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # kafka-python 3 warns whenever its IO thread runs a task over 100 ms: routine on a busy 2-core
        # machine, and nothing a user can act on.
        logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    try:
        return args.func(args) or 0
    except PdoError as error:
        print(f"pdo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
