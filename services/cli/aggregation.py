"""`pdo aggregation worker`: windowed aggregates of datasets for AGGREGATE grants."""

from __future__ import annotations

from pdo.cli.arguments import add_worker_options, serve_worker_metrics
from pdo.core import db
from pdo.core.config import Settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "aggregation", help="windowed aggregates for aggregate-only grants (no row leaves): the worker"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    worker = actions.add_parser(
        "worker",
        help="migrate; then, while holding the feeds lease, count the feeds of aggregate grants into tumbling "
        "windows and publish each closed window's groups of at least k records until interrupted",
    )
    add_worker_options(worker, group="aggregation")
    worker.add_argument(
        "--loglevel", default="warn", choices=("debug", "info", "warn", "error"), help="faust's log level"
    )
    worker.set_defaults(func=run_worker)


def run_worker(args) -> int:
    from pdo.aggregation.app import build_runtime, create_app
    from pdo.core import streams

    settings = Settings.from_env()
    serve_worker_metrics(args, settings)  # first: `pdo up` waits for it to answer
    db.upgrade(settings.database_url)
    runtime = build_runtime(settings)
    try:
        streams.run_worker(create_app(settings, runtime, app_id=args.group), loglevel=args.loglevel)
    finally:
        runtime.close()
    return 0
