"""The declared topics and the services' ACLs (topics/) applied to the broker, with a line per finding.

`pdo topics apply`, `pdo acls apply`, `pdo up` and `pdo demo` all apply them through here, so they create the
same things and print the same report; the work itself is the core's (pdo.core.topics, pdo.core.access).
"""

from __future__ import annotations

from collections.abc import Callable

from pdo.core import access, topics
from pdo.core.apply_report import ApplyReport
from pdo.core.config import Settings
from pdo.core.kafka import admin_client

Report = Callable[[str], None]


def apply_topics(settings: Settings, report: Report = print) -> ApplyReport[str]:
    """Create the fixed declared topics the broker lacks and report what was found."""
    declared = topics.declared(settings).values()
    fixed = [spec for spec in declared if not spec.templated]
    report(f"applying {len(fixed)} topic declarations to {settings.kafka_bootstrap} ...")
    with admin_client(settings) as admin:
        found = topics.apply(admin, fixed)
    for name in found.created:
        report(f"  created   {name}")
    for name in found.unchanged:
        report(f"  ok        {name}")
    for line in found.drift:
        report(f"  DRIFT     {line}")
    for line in found.notes:
        report(f"  note      {line}")
    templated = [spec.name for spec in declared if spec.templated]
    report(f"templates created per dataset/tenant by the services: {', '.join(templated)}")
    if found.drift:
        report("drift is reported, not changed: alter the topic or its declaration deliberately")
    return found


def apply_acls(
    settings: Settings, check: bool = False, prune: bool = False, users: bool = False, report: Report = print
) -> ApplyReport[access.Grant]:
    """Apply (or only check) the services' ACLs, and with `users` their SCRAM users; report what was found."""
    verb = "checking" if check else "applying"
    report(
        f"{verb} the services' ACLs declared in {settings.home / 'topics'} on {settings.kafka_bootstrap} ..."
    )
    with admin_client(settings) as admin:
        if users and not check:
            for user in access.ensure_service_users(admin, settings):
                report(f"  user      {user}")
        found = access.apply(admin, settings, check=check, prune=prune)
    for grant in found.missing:
        report(f"  missing   {grant.describe()}")
    for grant in found.created:
        report(f"  created   {grant.describe()}")
    report(f"  ok        {len(found.unchanged)} ACLs as declared")
    for grant in found.drift:
        report(f"  EXTRA     {grant.describe()}")
    for grant in found.removed:
        report(f"  removed   {grant.describe()}")
    if found.drift:
        report("extra ACLs are reported, not removed: `pdo acls apply --prune` removes them")
    return found
