"""`pdo up`: the local platform in one command — broker, topics, database, schema registry."""

from pdo.cli.registry import serve_registry
from pdo.cli.topics import apply_and_report
from pdo.core.config import Settings
from pdo.stack import broker


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "up", help="start the local broker, create the topics, migrate the database, serve the registry"
    )
    parser.set_defaults(func=up)


def up(_args) -> int:
    settings = Settings.from_env()
    already_running = broker.status(settings).running
    broker.start(settings)
    try:
        apply_and_report(settings)
        print("Ctrl-C stops the platform" + ("" if already_running else " and the broker it started"))
        serve_registry(settings)
    finally:
        # Leave a broker someone else started alone; stop the one we started.
        if not already_running:
            broker.stop(settings)
    return 0
