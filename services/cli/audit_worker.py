"""`pdo audit-worker`: the audit worker, recording every platform event once in the audit log."""

from __future__ import annotations

from pdo.cli.arguments import add_worker_options, serve_worker_metrics
from pdo.core import db
from pdo.core.config import Settings


def register(subparsers) -> None:
    worker = subparsers.add_parser(
        "audit-worker",
        help="migrate; then record every event of the platform's topics in the audit log and sign "
        "checkpoints, until interrupted",
    )
    add_worker_options(worker, group="audit")
    worker.add_argument(
        "--loglevel", default="warn", choices=("debug", "info", "warn", "error"), help="faust's log level"
    )
    worker.set_defaults(func=run_worker)


def run_worker(args) -> int:
    from pdo.audit.app import build_runtime, create_app
    from pdo.core import streams

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    runtime = build_runtime(settings)
    try:
        app = create_app(settings, runtime, app_id=args.group)
        serve_worker_metrics(args, settings)
        streams.run_worker(app, loglevel=args.loglevel)
    finally:
        runtime.close()
    return 0
