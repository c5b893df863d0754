"""`pdo sharing worker`: the sharing stream worker (feeds → tenant streams, usage facts, dead letters)."""

from __future__ import annotations

from pdo.cli.arguments import add_worker_options, serve_worker_metrics
from pdo.core.config import Settings

LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "error": "ERROR"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sharing", help="deliver published records to each entitled tenant's stream: the worker"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    worker = actions.add_parser(
        "worker",
        help="follow the grants, then deliver every feed record to each active grant's tenant stream "
        "until interrupted",
    )
    add_worker_options(worker, group="sharing")
    worker.add_argument(
        "--loglevel", default="warn", choices=tuple(LOG_LEVELS), help="the worker's log level"
    )
    worker.set_defaults(func=run_worker)


def run_worker(args) -> int:
    import asyncio
    import logging

    from pdo.sharing.app import build_runtime, masking_key
    from pdo.sharing.worker import serve

    settings = Settings.from_env()
    masking_key(settings)  # a published or short key stops the worker before it serves anything
    serve_worker_metrics(args, settings)  # first: `pdo up` waits for it to answer
    # No database: the worker learns grants and datasets from their topics (pdo.sharing.app).
    runtime = build_runtime(settings)
    try:
        logging.getLogger().setLevel(LOG_LEVELS[args.loglevel])
        asyncio.run(serve(settings, runtime, args.group))
    finally:
        runtime.close()
    return 0
