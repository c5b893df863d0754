"""Argument kinds and option sets that several `pdo` commands share."""

from __future__ import annotations

import argparse

from pdo.core.config import Settings


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
    """The options every stream worker takes: its metrics port and its consumer group (the service name)."""
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"serve Prometheus metrics on this port (default: PDO_{group.upper()}_METRICS_PORT; 0: none)",
    )
    worker.add_argument(
        "--group",
        default=group,
        help="consumer group (faust app id); change it only to run beside another deployment on one broker",
    )
    worker.set_defaults(service=group)


def serve_worker_metrics(args: argparse.Namespace, settings: Settings, *registries) -> None:
    """Start the worker's metrics endpoint on --metrics-port, else on its service's setting."""
    from pdo.core import worker_metrics  # faust and prometheus-client: only for commands that serve

    port = settings.metrics_port(args.service) if args.metrics_port is None else args.metrics_port
    worker_metrics.serve(port, settings.metrics_host, *registries)


def add_actor_options(parser: argparse.ArgumentParser, reason_flag: str = "--reason") -> None:
    """--by and --reason (or `reason_flag` where --reason means something else): who does an audited act,
    and why; both are recorded in the audit log (args.by, args.act_reason)."""
    parser.add_argument("--by", help="who does it, kind:name (default: operator:<your login>)")
    parser.add_argument(reason_flag, dest="act_reason", help="why (recorded in the audit log)")
