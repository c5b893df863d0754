"""`pdo broker start|stop|status|fetch`: run the local Kafka broker (KRaft), one node or a local cluster."""

from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.stack import broker

NODES_HELP = (
    "how many nodes (default 1, the single broker); 3 runs a local cluster, node n on every configured "
    f"port + {broker.PORT_STRIDE}·(n−1)"
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("broker", help="run the local Kafka broker (KRaft, one node or a cluster)")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, help_text, func in (
        (
            "start",
            "fetch jars and format storage if needed, start the broker (or each node not running), wait "
            "until it answers",
            start,
        ),
        ("stop", "stop the broker started from PDO_RUN_DIR (clean shutdown)", stop),
        ("status", "say whether the broker is running and answering", status),
        (
            "restart",
            "restart the broker; a cluster node by node, each once all replicas are in sync",
            restart,
        ),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--nodes", type=int, default=1, help=NODES_HELP)
        if name == "stop":
            action.add_argument(
                "--node", type=int, help="stop only this node of the cluster (`start` brings it back)"
            )
        action.set_defaults(func=func)
    fetch_parser = actions.add_parser("fetch", help="download the Kafka broker jars with Maven (once)")
    fetch_parser.add_argument("--force", action="store_true", help="run Maven even if the jars are present")
    fetch_parser.set_defaults(func=fetch)


def start(args) -> int:
    broker.start(Settings.from_env(), nodes=args.nodes)
    return 0


def stop(args) -> int:
    settings = Settings.from_env()
    if args.node is None:
        broker.stop(settings, nodes=args.nodes)
        return 0
    nodes = broker.cluster_nodes(args.nodes)
    if not 1 <= args.node <= len(nodes):
        raise PdoError(f"--node {args.node}: the cluster has nodes 1 to {len(nodes)}", "pass --nodes N too")
    broker.stop_node(settings, nodes[args.node - 1])
    return 0


def restart(args) -> int:
    broker.restart(Settings.from_env(), nodes=args.nodes)
    return 0


def status(args) -> int:
    settings = Settings.from_env()
    statuses = broker.node_statuses(settings, args.nodes)
    for node, state in zip(broker.cluster_nodes(args.nodes), statuses, strict=True):
        paths = broker.BrokerPaths.from_settings(settings, node)
        name = "" if args.nodes == 1 else f"node {node.id}: "
        if state.running:
            answering = "answering" if state.answering else "not answering yet"
            print(
                f"{name}running: pid {state.pid}, 127.0.0.1:{state.port}, {answering}; logs in {paths.logs}"
            )
        else:
            other = " (but another Kafka broker answers on that port)" if state.answering else ""
            print(f"{name}stopped: no broker started from {paths.root}; port {state.port}{other}")
    if args.nodes > 1:
        print(f"bootstrap: {broker.bootstrap(settings, args.nodes)}")
    # Non-zero like `systemctl status` unless every node runs, so scripts can test `pdo broker status`.
    return 0 if all(state.running for state in statuses) else 3


def fetch(args) -> int:
    broker.fetch_jars(Settings.from_env(), force=args.force)
    return 0
