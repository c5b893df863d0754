"""`pdo broker start|stop|status|fetch`: run the local single-node Kafka broker (KRaft) for development."""

from pdo.core.config import Settings
from pdo.stack import broker


def register(subparsers) -> None:
    parser = subparsers.add_parser("broker", help="run the local Kafka broker (KRaft, one node)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "start", help="fetch jars and format storage if needed, start the broker, wait until it answers"
    ).set_defaults(func=start)
    actions.add_parser("stop", help="stop the broker started from PDO_RUN_DIR (clean shutdown)").set_defaults(
        func=stop
    )
    actions.add_parser("status", help="say whether the broker is running and answering").set_defaults(
        func=status
    )
    fetch_parser = actions.add_parser("fetch", help="download the Kafka broker jars with Maven (once)")
    fetch_parser.add_argument("--force", action="store_true", help="run Maven even if the jars are present")
    fetch_parser.set_defaults(func=fetch)


def start(_args) -> int:
    broker.start(Settings.from_env())
    return 0


def stop(_args) -> int:
    broker.stop(Settings.from_env())
    return 0


def status(_args) -> int:
    settings = Settings.from_env()
    state = broker.status(settings)
    paths = broker.BrokerPaths.from_settings(settings)
    if state.running:
        answering = "answering" if state.answering else "not answering yet"
        print(f"running: pid {state.pid}, 127.0.0.1:{state.port}, {answering}; logs in {paths.logs}")
        return 0
    other = " (but another Kafka broker answers on that port)" if state.answering else ""
    print(f"stopped: no broker started from {paths.root}; port {state.port}{other}")
    # Non-zero like `systemctl status`, so scripts can test `pdo broker status`.
    return 3


def fetch(args) -> int:
    broker.fetch_jars(Settings.from_env(), force=args.force)
    return 0
