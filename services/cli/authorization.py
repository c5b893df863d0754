"""`pdo authorization worker|rebuild`: the authorization stream worker, and rebuilding its tables from events."""

from __future__ import annotations

from pdo.cli.arguments import add_worker_options, serve_worker_metrics
from pdo.core import db
from pdo.core.config import Settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "authorization", help="data requests, policy decisions and grants: the worker, rebuild"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    worker = actions.add_parser(
        "worker",
        help="migrate; rebuild from the topics if the tables are empty; then decide requests, suspend on "
        "quota and expire grants until interrupted",
    )
    add_worker_options(worker, group="authorization")
    worker.set_defaults(func=run_worker)
    rebuild = actions.add_parser(
        "rebuild",
        help="replace the request and grant tables with what pdo.requests and pdo.authorizations say",
    )
    rebuild.add_argument("--timeout", type=float, default=60.0, help="seconds to read each topic to its end")
    rebuild.set_defaults(func=rebuild_tables)


def run_worker(args) -> int:
    from pdo.authorization.app import build_runtime, create_app
    from pdo.authorization.projection import is_empty, rebuild_from_topics
    from pdo.authorization.public import record_in_force
    from pdo.core import streams

    settings = Settings.from_env()
    serve_worker_metrics(args, settings)  # first: `pdo up` waits for it to answer
    db.upgrade(settings.database_url)
    runtime = build_runtime(settings)
    try:
        # Only an empty database is rebuilt: rows hold what events do not (a tenant's kind, review status).
        if is_empty(runtime.service.engine):
            report = rebuild_from_topics(
                settings, runtime.service.engine, timeout_s=settings.kafka_start_timeout_s
            )
            print(_summary(report))
        # Its view of the catalog starts complete: what pdo.catalog held before this worker (or before
        # the view existed) is read now, not at the first request that needs it.
        runtime.datasets.catch_up()
        if record_in_force(runtime.service.engine, settings.policy_file):
            print(f"authorization policy now in force: {settings.policy_file} (recorded for the audit log)")
        streams.run_worker(create_app(settings, runtime, app_id=args.group))
    finally:
        runtime.close()
    return 0


def rebuild_tables(args) -> int:
    from pdo.authorization.projection import rebuild_from_topics

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    engine = db.make_engine(settings.database_url)
    try:
        report = rebuild_from_topics(settings, engine, timeout_s=args.timeout)
    finally:
        engine.dispose()
    print(_summary(report))
    for problem in report.skipped:
        print(f"  skipped: {problem}")
    return 0


def _summary(report) -> str:
    return (
        f"authorization rebuilt from the topics: {report.requests} requests, {report.grants} grants, "
        f"{report.transitions} grant transitions ({len(report.skipped)} events skipped)"
    )
