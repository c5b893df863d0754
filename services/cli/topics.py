"""`pdo topics list|apply`: the declared topics, and creating them on the broker.

`apply` records the topics it will create on pdo.access before creating them (pdo.stack.declarations): when
that cannot be recorded it creates nothing (but pdo.access itself) and exits 2 with the reason.
"""

from pdo.cli.arguments import add_actor_options
from pdo.core import topics
from pdo.core.access_log import AccessLog, operator_actor
from pdo.core.config import Settings
from pdo.core.events import OnDemandPublisher
from pdo.stack.declarations import Audit, apply_topics


def register(subparsers) -> None:
    parser = subparsers.add_parser("topics", help="declared topics: list them, create them on the broker")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="print every declaration in topics/").set_defaults(func=list_declared)
    apply_parser = actions.add_parser(
        "apply", help="create the declared topics the broker lacks and report drift (idempotent)"
    )
    apply_parser.add_argument(
        "--check", action="store_true", help="exit 1 when an existing topic differs from its declaration"
    )
    add_actor_options(apply_parser)
    apply_parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="a new platform's first setup, before the schema registry runs: apply without recording on "
        "pdo.access (nothing can be recorded yet); `pdo up` records its bootstrap once the registry runs",
    )
    apply_parser.set_defaults(func=apply)


def list_declared(_args) -> int:
    for spec in topics.declared(Settings.from_env()).values():
        kind = "template" if spec.templated else f"{spec.partitions} partitions"
        print(f"{spec.name:<40} {kind:<14} {spec.cleanup_policy:<8} {spec.description}")
    return 0


def apply(args) -> int:
    settings = Settings.from_env()
    events = OnDemandPublisher(settings)
    audit = (
        None
        if args.bootstrap
        else Audit(AccessLog(events), operator_actor(args.by), "pdo topics apply", args.act_reason)
    )
    try:
        report = apply_topics(settings, audit=audit)
    finally:
        events.close()
    return 1 if (args.check and not report.clean) else 0
