"""Topics as declared data: load `topics/*.yaml`, name them in code by TopicId (templated names such as a
dataset's feed or a tenant's stream through `feed_topic` and `tenant_topic`, the one place they are spelled),
create them on the broker.

Replication is declared too, per profile (`production`, `local`; PDO_REPLICATION_PROFILE picks one): a topic
is created with its profile's replication factor and `min.insync.replicas`, never more than the cluster has
brokers, and `apply` reports a live topic whose replication differs from that."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TypeVar

import yaml
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from pdo.core.apply_report import ApplyReport
from pdo.core.config import REPLICATION_PROFILES, Settings
from pdo.core.errors import PdoError
from pdo.core.ids import check_id

T = TypeVar("T")

# Kafka accepts these characters in topic names (template parameters keep to the stricter id rule).
LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
CLEANUP_POLICIES = {"delete", "compact", "compact,delete"}
# `values: dataset` marks topics whose value schema is a dataset's own, registered by its provider.
DATASET_VALUES = "dataset"
# Kafka's own topics (consumer offsets, transaction state) and faust's (changelogs, leader topics): their
# replication per profile, in the same keys as a topic declaration.
INTERNAL_REPLICATION_FILE = Path("internal") / "replication.yaml"


class TopicId(StrEnum):
    """Every declared topic, by the stem of its file in topics/ (a test keeps the two in step)."""

    CATALOG = "catalog"
    REQUESTS = "requests"
    AUTHORIZATIONS = "authorizations"
    DELIVERIES = "deliveries"
    USAGE = "usage"
    QUOTA_EXCEEDED = "quota-exceeded"
    STATEMENTS = "statements"
    DEAD_LETTERS = "dead-letters"
    FEED = "feed"
    TENANT_STREAM = "tenant-stream"
    AUDIT = "audit"
    DELIVERY_DIGESTS = "delivery-digests"
    ACCESS = "access"
    TENANT_AGGREGATES = "tenant-aggregates"
    PRODUCT_FEED = "product-feed"


class TopicDeclarationError(PdoError):
    """A file in topics/ is not a valid declaration."""


@dataclass(frozen=True)
class Replication:
    """How many brokers keep a copy of each partition, and how many copies must hold a write before an
    acks=all producer hears it acknowledged (Kafka's `min.insync.replicas`)."""

    factor: int
    min_insync: int

    def on(self, brokers: int) -> Replication:
        """What a cluster of `brokers` can hold: no more replicas than brokers, no more in sync than replicas."""
        factor = min(self.factor, brokers)
        return Replication(factor, min(self.min_insync, factor))


@dataclass(frozen=True)
class ReplicationPlan:
    """A topic's replication in each profile: `production` (a cluster of three or more brokers) and `local`."""

    production: Replication
    local: Replication

    def profile(self, name: str) -> Replication:
        """The replication of one profile; Settings holds PDO_REPLICATION_PROFILE to REPLICATION_PROFILES."""
        plan: Replication = getattr(self, name)
        return plan


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared: its name (or name template), layout, retention and schemas."""

    id: str
    name: str
    description: str
    partitions: int
    replication: ReplicationPlan
    cleanup_policy: str
    retention_ms: int
    key: str
    values: tuple[str, ...] | str
    source: Path = field(compare=False)
    # Compacted topics only: how long an event is safe from compaction, whatever follows it on its key.
    min_compaction_lag_ms: int | None = None

    @property
    def templated(self) -> bool:
        return bool(PLACEHOLDER.search(self.name))

    @property
    def parameters(self) -> list[str]:
        return PLACEHOLDER.findall(self.name)

    @property
    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.min_compaction_lag_ms is not None:
            configs["min.compaction.lag.ms"] = str(self.min_compaction_lag_ms)
        return configs

    def render(self, **params: str) -> TopicSpec:
        """The concrete topic for a template, e.g. the feed of one dataset; InvalidInput for a bad id."""
        missing = set(self.parameters) - params.keys()
        if missing:
            raise PdoError(f"topic {self.name} needs {', '.join(sorted(missing))}")
        # Every parameter is a tenant or dataset id. Holding them to the id rule (no '.', no '_') is what
        # makes the mapping parameters → topic name injective: see pdo.core.ids.
        for key, value in params.items():
            check_id(f"topic name parameter {key}", value)
        name = PLACEHOLDER.sub(lambda m: params[m.group(1)], self.name)
        if not LEGAL_NAME.match(name):
            raise PdoError(f"topic name {name[:80]!r}… is longer than Kafka's 249 characters")
        return TopicSpec(**{**self.__dict__, "name": name})


def _require(raw: dict[str, object], key: str, kind: type[T], source: Path) -> T:
    value = raw.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TopicDeclarationError(
            f"{source.name}: '{key}' must be a {kind.__name__}, found {value!r}",
            hint="see topics/README.md for the declaration format",
        )
    return value


def _optional(raw: dict[str, object], key: str, kind: type[T], source: Path) -> T | None:
    return None if raw.get(key) is None else _require(raw, key, kind, source)


def _per_profile(
    raw: dict[str, object], key: str, source: Path, default: dict[str, int] | None = None
) -> dict[str, int]:
    """`key: 3` (every profile) or `key: {production: 3, local: 1}` (each profile named), as whole numbers."""
    value = raw.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return dict.fromkeys(REPLICATION_PROFILES, value)
    if (
        isinstance(value, dict)
        and set(value) == set(REPLICATION_PROFILES)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
    ):
        return value
    profiles = ", ".join(f"{profile}: <n>" for profile in REPLICATION_PROFILES)
    raise TopicDeclarationError(
        f"{source.name}: '{key}' must be a int, or a mapping {{{profiles}}}; found {value!r}",
        hint="see topics/README.md for the declaration format",
    )


def parse_replication(raw: dict[str, object], source: Path) -> ReplicationPlan:
    """`replication` and `min_insync_replicas` of a declaration; min_insync_replicas left out is one less than
    the replication factor (at least 1), so a topic keeps taking writes with one replica down."""
    factors = _per_profile(raw, "replication", source)
    fallback = {profile: max(1, factor - 1) for profile, factor in factors.items()}
    in_sync = _per_profile(raw, "min_insync_replicas", source, default=fallback)
    plans = {profile: Replication(factors[profile], in_sync[profile]) for profile in REPLICATION_PROFILES}
    for profile, plan in plans.items():
        if plan.factor < 1 or not 1 <= plan.min_insync <= plan.factor:
            raise TopicDeclarationError(
                f"{source.name}: {profile} replication must be at least 1 and min_insync_replicas between 1 "
                f"and it; found replication {plan.factor}, min_insync_replicas {plan.min_insync}"
            )
    return ReplicationPlan(**plans)


def _load_mapping(source: Path) -> dict[str, object]:
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as error:
        raise TopicDeclarationError(f"{source.name} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise TopicDeclarationError(f"{source.name} must be a mapping of fields")
    return raw


def internal_replication(settings: Settings) -> Replication:
    """The replication of Kafka's and faust's internal topics in the profile in force (uncapped)."""
    source = settings.home / "topics" / INTERNAL_REPLICATION_FILE
    return parse_replication(_load_mapping(source), source).profile(settings.replication_profile)


def parse_declaration(source: Path) -> TopicSpec:
    raw = _load_mapping(source)
    values = raw.get("values")
    if values != DATASET_VALUES and not (
        isinstance(values, list) and values and all(isinstance(v, str) for v in values)
    ):
        raise TopicDeclarationError(
            f"{source.name}: 'values' must list schema full names, or be '{DATASET_VALUES}'"
        )
    spec = TopicSpec(
        id=source.stem,
        name=_require(raw, "name", str, source),
        description=_require(raw, "description", str, source),
        partitions=_require(raw, "partitions", int, source),
        replication=parse_replication(raw, source),
        cleanup_policy=_require(raw, "cleanup_policy", str, source),
        retention_ms=_require(raw, "retention_ms", int, source),
        key=_require(raw, "key", str, source),
        values=tuple(values) if isinstance(values, list) else values,
        source=source,
        min_compaction_lag_ms=_optional(raw, "min_compaction_lag_ms", int, source),
    )
    _check_ranges(spec)
    return spec


def _check_ranges(spec: TopicSpec) -> None:
    problems = []
    if spec.partitions < 1:
        problems.append("partitions must be at least 1")
    if spec.cleanup_policy not in CLEANUP_POLICIES:
        problems.append(f"cleanup_policy must be one of {sorted(CLEANUP_POLICIES)}")
    if spec.retention_ms < -1 or spec.retention_ms == 0:
        problems.append("retention_ms must be -1 (forever) or a positive number of milliseconds")
    if spec.min_compaction_lag_ms is not None and (
        spec.min_compaction_lag_ms < 1 or "compact" not in spec.cleanup_policy
    ):
        problems.append(
            "min_compaction_lag_ms must be a positive number of milliseconds, on a compacted topic"
        )
    if not LEGAL_NAME.match(PLACEHOLDER.sub("x", spec.name)):
        problems.append(f"name {spec.name!r} has characters Kafka does not allow")
    if problems:
        raise TopicDeclarationError(f"{spec.source.name}: " + "; ".join(problems))


def load_declarations(root: Path) -> dict[str, TopicSpec]:
    """Every declaration under `root`, by id; two files declaring one topic name is an error."""
    specs: dict[str, TopicSpec] = {}
    by_name: dict[str, Path] = {}
    for source in sorted(root.glob("*.yaml")):
        spec = parse_declaration(source)
        if spec.name in by_name:
            raise TopicDeclarationError(
                f"topic {spec.name} is declared twice: {by_name[spec.name].name} and {source.name}"
            )
        by_name[spec.name] = source
        specs[spec.id] = spec
    return specs


@cache
def _declared(root: Path) -> dict[str, TopicSpec]:
    return load_declarations(root)


def declared(settings: Settings | None = None) -> dict[str, TopicSpec]:
    return _declared((settings or Settings.from_env()).home / "topics")


def spec(topic: TopicId, settings: Settings | None = None) -> TopicSpec:
    """The declaration behind a TopicId: the one way services learn a topic's name."""
    try:
        return declared(settings)[topic.value]
    except KeyError:
        raise TopicDeclarationError(f"no declaration topics/{topic.value}.yaml") from None


def name(topic: TopicId, settings: Settings | None = None, **params: str) -> str:
    """The concrete topic name, e.g. name(TopicId.FEED, dataset_id="traffic-flow")."""
    declaration = spec(topic, settings)
    return declaration.render(**params).name if declaration.templated else declaration.name


def feed_topic(dataset_id: str, settings: Settings | None = None) -> str:
    """The name of a dataset's feed topic, e.g. pdo.feed.traffic-flow."""
    return name(TopicId.FEED, settings, dataset_id=dataset_id)


def tenant_topic_part(tenant_id: str) -> str:
    """The tenant's part of its topic names: the id after its kind ("tenant:acme" → "acme")."""
    return tenant_id.split(":", 1)[-1]


def tenant_topic(tenant_id: str, dataset_id: str, settings: Settings | None = None) -> str:
    """The name of a tenant's stream of one dataset, e.g. pdo.tenant.acme.traffic-flow."""
    return name(
        TopicId.TENANT_STREAM, settings, tenant_id=tenant_topic_part(tenant_id), dataset_id=dataset_id
    )


def apply(admin: KafkaAdminClient, specs: list[TopicSpec], profile: str | None = None) -> ApplyReport[str]:
    """Create the declared topics the broker lacks; report how existing ones differ. Idempotent.
    Items are topic names; a drift item is `<name>: <what differs>`. `profile` defaults to
    PDO_REPLICATION_PROFILE."""
    report: ApplyReport[str] = ApplyReport()
    profile = profile or Settings.from_env().replication_profile
    brokers = len(admin.describe_cluster()["brokers"])
    existing = set(admin.list_topics())
    for declaration in specs:
        replication = _effective_replication(declaration, profile, brokers, report)
        if declaration.name in existing:
            _compare(admin, declaration, replication, report)
        else:
            _create(admin, declaration, replication, report)
    return report


def _effective_replication(
    declaration: TopicSpec, profile: str, brokers: int, report: ApplyReport[str]
) -> Replication:
    # A single local broker cannot hold three replicas; the production profile states production intent.
    wanted = declaration.replication.profile(profile)
    possible = wanted.on(brokers)
    if possible != wanted:
        report.notes.append(
            f"{declaration.name}: replication {wanted.factor} declared ({profile}), {brokers} broker(s) in "
            f"the cluster, so {possible.factor} (min.insync.replicas {possible.min_insync})"
        )
    return possible


def topic_configs(declaration: TopicSpec, replication: Replication) -> dict[str, str]:
    """The topic-level configs pdo sets: the declaration's own and the profile's min.insync.replicas."""
    return {**declaration.configs, "min.insync.replicas": str(replication.min_insync)}


def _create(
    admin: KafkaAdminClient, declaration: TopicSpec, replication: Replication, report: ApplyReport[str]
) -> None:
    topic = NewTopic(
        name=declaration.name,
        num_partitions=declaration.partitions,
        replication_factor=replication.factor,
        topic_configs=topic_configs(declaration, replication),
    )
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        # Another worker created it between our listing and our request: compare instead.
        _compare(admin, declaration, replication, report)
        return
    report.created.append(declaration.name)


REPLICATION_FIX = (
    "{name}: Kafka cannot change a live topic's replication factor by itself; give each partition {factor} "
    "replica(s) with kafka-reassign-partitions.sh (or delete and re-apply the topic, losing its records); "
    "min.insync.replicas changes with kafka-configs.sh --alter --entity-type topics --entity-name {name}"
)


def _compare(
    admin: KafkaAdminClient, declaration: TopicSpec, replication: Replication, report: ApplyReport[str]
) -> None:
    differences = []
    partitions = admin.describe_topics([declaration.name])[0]["partitions"]
    if len(partitions) != declaration.partitions:
        differences.append(f"partitions {len(partitions)} (declared {declaration.partitions})")
    factors = sorted({len(partition["replica_nodes"]) for partition in partitions})
    if factors != [replication.factor]:
        shown = "/".join(str(factor) for factor in factors)
        differences.append(f"replication {shown} (declared {replication.factor})")
    wanted = topic_configs(declaration, replication)
    actual = _topic_configs(admin, declaration.name, list(wanted))
    for key, value in wanted.items():
        if actual.get(key) != value:
            differences.append(f"{key}={actual.get(key)} (declared {value})")
    if differences:
        report.drift.append(f"{declaration.name}: " + ", ".join(differences))
        if any(d.startswith(("replication", "min.insync")) for d in differences):
            report.notes.append(REPLICATION_FIX.format(name=declaration.name, factor=replication.factor))
    else:
        report.unchanged.append(declaration.name)


def _topic_configs(admin: KafkaAdminClient, topic: str, keys: list[str]) -> dict[str, str]:
    wanted = dict.fromkeys(keys)
    # Describing needs only the names (the stubs type `configs` for altering, where values are set).
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=wanted)  # type: ignore[arg-type]
    described = admin.describe_configs([resource], config_filter="all")["topic"][topic]
    return {key: entry["value"] for key, entry in described.items() if key in wanted}
