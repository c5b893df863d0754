"""The declared topics and the services' ACLs (topics/) applied to the broker, with a line per finding.

`pdo topics apply`, `pdo acls apply`, `pdo up` and `pdo demo` all apply them through here, so they create the
same things and print the same report; the work itself is the core's (pdo.core.topics, pdo.core.access).

**Audited.** Given an `Audit` (the operator's commands), every change is recorded on pdo.access BEFORE the
broker makes it (pdo.core.access_log): topics to create (TopicsCreated), ACLs to add and remove and service
users to set (AclsApplied); when the event cannot be published nothing changes and the command fails with
the reason. The trade-off: an entry may name a change the broker then refused; it records the act as
ordered, and the failure is a second event. Two exceptions, both named here: pdo.access itself is created
before its own event (there is nowhere to record anything until it exists; the event then names it too),
and a new platform's bootstrap applies before the schema registry runs, when nothing can be recorded: the
local platform (`pdo up`, `pdo demo`) records what it applied once the registry is up (`record_bootstrap`);
`pdo topics|acls apply --bootstrap` (compose's kafka-init) applies unrecorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.admin import KafkaAdminClient

from pdo.core import access, topics
from pdo.core.access_log import AccessLog, Act
from pdo.core.apply_report import ApplyReport
from pdo.core.config import Settings
from pdo.core.events import event_head
from pdo.core.kafka import admin_client
from pdo.core.names import Event
from pdo.core.topics import TopicId, TopicSpec

Report = Callable[[str], None]


@dataclass(frozen=True)
class Audit:
    """Who applies (kind:name), with which command and why, and where the acts are recorded."""

    log: AccessLog
    actor: str
    command: str
    reason: str | None = None

    def head(self) -> dict[str, Any]:
        return {**event_head(self.actor), "command": self.command, "reason": self.reason}


def topics_created_event(audit: Audit, names: list[str]) -> dict[str, Any]:
    return {**audit.head(), "topics": sorted(names)}


def acls_applied_event(
    audit: Audit, added: list[access.Grant], removed: list[access.Grant], users: list[str]
) -> dict[str, Any]:
    return {
        **audit.head(),
        "added": [grant.line() for grant in added],
        "removed": [grant.line() for grant in removed],
        "service_users": sorted(users),
    }


def apply_topics(settings: Settings, report: Report = print, audit: Audit | None = None) -> ApplyReport[str]:
    """Create the fixed declared topics the broker lacks (recorded first when audited) and report what was
    found."""
    declared = topics.declared(settings).values()
    fixed = [spec for spec in declared if not spec.templated]
    report(f"applying {len(fixed)} topic declarations to {settings.kafka_bootstrap} ...")
    with admin_client(settings) as admin:
        found = (
            topics.apply(admin, fixed) if audit is None else _audited_topics(admin, settings, fixed, audit)
        )
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


def _audited_topics(
    admin: KafkaAdminClient, settings: Settings, fixed: list[TopicSpec], audit: Audit
) -> ApplyReport[str]:
    existing = set(admin.list_topics())
    missing = [spec.name for spec in fixed if spec.name not in existing]
    if not missing:
        return topics.apply(admin, fixed)
    record = topics.spec(TopicId.ACCESS, settings)
    first = topics.apply(admin, [record]) if record.name in missing else ApplyReport[str]()
    act = Act("topics.created", "topics:declared")
    with audit.log.ordered(Event.TOPICS_CREATED, topics_created_event(audit, missing), act):
        found = topics.apply(admin, fixed)
    found.created = first.created + found.created
    found.unchanged = [name for name in found.unchanged if name not in first.created]
    return found


def apply_acls(
    settings: Settings,
    check: bool = False,
    prune: bool = False,
    users: bool = False,
    report: Report = print,
    audit: Audit | None = None,
) -> ApplyReport[access.Grant]:
    """Apply (or only check) the services' ACLs, and with `users` their SCRAM users (recorded first when
    audited); report what was found."""
    verb = "checking" if check else "applying"
    report(
        f"{verb} the services' ACLs declared in {settings.home / 'topics'} on {settings.kafka_bootstrap} ..."
    )
    with admin_client(settings) as admin:
        users = users and not check
        event = None if audit is None or check else _planned_acls_event(admin, settings, prune, users, audit)
        if audit is None or event is None:
            found = _apply_acls(admin, settings, check, prune, users, report)
        else:
            with audit.log.ordered(Event.ACLS_APPLIED, event, Act("acls.applied", "acls:services")):
                found = _apply_acls(admin, settings, check, prune, users, report)
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


def _planned_acls_event(
    admin: KafkaAdminClient, settings: Settings, prune: bool, users: bool, audit: Audit
) -> dict[str, Any] | None:
    """The AclsApplied event of what applying would change; None when it would change nothing."""
    plan = access.apply(admin, settings, check=True)
    removed = plan.drift if prune else []
    service_users = [access.service_user(name) for name in access.services(settings)] if users else []
    if not (plan.missing or removed or service_users):
        return None
    return acls_applied_event(audit, plan.missing, removed, service_users)


def _apply_acls(
    admin: KafkaAdminClient, settings: Settings, check: bool, prune: bool, users: bool, report: Report
) -> ApplyReport[access.Grant]:
    if users:
        for user in access.ensure_service_users(admin, settings):
            report(f"  user      {user}")
    return access.apply(admin, settings, check=check, prune=prune)


def record_bootstrap(
    audit: Audit, created_topics: ApplyReport[str], applied: ApplyReport[access.Grant], users: list[str]
) -> None:
    """Record what the local platform's bootstrap applied before the schema registry ran (see the module
    doc), now that it runs; Unavailable when it cannot be recorded."""
    if created_topics.created:
        audit.log.record(Event.TOPICS_CREATED, topics_created_event(audit, created_topics.created))
    if applied.created or applied.removed or users:
        event = acls_applied_event(audit, applied.created, applied.removed, users)
        audit.log.record(Event.ACLS_APPLIED, event)
