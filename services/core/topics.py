"""Topics as declared data: load `topics/*.yaml`, name them in code by TopicId (templated names such as a
dataset's feed or a tenant's stream through `feed_topic` and `tenant_topic`, the one place they are spelled),
create them on the broker."""

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
from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.ids import check_id

T = TypeVar("T")

# Kafka accepts these characters in topic names (template parameters keep to the stricter id rule).
LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
CLEANUP_POLICIES = {"delete", "compact", "compact,delete"}
# `values: dataset` marks topics whose value schema is a dataset's own, registered by its provider.
DATASET_VALUES = "dataset"


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


class TopicDeclarationError(PdoError):
    """A file in topics/ is not a valid declaration."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared: its name (or name template), layout, retention and schemas."""

    id: str
    name: str
    description: str
    partitions: int
    replication: int
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


def parse_declaration(source: Path) -> TopicSpec:
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as error:
        raise TopicDeclarationError(f"{source.name} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise TopicDeclarationError(f"{source.name} must be a mapping of fields")
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
        replication=_require(raw, "replication", int, source),
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
    if spec.replication < 1:
        problems.append("replication must be at least 1")
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


def apply(admin: KafkaAdminClient, specs: list[TopicSpec]) -> ApplyReport[str]:
    """Create the declared topics the broker lacks; report how existing ones differ. Idempotent.
    Items are topic names; a drift item is `<name>: <what differs>`."""
    report: ApplyReport[str] = ApplyReport()
    brokers = len(admin.describe_cluster()["brokers"])
    existing = set(admin.list_topics())
    for declaration in specs:
        if declaration.name in existing:
            _compare(admin, declaration, report)
        else:
            _create(admin, declaration, _effective_replication(declaration, brokers, report), report)
    return report


def _effective_replication(declaration: TopicSpec, brokers: int, report: ApplyReport[str]) -> int:
    # A single local broker cannot hold three replicas; the declaration states production intent.
    if declaration.replication <= brokers:
        return declaration.replication
    report.notes.append(
        f"{declaration.name}: replication {declaration.replication} declared, "
        f"{brokers} broker(s) in the cluster, created with {brokers}"
    )
    return brokers


def _create(
    admin: KafkaAdminClient, declaration: TopicSpec, replication: int, report: ApplyReport[str]
) -> None:
    topic = NewTopic(
        name=declaration.name,
        num_partitions=declaration.partitions,
        replication_factor=replication,
        topic_configs=declaration.configs,
    )
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        # Another worker created it between our listing and our request: compare instead.
        _compare(admin, declaration, report)
        return
    report.created.append(declaration.name)


def _compare(admin: KafkaAdminClient, declaration: TopicSpec, report: ApplyReport[str]) -> None:
    differences = []
    partitions = len(admin.describe_topics([declaration.name])[0]["partitions"])
    if partitions != declaration.partitions:
        differences.append(f"partitions {partitions} (declared {declaration.partitions})")
    actual = _topic_configs(admin, declaration.name, declaration.configs)
    for key, wanted in declaration.configs.items():
        if actual.get(key) != wanted:
            differences.append(f"{key}={actual.get(key)} (declared {wanted})")
    if differences:
        report.drift.append(f"{declaration.name}: " + ", ".join(differences))
    else:
        report.unchanged.append(declaration.name)


def _topic_configs(admin: KafkaAdminClient, topic: str, declared: dict[str, str]) -> dict[str, str]:
    wanted = dict.fromkeys(declared)
    # Describing needs only the names (the stubs type `configs` for altering, where values are set).
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=wanted)  # type: ignore[arg-type]
    described = admin.describe_configs([resource], config_filter="all")["topic"][topic]
    return {key: entry["value"] for key, entry in described.items() if key in wanted}
