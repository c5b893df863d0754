"""`pdo catalog worker|list|rebuild`: the catalog's stream worker, and the catalog as SQL holds it."""

from __future__ import annotations

from pdo.cli.arguments import add_worker_options, serve_worker_metrics
from pdo.core import db
from pdo.core.config import Settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("catalog", help="the dataset catalog: its worker, list, rebuild")
    actions = parser.add_subparsers(dest="action", required=True)
    worker = actions.add_parser(
        "worker", help="migrate, rebuild the catalog rows from pdo.catalog, then project new events"
    )
    worker.add_argument(
        "--no-rebuild", action="store_true", help="skip reading pdo.catalog from its beginning first"
    )
    add_worker_options(worker, group="catalog")
    worker.set_defaults(func=run_worker)
    listing = actions.add_parser("list", help="print the datasets in the catalog database")
    listing.add_argument("--provider", help="only this provider's datasets, e.g. provider:transport-bureau")
    listing.add_argument("--all", action="store_true", help="include retired datasets")
    listing.set_defaults(func=list_catalog)
    rebuild = actions.add_parser(
        "rebuild", help="apply every event on pdo.catalog to the database (idempotent), then exit"
    )
    rebuild.add_argument("--timeout", type=float, default=60.0, help="seconds to read the topic to its end")
    rebuild.set_defaults(func=rebuild_catalog)


def run_worker(args) -> int:
    from pdo.catalog.app import build_runtime, create_app
    from pdo.catalog.projection import rebuild_from_topic
    from pdo.core import streams

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    runtime = build_runtime(settings)
    try:
        app = create_app(settings, runtime, app_id=args.group)
        serve_worker_metrics(args, settings, runtime.projector.metrics.registry)
        if not args.no_rebuild:
            # The consumer group's offsets survive a wiped database; reading the compacted topic first
            # restores every row, and the agent then continues from the group's offsets (idempotently).
            report = rebuild_from_topic(
                settings,
                runtime.engine,
                timeout_s=settings.kafka_start_timeout_s,
                registry=runtime.codec.registry,
            )
            print(f"catalog rebuilt from the topic: {report.applied} applied, {report.unchanged} unchanged")
        streams.run_worker(app)
    finally:
        runtime.close()
    return 0


def list_catalog(args) -> int:
    from pdo.catalog.public import list_datasets

    settings = Settings.from_env()
    engine = db.make_engine(settings.database_url)
    try:
        found = list_datasets(engine, args.provider, include_retired=args.all)
    finally:
        engine.dispose()
    for dataset in found:
        state = "retired" if dataset.retired else f"v{dataset.version}"
        print(
            f"{dataset.dataset_id:<32} {state:<8} {dataset.classification.value:<10} "
            f"{dataset.openness.value:<12} {dataset.provider_id:<28} {dataset.title}"
        )
    if not found:
        print("no datasets" + (" (retired ones hidden; --all shows them)" if not args.all else ""))
    return 0


def rebuild_catalog(args) -> int:
    from pdo.catalog.projection import rebuild_from_topic

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    engine = db.make_engine(settings.database_url)
    try:
        report = rebuild_from_topic(settings, engine, timeout_s=args.timeout)
    finally:
        engine.dispose()
    print(
        f"{report.applied} events applied, {report.unchanged} already reflected, {len(report.skipped)} skipped"
    )
    for line in report.skipped:
        print(f"  skipped {line}")
    return 0
