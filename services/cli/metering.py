"""`pdo metering worker|usage`: the metering stream worker, and usage windows as a table."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from pdo.cli.arguments import add_worker_options, positive_int, serve_worker_metrics
from pdo.core import db
from pdo.core.config import Settings

DEFAULT_SPANS = {"MINUTE": timedelta(hours=1), "DAY": timedelta(days=31)}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "metering", help="usage metering exactly once, windows and quotas: the worker, usage"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    worker = actions.add_parser(
        "worker",
        help="migrate; then count every usage fact once into the ledger and its windows, publish closed "
        "windows and quota-exceeded until interrupted",
    )
    add_worker_options(worker, group="metering")
    worker.add_argument(
        "--loglevel", default="warn", choices=("debug", "info", "warn", "error"), help="faust's log level"
    )
    worker.add_argument(
        "--batch-size", type=positive_int, default=None, help="most usage facts per ledger transaction (1000)"
    )
    worker.add_argument(
        "--batch-within",
        type=positive_seconds,
        default=None,
        help="seconds a batch waits to fill before it is written anyway (0.5)",
    )
    worker.set_defaults(func=run_worker)
    listing = actions.add_parser(
        "usage", help="print usage windows (newest first) from the ledger's database"
    )
    listing.add_argument("--window", choices=("MINUTE", "DAY"), default="DAY", help="window length")
    listing.add_argument(
        "--since", type=iso_moment, help="first window start (ISO 8601; default now-1h MINUTE, now-31d DAY)"
    )
    listing.add_argument("--until", type=iso_moment, help="windows starting before this (default now)")
    listing.add_argument("--tenant", help="only this tenant's usage, e.g. tenant:acme")
    listing.add_argument("--dataset", help="only this dataset's usage")
    listing.add_argument("--limit", type=positive_int, default=200, help="at most this many windows")
    listing.set_defaults(func=print_usage)


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0 (faust reads 0 as "wait for a full batch forever")."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number of seconds above 0")
    return seconds


def iso_moment(text: str) -> datetime:
    """An argparse type: an ISO 8601 moment; one without an offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def run_worker(args) -> int:
    from pdo.core import streams
    from pdo.metering import app

    settings = Settings.from_env()
    serve_worker_metrics(args, settings)  # first: `pdo up` waits for it to answer
    db.upgrade(settings.database_url)
    runtime = app.build_runtime(settings)
    try:
        faust_app = app.create_app(
            settings,
            runtime,
            app_id=args.group,
            batch_size=args.batch_size or app.BATCH_SIZE,
            within_s=args.batch_within or app.BATCH_WITHIN_S,
            timers=[billing_gauges_timer(settings, runtime)],
        )
        streams.run_worker(faust_app, loglevel=args.loglevel)
    finally:
        runtime.close()
    return 0


def billing_gauges_timer(settings: Settings, runtime):
    """Billing's gauges, exported by the metering worker's leader: wired here, so metering never imports billing."""
    from pdo.billing.gauges import export_billing_metrics
    from pdo.core.events import utc_now
    from pdo.metering.app import LeaderTimer

    def export() -> None:
        export_billing_metrics(settings, runtime.engine, utc_now(), codec=runtime.handler.codec)

    return LeaderTimer("export_billing_metrics", settings.billing_gauges_interval_s, export)


def print_usage(args) -> int:
    from pdo.metering.public import list_windows

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    engine = db.make_engine(settings.database_url)
    until = args.until or datetime.now(UTC)
    since = args.since or until - DEFAULT_SPANS[args.window]
    try:
        windows = list_windows(
            engine,
            args.window,
            since,
            until,
            tenant_id=args.tenant,
            dataset_ids=[args.dataset] if args.dataset else None,
            limit=args.limit,
        )
    finally:
        engine.dispose()
    rows: list[tuple[str, ...]] = [
        (
            w.window_start.strftime("%Y-%m-%d %H:%M"),
            w.tenant_id,
            w.dataset_id,
            w.grant_id,
            f"{w.records:,}",
            f"{w.bytes:,}",
        )
        for w in windows
    ]
    print_table(("window start (UTC)", "tenant", "dataset", "grant", "records", "bytes"), rows)
    if not rows:
        print(f"no {args.window} usage between {since.isoformat()} and {until.isoformat()}")
    return 0


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    numeric = {len(header) - 2, len(header) - 1}  # records and bytes align right
    for line in (header, *rows):
        cells = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
