"""`pdo catalog worker|list|rebuild|listing`: the catalog's stream worker, the catalog as SQL holds it, and
listings of its datasets for data exchanges (JSON in the form pdo.listing.v1, and a CSV companion)."""

from __future__ import annotations

from pdo.cli.arguments import add_worker_options, serve_worker_metrics
from pdo.cli.billing import period_argument, write_companions
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
    exchange = actions.add_parser(
        "listing", help="a dataset's listing for data exchanges: JSON (pdo.listing.v1) and a CSV companion"
    )
    exchange.add_argument("--dataset", action="append", required=True, help="dataset id (repeat for several)")
    exchange.add_argument(
        "--period", type=period_argument, help="month of the usage statistics, YYYY-MM (default: last month)"
    )
    exchange.add_argument("--out", help="write PREFIX.json and PREFIX.csv instead of printing the JSON")
    exchange.set_defaults(func=print_listing)


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


def print_listing(args) -> int:
    """The listings of the datasets asked for; exit 2 (a pdo error) for one the catalog does not hold."""
    from datetime import UTC, datetime

    from pdo.billing.public import listings_csv, listings_for
    from pdo.catalog.public import get_dataset
    from pdo.core.kafka import consumer
    from pdo.core.months import previous_period
    from pdo.core.topics import feed_topic

    settings = Settings.from_env()
    now = datetime.now(UTC)
    period = args.period or previous_period(now)
    engine = db.make_engine(settings.database_url)
    offsets = consumer(settings)
    try:
        datasets = [get_dataset(engine, dataset_id) for dataset_id in args.dataset]
        listings = listings_for(engine, datasets, period, offsets, lambda d: feed_topic(d, settings), now)
    finally:
        offsets.close()
        engine.dispose()
    documents = [listing.as_json() for listing in listings]
    body = documents[0] if len(documents) == 1 else documents
    return write_companions(args.out, body, {".csv": listings_csv(listings)})
