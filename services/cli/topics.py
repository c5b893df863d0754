"""`pdo topics list|apply`: the declared topics, and creating them on the broker."""

from pdo.core import topics
from pdo.core.config import Settings
from pdo.core.kafka import admin_client


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
    apply_parser.set_defaults(func=apply)


def list_declared(_args) -> int:
    for spec in topics.declared(Settings.from_env()).values():
        kind = "template" if spec.templated else f"{spec.partitions} partitions"
        print(f"{spec.name:<40} {kind:<14} {spec.cleanup_policy:<8} {spec.description}")
    return 0


def apply(args) -> int:
    report = apply_and_report(Settings.from_env())
    return 1 if (args.check and report.drift) else 0


def apply_and_report(settings: Settings) -> topics.ApplyReport:
    """Create the fixed declared topics the broker lacks and print what was found."""
    declared = topics.declared(settings).values()
    fixed = [spec for spec in declared if not spec.templated]
    print(f"applying {len(fixed)} topic declarations to {settings.kafka_bootstrap} ...")
    with admin_client(settings) as admin:
        report = topics.apply(admin, fixed)
    for name in report.created:
        print(f"  created   {name}")
    for name in report.unchanged:
        print(f"  ok        {name}")
    for line in report.drift:
        print(f"  DRIFT     {line}")
    for line in report.notes:
        print(f"  note      {line}")
    templated = [spec.name for spec in declared if spec.templated]
    print(f"templates created per dataset/tenant by the services: {', '.join(templated)}")
    if report.drift:
        print("drift is reported, not changed: alter the topic or its declaration deliberately")
    return report
