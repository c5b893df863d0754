"""`pdo acls apply|list`: the services' Kafka ACLs and users, as declared in topics/, on the broker.

`apply` records what it will change on pdo.access before changing it (pdo.stack.declarations): when that
cannot be recorded it changes nothing and exits 2 with the reason.
"""

from pdo.cli.arguments import add_actor_options
from pdo.core import access
from pdo.core.access_log import AccessLog, operator_actor
from pdo.core.config import Settings
from pdo.core.events import OnDemandPublisher
from pdo.core.kafka import admin_client
from pdo.stack.declarations import Audit, apply_acls


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "acls", help="Kafka ACLs and service users: apply topics/ access, list them"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    apply_parser = actions.add_parser(
        "apply", help="create the services' declared ACLs the broker lacks; report extra ones (idempotent)"
    )
    apply_parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on any difference")
    apply_parser.add_argument("--prune", action="store_true", help="also remove services' undeclared ACLs")
    apply_parser.add_argument(
        "--service-users",
        action="store_true",
        help="also create each service's SCRAM user (password PDO_<SERVICE>_KAFKA_PASSWORD, or a local secret)",
    )
    add_actor_options(apply_parser)
    apply_parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="a new platform's first setup, before the schema registry runs: apply without recording on "
        "pdo.access (nothing can be recorded yet); `pdo up` records its bootstrap once the registry runs",
    )
    apply_parser.set_defaults(func=apply)
    list_parser = actions.add_parser("list", help="every ACL on the broker, by principal")
    list_parser.add_argument("--principal", help="only this Kafka user, e.g. tenant.acme")
    list_parser.set_defaults(func=list_acls)


def apply(args) -> int:
    settings = Settings.from_env()
    events = OnDemandPublisher(settings)
    audit = (
        None
        if args.bootstrap
        else Audit(AccessLog(events), operator_actor(args.by), "pdo acls apply", args.act_reason)
    )
    try:
        report = apply_acls(
            settings, check=args.check, prune=args.prune, users=args.service_users, audit=audit
        )
    finally:
        events.close()
    return 1 if (args.check and not report.clean) else 0


def list_acls(args) -> int:
    settings = Settings.from_env()
    principal = access.kafka_principal(args.principal) if args.principal else None
    with admin_client(settings) as admin:
        grants = sorted(access.current_acls(admin, principal))
    for grant in grants:
        print(grant.describe())
    print(f"{len(grants)} ACLs")
    return 0
