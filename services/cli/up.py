"""`pdo up`: the local platform in one command — broker, topics, database, and every pdo service."""

import signal

from pdo.core.config import Settings
from pdo.stack.platform import local_platform


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start the local broker, create the topics, migrate the database, run every service (Ctrl-C stops)",
    )
    parser.set_defaults(func=up)


def interrupt_on_sigterm() -> None:
    """`kill`, a service manager or a container stop must tear down as cleanly as Ctrl-C does."""

    def interrupt(_signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def up(_args) -> int:
    interrupt_on_sigterm()
    settings = Settings.from_env()
    with local_platform(settings) as platform:
        print(
            f"pdo is up: HTTP API http://{settings.gateway_host}:{settings.gateway_port}/docs, "
            f"operator console http://{settings.gateway_host}:{settings.gateway_port}/console, "
            f"schema registry {settings.registry_url}; Ctrl-C stops it"
        )
        platform.watch()
    return 0
