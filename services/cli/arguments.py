"""Argument kinds and option sets that several `pdo` commands share."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, refused with the reason otherwise."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def add_worker_options(worker: argparse.ArgumentParser, group: str) -> None:
    """The options every stream worker takes: its metrics port and its consumer group."""
    worker.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    worker.add_argument(
        "--group",
        default=group,
        help="consumer group (faust app id); change it only to run beside another deployment on one broker",
    )
