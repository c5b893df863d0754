"""Who may do what on Kafka, as declared data: the `access` of each topic in topics/*.yaml and the services'
own needs in topics/principals/services.yaml, turned into the broker's ACLs.

Guarantee: the broker runs Kafka's StandardAuthorizer with allow.everyone.if.no.acl.found=false, so a
principal can do exactly what these ACLs allow. `desired_service_acls` is the whole set for pdo's services;
`tenant_acls` / `provider_acls` are what a party's credentials may do (read its own topics; write the feeds
of its own datasets). `apply` creates what is missing and reports, never removes, what is extra (`prune`
removes it on purpose).

Principals are Kafka users (SASL/SCRAM): `admin` (the bootstrap super user), `service.<name>` for each
service, `tenant.<name>` and `provider.<name>` for the gateway's principals `tenant:<name>` and
`provider:<name>` (names are `[a-z0-9-]`, so each user and each topic prefix below is unambiguous).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka.errors import NoError

from pdo.core import topics
from pdo.core.apply_report import ApplyReport
from pdo.core.config import Settings, ensure_local_secret
from pdo.core.errors import PdoError
from pdo.core.topics import PLACEHOLDER, TopicId, TopicSpec

SERVICE_PREFIX = "service."
ROLES = ("produce", "consume", "create")
PARTY_KINDS = ("tenant", "provider")

# What each declared role means in Kafka operations on the topic resource.
ROLE_OPERATIONS = {
    "produce": ("WRITE", "DESCRIBE"),
    "consume": ("READ", "DESCRIBE"),
    "create": ("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"),
}


class AccessDeclarationError(PdoError):
    """topics/ declares access in a way pdo cannot apply."""


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: `principal` (e.g. "User:service.sharing") may `operation` on the resource."""

    principal: str
    resource_type: str  # TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID
    resource_name: str
    pattern: str  # LITERAL or PREFIXED
    operation: str

    def describe(self) -> str:
        star = "*" if self.pattern == "PREFIXED" else ""
        return f"{self.principal:<28} {self.operation:<16} {self.resource_type.lower()} {self.resource_name}{star}"

    def line(self) -> str:
        """describe() without the padding: how an access event names the ACL."""
        return " ".join(self.describe().split())

    def to_kafka(self) -> ACL:
        return ACL(
            principal=self.principal,
            host="*",
            operation=ACLOperation[self.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[self.resource_type], self.resource_name, ACLResourcePatternType[self.pattern]
            ),
        )

    @classmethod
    def from_kafka(cls, acl: ACL) -> Grant:
        pattern = acl.resource_pattern
        return cls(
            # The stubs type ACL.principal as its filter parent's `str | None`; an ACL's constructor needs a str.
            principal=acl.principal,  # type: ignore[arg-type]
            resource_type=ResourceType(pattern.resource_type).name,
            resource_name=pattern.resource_name,
            pattern=ACLResourcePatternType(pattern.pattern_type).name,
            operation=ACLOperation(acl.operation).name,
        )


@dataclass(frozen=True)
class TopicAccess:
    """A topic's `access` block: services per role, and what a party named in the topic may do."""

    produce: tuple[str, ...] = ()
    consume: tuple[str, ...] = ()
    create: tuple[str, ...] = ()
    parties: dict[str, str] = field(default_factory=dict)  # "tenant" / "provider" -> role

    def services_for(self, role: str) -> tuple[str, ...]:
        return {"produce": self.produce, "consume": self.consume, "create": self.create}[role]


@dataclass(frozen=True)
class ServiceNeeds:
    name: str
    consumer_group: str | None = None
    cluster: tuple[str, ...] = ()
    transactional_id_prefix: str | None = None
    faust_topics: bool = True  # a faust app creates topics `<consumer_group>-…`; a plain consumer none


# ---------------------------------------------------------------------------------------------- names


def service_user(service: str) -> str:
    return f"{SERVICE_PREFIX}{service}"


def party_user(principal_id: str) -> str:
    """The Kafka user of a gateway principal: "tenant:acme" -> "tenant.acme"."""
    kind, _, name = principal_id.partition(":")
    if kind not in PARTY_KINDS or not name:
        raise PdoError(
            f"{principal_id!r} is not a tenant or provider principal; only they get Kafka credentials"
        )
    return f"{kind}.{name}"


def kafka_principal(user: str) -> str:
    return f"User:{user}"


# ---------------------------------------------------------------------------------------------- declarations


@cache
def _services(path: Path) -> dict[str, ServiceNeeds]:
    try:
        raw = yaml.safe_load(path.read_text())["services"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise AccessDeclarationError(
            f"{path} must map `services:` to each service's needs ({error})"
        ) from None
    needs = {}
    for name, entry in raw.items():
        entry = entry or {}
        unknown = set(entry) - {"consumer_group", "cluster", "transactional_id_prefix", "faust_topics"}
        if unknown:
            raise AccessDeclarationError(f"{path.name}: service {name}: unknown keys {sorted(unknown)}")
        operations = tuple(entry.get("cluster", ()))
        for operation in operations:
            if operation not in ACLOperation.__members__:
                raise AccessDeclarationError(f"{path.name}: service {name}: no Kafka operation {operation!r}")
        faust_topics = entry.get("faust_topics", True)
        if not isinstance(faust_topics, bool):
            raise AccessDeclarationError(f"{path.name}: service {name}: faust_topics must be true or false")
        needs[name] = ServiceNeeds(
            name, entry.get("consumer_group"), operations, entry.get("transactional_id_prefix"), faust_topics
        )
    return needs


def services(settings: Settings) -> dict[str, ServiceNeeds]:
    """pdo's services as Kafka principals, from topics/principals/services.yaml."""
    return _services(settings.home / "topics" / "principals" / "services.yaml")


@cache
def _topic_access(source: Path) -> TopicAccess:
    raw = (yaml.safe_load(source.read_text()) or {}).get("access")
    if not isinstance(raw, dict):
        raise AccessDeclarationError(f"{source.name}: every topic declares its `access` (who may use it)")
    unknown = set(raw) - set(ROLES) - set(PARTY_KINDS)
    if unknown:
        raise AccessDeclarationError(f"{source.name}: unknown access keys {sorted(unknown)}")
    parties = {kind: raw[kind] for kind in PARTY_KINDS if kind in raw}
    for kind, role in parties.items():
        if role not in ROLES:
            raise AccessDeclarationError(f"{source.name}: {kind}: {role!r} is not one of {ROLES}")
    return TopicAccess(
        **{role: tuple(raw.get(role) or ()) for role in ROLES},
        parties=parties,
    )


def topic_access(spec: TopicSpec) -> TopicAccess:
    return _topic_access(spec.source)


def check_declarations(settings: Settings) -> list[str]:
    """Problems with the declared access (unknown services, a party on a topic without its placeholder)."""
    known = services(settings)
    problems = []
    for spec in topics.declared(settings).values():
        access = topic_access(spec)
        for role in ROLES:
            problems += [
                f"{spec.source.name}: {role}: unknown service {name!r}"
                for name in access.services_for(role)
                if name not in known
            ]
        if "tenant" in access.parties and "tenant_id" not in spec.parameters:
            problems.append(f"{spec.source.name}: a tenant party needs {{tenant_id}} in the name")
        if "provider" in access.parties and "dataset_id" not in spec.parameters:
            problems.append(f"{spec.source.name}: a provider party needs {{dataset_id}} in the name")
    return problems


# ---------------------------------------------------------------------------------------------- ACL sets


def topic_resource(spec: TopicSpec) -> tuple[str, str]:
    """(name, pattern): a plain topic literally; a template by its fixed part before the first placeholder."""
    placeholder = PLACEHOLDER.search(spec.name)  # a topic is templated exactly when it has one
    if placeholder is None:
        return spec.name, "LITERAL"
    return spec.name[: placeholder.start()], "PREFIXED"


def desired_service_acls(settings: Settings) -> set[Grant]:
    """Every ACL pdo's services need, from the declarations; nothing else."""
    grants: set[Grant] = set()
    for spec in topics.declared(settings).values():
        name, pattern = topic_resource(spec)
        access = topic_access(spec)
        for role in ROLES:
            for service in access.services_for(role):
                principal = kafka_principal(service_user(service))
                grants |= {
                    Grant(principal, "TOPIC", name, pattern, operation) for operation in ROLE_OPERATIONS[role]
                }
    for need in services(settings).values():
        principal = kafka_principal(service_user(need.name))
        if need.consumer_group:
            grants |= {
                Grant(principal, "GROUP", need.consumer_group, "PREFIXED", operation)
                for operation in ("READ", "DESCRIBE")
            }
        if need.consumer_group and need.faust_topics:
            # faust creates and uses `<app id>-__assignor-__leader` and table changelogs.
            grants.add(Grant(principal, "TOPIC", f"{need.consumer_group}-", "PREFIXED", "ALL"))
        if need.transactional_id_prefix:
            # A transactional producer: WRITE to begin, commit and add offsets; DESCRIBE to find the coordinator.
            grants |= {
                Grant(principal, "TRANSACTIONAL_ID", need.transactional_id_prefix, "PREFIXED", operation)
                for operation in ("WRITE", "DESCRIBE")
            }
        grants |= {Grant(principal, "CLUSTER", "kafka-cluster", "LITERAL", op) for op in need.cluster}
    return grants


def tenant_prefix(tenant_id: str, settings: Settings) -> str:
    """The prefix of every topic of one tenant, also the prefix its consumer groups must use."""
    spec = topics.spec(TopicId.TENANT_STREAM, settings)
    name = tenant_id.partition(":")[2]
    rendered = spec.render(tenant_id=name, dataset_id="x").name
    return rendered[: -len("x")]


def tenant_acls(tenant_id: str, settings: Settings) -> set[Grant]:
    """A tenant's credentials read its own streams and nothing else; its groups start with the same prefix."""
    principal = kafka_principal(party_user(tenant_id))
    prefix = tenant_prefix(tenant_id, settings)
    role = topic_access(topics.spec(TopicId.TENANT_STREAM, settings)).parties.get("tenant")
    grants = {Grant(principal, "TOPIC", prefix, "PREFIXED", op) for op in ROLE_OPERATIONS.get(role or "", ())}
    if role == "consume":
        grants |= {Grant(principal, "GROUP", prefix, "PREFIXED", op) for op in ("READ", "DESCRIBE")}
    return grants


def provider_acls(provider_id: str, dataset_id: str, settings: Settings) -> set[Grant]:
    """A provider's credentials write the feed of one dataset it owns (granted at registration)."""
    principal = kafka_principal(party_user(provider_id))
    spec = topics.spec(TopicId.FEED, settings)
    role = topic_access(spec).parties.get("provider")
    feed = spec.render(dataset_id=dataset_id).name
    return {Grant(principal, "TOPIC", feed, "LITERAL", op) for op in ROLE_OPERATIONS.get(role or "", ())}


# ---------------------------------------------------------------------------------------------- broker


def acl_filter(principal: str | None = None, resource_type: ResourceType = ResourceType.ANY) -> ACLFilter:
    """Every ACL (ALLOW or DENY) of one principal, or of all, on resources of `resource_type`."""
    return ACLFilter(
        principal=principal,
        host="*" if principal else None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(resource_type, None, ACLResourcePatternType.ANY),
    )


def current_acls(admin: KafkaAdminClient, principal: str | None = None) -> set[Grant]:
    """The ALLOW ACLs on the broker (of one principal, or all)."""
    acls, error = admin.describe_acls(acl_filter(principal))
    if error is not NoError:
        raise PdoError(f"the broker would not list its ACLs: {error}", "run this as the admin user")
    return {Grant.from_kafka(acl) for acl in acls if acl.permission_type == ACLPermissionType.ALLOW}


def grant(admin: KafkaAdminClient, grants: set[Grant]) -> None:
    if not grants:
        return
    failed = admin.create_acls([g.to_kafka() for g in sorted(grants)])["failed"]
    if failed:
        # kafka-python reports each refusal by its error class alone, without the ACL it refused.
        reasons = ", ".join(sorted({error.__name__ for error in failed}))
        raise PdoError(
            f"the broker refused {len(failed)} of {len(grants)} ACLs: {reasons}", "run this as the admin user"
        )


def revoke(admin: KafkaAdminClient, grants: set[Grant]) -> None:
    if not grants:
        return
    filters = [g.to_kafka() for g in sorted(grants)]
    for _filter, _matched, error in admin.delete_acls(filters):
        if error is not NoError:
            raise PdoError(f"the broker would not remove ACLs: {error}", "run this as the admin user")


def revoke_principal(admin: KafkaAdminClient, user: str) -> set[Grant]:
    """Remove every ACL of one Kafka user; what was removed."""
    existing = current_acls(admin, kafka_principal(user))
    revoke(admin, existing)
    return existing


def apply(
    admin: KafkaAdminClient, settings: Settings, check: bool = False, prune: bool = False
) -> ApplyReport[Grant]:
    """Make the services' ACLs on the broker what topics/ declares. `check`: change nothing, only report
    (what would be created is `missing`).

    Extra ACLs of a service principal (granted by hand, or left from an older declaration) are reported as
    drift; `prune` removes them. Tenants' and providers' ACLs are not touched here: they come and go with
    their credentials and datasets.
    """
    problems = check_declarations(settings)
    if problems:
        raise AccessDeclarationError("topics/ declares access pdo cannot apply:\n  " + "\n  ".join(problems))
    desired = desired_service_acls(settings)
    on_broker = {g for g in current_acls(admin) if g.principal.startswith(f"User:{SERVICE_PREFIX}")}
    missing, extra = sorted(desired - on_broker), sorted(on_broker - desired)
    report = ApplyReport(unchanged=sorted(desired & on_broker), drift=extra)
    if check:
        report.missing = missing
        return report
    grant(admin, set(missing))
    report.created = missing
    if prune:
        revoke(admin, set(extra))
        report.removed, report.drift = extra, []
    return report


# ---------------------------------------------------------------------------------------------- users


def set_password(admin: KafkaAdminClient, user: str, password: str) -> None:
    """Create the SCRAM-SHA-512 user, or give it a new password (the old one stops working at once)."""
    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password)]
    )
    _raise_user_errors(errors, "set the password of")


def delete_user(admin: KafkaAdminClient, user: str) -> bool:
    """Remove the user's SCRAM credential; False when it had none."""
    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)]
    )
    if any(
        error and ("not found" in str(error).lower() or "does not exist" in str(error))
        for error in errors.values()
    ):
        return False
    _raise_user_errors(errors, "delete")
    return True


def _raise_user_errors(errors: dict[str, str | None], what: str) -> None:
    failed = {user: error for user, error in errors.items() if error}
    if failed:
        raise PdoError(
            "the broker would not "
            + what
            + " "
            + ", ".join(f"{user} ({error})" for user, error in failed.items()),
            "run this as the admin user (or the gateway's service user)",
        )


def service_password(settings: Settings, service: str) -> str:
    """A service's Kafka password: PDO_<SERVICE>_KAFKA_PASSWORD when the deployment sets it, else the local
    stack's generated secret <run_dir>/secrets/kafka-service.<name> (made on first use)."""
    configured = os.environ.get(f"PDO_{service.upper()}_KAFKA_PASSWORD", "")
    return configured or ensure_local_secret(settings.run_dir, f"kafka-{service_user(service)}")


def ensure_service_users(admin: KafkaAdminClient, settings: Settings) -> list[str]:
    """Give every declared service its SCRAM user with its password (idempotent); the users."""
    users = []
    for name in services(settings):
        set_password(admin, service_user(name), service_password(settings, name))
        users.append(service_user(name))
    return users
