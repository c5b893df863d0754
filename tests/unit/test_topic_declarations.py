"""Topic declarations: every file valid, every TopicId declared, templates rendered safely."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdo.core import access, ids, schemas, topics
from pdo.core.config import PROJECT_ROOT, REPLICATION_PROFILES, ConfigError, Settings
from pdo.core.errors import InvalidInput, PdoError
from pdo.core.topics import TopicDeclarationError, TopicId

TOPICS_DIR = PROJECT_ROOT / "topics"

VALID = """
name: pdo.example
description: an example
partitions: 3
replication: 1
cleanup_policy: compact
retention_ms: -1
key: example_id
values: [pdo.example.v1.Example]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_topic_id_has_exactly_one_declaration_file():
    files = {path.stem for path in TOPICS_DIR.glob("*.yaml")}

    assert files == {topic.value for topic in TopicId}


def test_every_declared_value_schema_exists_in_schemas():
    defined = set(schemas.load_all())
    for spec in topics.load_declarations(TOPICS_DIR).values():
        if spec.values == topics.DATASET_VALUES:
            continue
        missing = set(spec.values) - defined
        assert not missing, f"{spec.source.name} names schemas that do not exist: {sorted(missing)}"


def test_services_get_names_from_declarations():
    assert topics.name(TopicId.CATALOG) == "pdo.catalog"
    assert topics.name(TopicId.FEED, dataset_id="traffic-flow") == "pdo.feed.traffic-flow"
    assert (
        topics.name(TopicId.TENANT_STREAM, tenant_id="acme", dataset_id="air-quality")
        == "pdo.tenant.acme.air-quality"
    )


@pytest.mark.parametrize(
    "hostile", ["../etc", "a b", "x/y", "", "é", "a" * 300, "..", "a.b", "a_b", "A", "-a"]
)
def test_a_template_refuses_parameters_that_break_the_id_rule(hostile):
    with pytest.raises(InvalidInput, match="is not a valid id") as refused:
        topics.name(TopicId.FEED, dataset_id=hostile)
    assert ids.ID_RULE in refused.value.hint


def test_neither_dotted_collision_can_be_named():
    """`tenant:acme` + `corp.sales` and `tenant:acme.corp` + `sales` would both be pdo.tenant.acme.corp.sales."""
    with pytest.raises(InvalidInput, match="dataset_id"):
        topics.name(TopicId.TENANT_STREAM, tenant_id="acme", dataset_id="corp.sales")
    with pytest.raises(InvalidInput, match="tenant_id"):
        topics.name(TopicId.TENANT_STREAM, tenant_id="acme.corp", dataset_id="sales")


def test_kafkas_dot_underscore_collision_cannot_be_named():
    """Kafka refuses `pdo.feed.a_b` next to `pdo.feed.a.b` (it treats '.' and '_' alike)."""
    for hostile in ("a_b", "a.b"):
        with pytest.raises(InvalidInput):
            topics.name(TopicId.FEED, dataset_id=hostile)


# Short texts over the characters that could make two names collide.
PARTS = st.text(alphabet="ab.-_A", min_size=0, max_size=5)


def _renders(tenant: str, dataset: str) -> bool:
    try:
        topics.name(TopicId.TENANT_STREAM, tenant_id=tenant, dataset_id=dataset)
    except InvalidInput:
        return False
    return True


def _rivals(tenant: str, dataset: str) -> set[tuple[str, str]]:
    """Other pairs whose topic name would equal this pair's, or collide with it in Kafka ('.' ~ '_')."""
    joined = f"{tenant}.{dataset}"
    variants = {joined, joined.replace("_", "."), joined.replace(".", "_")}
    pairs = set()
    for text in variants:
        for at, char in enumerate(text):
            if char in "._":
                pairs.add((text[:at], text[at + 1 :]))
    return pairs - {(tenant, dataset)}


@settings(max_examples=400, deadline=None)
@given(PARTS, PARTS)
def test_tenant_topic_names_are_injective(tenant, dataset):
    """When render accepts a pair, no other pair that would name the same (or a Kafka-colliding) topic is
    accepted: the mapping (tenant, dataset) → topic name is injective."""
    if _renders(tenant, dataset):
        assert not [pair for pair in _rivals(tenant, dataset) if _renders(*pair)]


def test_a_template_needs_all_its_parameters():
    with pytest.raises(PdoError, match="needs tenant_id"):
        topics.name(TopicId.TENANT_STREAM, dataset_id="air")


def test_a_valid_declaration_parses_with_its_configs(tmp_path):
    spec = topics.parse_declaration(write(tmp_path, "example.yaml", VALID))

    assert spec.id == "example"
    assert spec.configs == {"cleanup.policy": "compact", "retention.ms": "-1"}
    assert not spec.templated


def test_a_minimum_compaction_lag_is_a_config_of_its_own(tmp_path):
    text = VALID + "min_compaction_lag_ms: 604800000\n"

    spec = topics.parse_declaration(write(tmp_path, "example.yaml", text))

    assert spec.configs["min.compaction.lag.ms"] == "604800000"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("partitions: 3", "partitions: 0"), "partitions must be at least 1"),
        (("partitions: 3", "partitions: three"), "'partitions' must be a int"),
        (("replication: 1", "replication: true"), "'replication' must be a int"),
        (("cleanup_policy: compact", "cleanup_policy: shred"), "cleanup_policy must be one of"),
        (("retention_ms: -1", "retention_ms: 0"), "retention_ms must be -1"),
        (("name: pdo.example", "name: pdo example"), "characters Kafka does not allow"),
        (("values: [pdo.example.v1.Example]", "values: []"), "'values' must list schema full names"),
        (("description: an example", ""), "'description' must be a str"),
        (("key: example_id", "key: example_id\nmin_compaction_lag_ms: 0"), "min_compaction_lag_ms must be"),
        (
            ("cleanup_policy: compact", "cleanup_policy: delete\nmin_compaction_lag_ms: 1000"),
            "on a compacted topic",
        ),
    ],
)
def test_a_broken_declaration_is_refused_with_the_reason(tmp_path, change, says):
    old, new = change
    with pytest.raises(TopicDeclarationError, match=says):
        topics.parse_declaration(write(tmp_path, "example.yaml", VALID.replace(old, new)))


def test_a_missing_key_points_to_the_format_which_documents_every_key(tmp_path):
    with pytest.raises(TopicDeclarationError) as refused:
        topics.parse_declaration(write(tmp_path, "example.yaml", VALID.replace("key: example_id\n", "")))
    guide = PROJECT_ROOT / refused.value.hint.split("see ", 1)[1].split()[0]
    declared_keys = {field.name for field in dataclasses.fields(topics.TopicSpec)} - {"id", "source"}
    access_keys = {"access", *access.ROLES, *access.PARTY_KINDS}

    documented = guide.read_text()

    assert not [key for key in sorted(declared_keys | access_keys) if f"`{key}`" not in documented]


@pytest.mark.parametrize("text", ["name: [unclosed", "- just\n- a list\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path, text):
    with pytest.raises(TopicDeclarationError, match="example.yaml"):
        topics.parse_declaration(write(tmp_path, "example.yaml", text))


def test_two_files_declaring_one_topic_are_refused(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", VALID)

    with pytest.raises(TopicDeclarationError, match="declared twice: a.yaml and b.yaml"):
        topics.load_declarations(tmp_path)


# ---------------------------------------------------------------------------------------------- replication

PER_PROFILE = VALID.replace(
    "replication: 1\n",
    "replication: {production: 3, local: 1}\nmin_insync_replicas: {production: 2, local: 1}\n",
)


def test_replication_and_min_insync_replicas_are_declared_per_profile(tmp_path):
    spec = topics.parse_declaration(write(tmp_path, "example.yaml", PER_PROFILE))

    assert spec.replication.profile("production") == topics.Replication(factor=3, min_insync=2)
    assert spec.replication.profile("local") == topics.Replication(factor=1, min_insync=1)


def test_one_number_is_every_profiles_and_min_insync_defaults_to_one_less(tmp_path):
    spec = topics.parse_declaration(
        write(tmp_path, "example.yaml", VALID.replace("replication: 1", "replication: 3"))
    )

    for profile in REPLICATION_PROFILES:
        assert spec.replication.profile(profile) == topics.Replication(factor=3, min_insync=2)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("replication: {production: 3}\n", "'replication' must be a int, or a mapping"),
        ("replication: {production: 3, local: 1, test: 2}\n", "'replication' must be a int, or a mapping"),
        ("replication: {production: 3, local: one}\n", "'replication' must be a int, or a mapping"),
        ("replication: 3\nmin_insync_replicas: {production: 2}\n", "'min_insync_replicas' must be"),
        ("replication: 3\nmin_insync_replicas: 4\n", "production replication must be at least 1 and"),
        ("replication: {production: 3, local: 0}\n", "local replication must be at least 1"),
    ],
)
def test_a_broken_replication_is_refused_with_the_reason(tmp_path, change, says):
    with pytest.raises(TopicDeclarationError, match=says):
        topics.parse_declaration(write(tmp_path, "example.yaml", VALID.replace("replication: 1\n", change)))


def test_every_declared_topic_keeps_three_replicas_two_in_sync_in_production_and_one_locally():
    for spec in topics.load_declarations(TOPICS_DIR).values():
        assert spec.replication.profile("production") == topics.Replication(3, 2), spec.source.name
        assert spec.replication.profile("local") == topics.Replication(1, 1), spec.source.name


def test_internal_topics_follow_the_profile_in_force():
    production = dataclasses.replace(Settings.from_env(), replication_profile="production")
    local = dataclasses.replace(production, replication_profile="local")

    assert topics.internal_replication(production) == topics.Replication(3, 2)
    assert topics.internal_replication(local) == topics.Replication(1, 1)


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (2, 2)), (3, (3, 2)), (5, (3, 2))])
def test_a_cluster_never_gets_more_replicas_than_brokers_nor_more_in_sync_than_replicas(brokers, expected):
    assert topics.Replication(3, 2).on(brokers) == topics.Replication(*expected)


def test_the_replication_profile_setting_refuses_an_unknown_profile(monkeypatch):
    monkeypatch.setenv("PDO_REPLICATION_PROFILE", "staging")
    with pytest.raises(ConfigError, match="'staging' is not one of production, local"):
        Settings.from_env()


class FakeAdmin:
    """Just what `topics.apply` asks a broker: its brokers, topics, partitions and topic configs."""

    def __init__(self, brokers: int, live: dict[str, tuple[int, int, str]] | None = None):
        self.brokers = brokers
        self.live = live or {}  # name -> (partitions, replicas each, min.insync.replicas)
        self.created: list = []

    def describe_cluster(self):
        return {"brokers": [{"node_id": n} for n in range(1, self.brokers + 1)]}

    def list_topics(self):
        return list(self.live)

    def describe_topics(self, names):
        partitions, replicas, _ = self.live[names[0]]
        nodes = list(range(1, replicas + 1))
        return [{"partitions": [{"partition_index": i, "replica_nodes": nodes} for i in range(partitions)]}]

    def describe_configs(self, resources, config_filter):
        name = resources[0].name
        configs = {
            "cleanup.policy": "compact",
            "retention.ms": "-1",
            "min.insync.replicas": self.live[name][2],
        }
        return {"topic": {name: {key: {"value": value} for key, value in configs.items()}}}

    def create_topics(self, new_topics):
        self.created.extend(new_topics)


def test_apply_creates_a_topic_with_its_profiles_replication_and_min_insync(tmp_path):
    spec = topics.parse_declaration(write(tmp_path, "example.yaml", PER_PROFILE))
    admin = FakeAdmin(brokers=3)

    report = topics.apply(admin, [spec], profile="production")  # type: ignore[arg-type]

    assert report.created == ["pdo.example"] and not report.notes
    (created,) = admin.created
    assert created.replication_factor == 3
    assert created.topic_configs["min.insync.replicas"] == "2"


def test_apply_caps_replication_at_the_brokers_there_are_and_says_so(tmp_path):
    spec = topics.parse_declaration(write(tmp_path, "example.yaml", PER_PROFILE))
    admin = FakeAdmin(brokers=1)

    report = topics.apply(admin, [spec], profile="production")  # type: ignore[arg-type]

    assert (admin.created[0].replication_factor, admin.created[0].topic_configs["min.insync.replicas"]) == (
        1,
        "1",
    )
    assert report.notes == [
        "pdo.example: replication 3 declared (production), 1 broker(s) in the cluster, so 1 (min.insync.replicas 1)"
    ]


def test_apply_reports_a_live_topic_whose_replication_differs_and_says_what_to_do(tmp_path):
    spec = topics.parse_declaration(write(tmp_path, "example.yaml", PER_PROFILE))
    admin = FakeAdmin(brokers=3, live={"pdo.example": (3, 1, "1")})  # made under the local profile

    report = topics.apply(admin, [spec], profile="production")  # type: ignore[arg-type]

    assert not admin.created and not report.clean
    assert report.drift == ["pdo.example: replication 1 (declared 3), min.insync.replicas=1 (declared 2)"]
    assert "kafka-reassign-partitions.sh" in report.notes[-1]


def test_apply_finds_a_topic_as_declared_unchanged(tmp_path):
    spec = topics.parse_declaration(write(tmp_path, "example.yaml", PER_PROFILE))
    admin = FakeAdmin(brokers=3, live={"pdo.example": (3, 3, "2")})

    report = topics.apply(admin, [spec], profile="production")  # type: ignore[arg-type]

    assert report.unchanged == ["pdo.example"] and report.clean and not report.notes


@pytest.mark.parametrize(
    ("bootstrap", "replicas"), [("127.0.0.1:9092", 1), ("a:1,b:1,c:1", 3), ("a:1,b:1", 2)]
)
def test_faust_internal_topics_follow_the_profile_capped_at_the_brokers_listed(bootstrap, replicas):
    from pdo.core import streams

    settings = dataclasses.replace(
        Settings.from_env(), kafka_bootstrap=bootstrap, replication_profile="production"
    )

    assert streams.internal_replication_factor(settings) == replicas
    assert (
        streams.internal_replication_factor(dataclasses.replace(settings, replication_profile="local")) == 1
    )
