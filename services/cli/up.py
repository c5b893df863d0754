"""`pdo up`: the local platform in one command — broker, topics, database, and every pdo service."""

import signal

from pdo.cli.topics import apply_and_report
from pdo.core import db
from pdo.core.config import Settings
from pdo.stack import broker
from pdo.stack.platform import Platform, write_prometheus_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start the local broker, create the topics, migrate the database, run every service (Ctrl-C stops)",
    )
    parser.set_defaults(func=up)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def up(_args) -> int:
    # `kill`, a service manager or a container stop must tear down as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    settings = Settings.from_env()
    already_running = broker.status(settings).running
    broker.start(settings)
    platform = Platform(settings)
    try:
        apply_and_report(settings)
        db.upgrade(settings.database_url)
        print(f"database at revision {db.current_revision(settings.database_url)}")
        platform.start()
        prometheus = write_prometheus_config(settings)
        print(
            f"pdo is up: HTTP API http://{settings.gateway_host}:{settings.gateway_port}/docs, "
            f"schema registry {settings.registry_url}; Ctrl-C stops it\n"
            f"  Prometheus for it: prometheus --config.file={prometheus} "
            f"--storage.tsdb.path={settings.run_dir / 'prometheus'}"
        )
        platform.watch()
    finally:
        platform.stop()
        # Leave a broker someone else started alone; stop the one we started.
        if not already_running:
            broker.stop(settings)
    return 0
