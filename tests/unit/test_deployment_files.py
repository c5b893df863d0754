"""docker-compose.yml, the Dockerfile and the packaging name only things that exist in the project."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pdo.cli.main import build_parser
from pdo.core import access, topics
from pdo.core.config import PROJECT_ROOT, Settings
from pdo.stack import database_roles

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
OFFICIAL_IMAGES = ("apache/kafka:", "postgres:", "prom/prometheus:", "grafana/grafana:")
KNOWN_VARIABLES = {variable for variable, _, _ in Settings().describe()}


def services() -> dict[str, dict]:
    return COMPOSE["services"]


def test_every_service_runs_an_official_image_or_our_dockerfile():
    for name, service in services().items():
        if "build" in service:
            dockerfile = PROJECT_ROOT / service["build"]["context"] / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        else:
            assert service["image"].startswith(OFFICIAL_IMAGES), (
                f"{name}: unexpected image {service['image']}"
            )


def pdo_commands(command: list[str]) -> list[list[str]]:
    """The pdo commands a service runs: its command, or each `pdo …` of a `sh -c "… && …"`."""
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in command[2].split("&&")]
    return [command]


def test_every_pdo_command_is_a_real_cli_command():
    parser = build_parser()
    commands = [
        (name, c) for name, s in services().items() if "build" in s for c in pdo_commands(s["command"])
    ]
    assert commands, "the compose file runs no pdo service"
    for name, command in commands:
        assert command[0] == "pdo", f"{name}: runs {command[0]}, not the pdo CLI"
        args = parser.parse_args(command[1:])
        assert callable(args.func), f"{name}: `{shlex.join(command)}` does not reach a command"


# Besides Settings: the services' passwords `pdo acls apply --service-users` sets (README, "Security: who
# may do what"), and the broker's own, read by deploy/kafka/compose-start.sh.
SERVICE_PASSWORDS = {f"PDO_{name.upper()}_KAFKA_PASSWORD" for name in access.services(Settings())}
BROKER_PASSWORDS = {"PDO_KAFKA_ADMIN_PASSWORD", "PDO_KAFKA_CONTROLLER_PASSWORD"}
# The services' PostgreSQL passwords `pdo db roles apply` sets (README, "Who owns which table"): only the
# migrate job, which holds the owner's password too, reads them.
DATABASE_PASSWORDS = {database_roles.password_variable(service) for service in database_roles.SERVICES}


def test_every_pdo_variable_in_compose_is_a_documented_setting():
    for name, service in services().items():
        for variable in service.get("environment", {}):
            if variable.startswith("PDO_"):
                known = KNOWN_VARIABLES | SERVICE_PASSWORDS | (BROKER_PASSWORDS if name in BROKERS else set())
                known |= DATABASE_PASSWORDS if name == "migrate" else set()
                assert variable in known, f"{name}: {variable} is not a pdo setting"


def test_every_service_talks_to_kafka_as_its_own_user_with_a_password_that_has_no_default():
    declared = set(access.services(Settings()))
    for name, service in services().items():
        if name not in declared:
            continue
        environment = service["environment"]
        assert environment["PDO_KAFKA_USERNAME"] == f"service.{name}"
        assert environment["PDO_KAFKA_PASSWORD"] == f"${{PDO_{name.upper()}_KAFKA_PASSWORD:?set it in .env}}"
    init = services()["kafka-init"]["environment"]
    assert init["PDO_KAFKA_USERNAME"] == "admin" and ":?" in init["PDO_KAFKA_PASSWORD"]
    assert set(init) >= SERVICE_PASSWORDS


def test_only_migrate_holds_the_database_owner_and_each_service_connects_as_its_own_role():
    owner = "postgresql+psycopg://pdo:${PDO_POSTGRES_PASSWORD:?set it in .env}@postgres:5432/pdo"
    for name, service in services().items():
        environment = service.get("environment") or {}
        urls = {value for variable, value in environment.items() if variable.endswith("_DATABASE_URL")}
        if name == "migrate":
            assert urls == {owner} and set(environment) >= DATABASE_PASSWORDS
        elif name in database_roles.SERVICES:
            role = f"pdo_{name}:${{PDO_{name.upper()}_DATABASE_PASSWORD:?set it in .env}}@"
            assert urls and all(role in url for url in urls), f"{name} connects as {urls}"
        else:  # sharing keeps no table; the broker, PostgreSQL and the monitoring need no pdo database
            assert not urls, f"{name} is given a database: {urls}"
    assert "pdo db roles apply" in " ".join(services()["migrate"]["command"])


def test_every_mounted_project_file_exists():
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"{name}: mounts missing {source}"


BROKER_START = (PROJECT_ROOT / "deploy" / "kafka" / "compose-start.sh").read_text()


def compose_broker_properties() -> dict[str, str]:
    body = BROKER_START.split("<<PROPERTIES", 1)[1].split("\nPROPERTIES", 1)[0]
    return dict(line.split("=", 1) for line in body.strip().splitlines())


def test_the_broker_never_auto_creates_topics():
    assert compose_broker_properties()["auto.create.topics.enable"] == "false"


def test_the_compose_broker_is_secured_like_the_local_one():
    properties = compose_broker_properties()
    protocols = {entry.split(":")[1] for entry in properties["listener.security.protocol.map"].split(",")}
    assert protocols == {"SASL_PLAINTEXT"}
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["authorizer.class.name"].endswith("StandardAuthorizer")
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert "--add-scram" in BROKER_START
    assert all(services()[name]["entrypoint"][-1] == "/pdo/compose-start.sh" for name in BROKERS)


def test_the_dockerfile_copies_only_existing_paths():
    dockerfile = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.MULTILINE):
        for source in sources.split():
            assert (PROJECT_ROOT / source).exists(), f"Dockerfile copies missing {source}"


@pytest.mark.parametrize(
    "script", ["deploy/setup.sh", "deploy/test.sh", "deploy/local/postgres.sh", ".ci/run"]
)
def test_scripts_are_executable(script):
    assert Path(PROJECT_ROOT / script).stat().st_mode & 0o111


def test_compose_ships_no_secret_value_only_required_variables():
    """Every secret pdo reads comes from the user's environment: `${VAR:?…}` fails compose when it is unset."""
    secrets = {f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata["secret"]}
    checked = 0
    for name, service in services().items():
        for variable, value in (service.get("environment") or {}).items():
            if variable in secrets:
                checked += 1
                # Required (`:?`), never a default; a service's Kafka password comes from its own variable.
                assert re.fullmatch(r"\$\{PDO_[A-Z_]+:\?[^}]+\}", str(value)), f"{name}: {variable}={value}"
    assert checked, "compose hands no secret to any service"


def test_grafana_lets_nobody_in_anonymously_and_ships_no_admin_password():
    grafana = services()["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    assert re.fullmatch(r"\$\{PDO_GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", grafana["GF_SECURITY_ADMIN_PASSWORD"])


def test_prometheus_gets_the_gateways_scrape_token_as_a_secret_file():
    assert COMPOSE["secrets"]["metrics_token"] == {"environment": "PDO_METRICS_TOKEN"}
    assert "metrics_token" in services()["prometheus"]["secrets"]
    assert "PDO_METRICS_TOKEN" in services()["gateway"]["environment"]


# ---------------------------------------------------------------------------------------------- the cluster


def test_compose_runs_three_brokers_of_the_official_image_each_with_its_own_id_port_and_volume():
    brokers = {
        name: service
        for name, service in services().items()
        if name.startswith("kafka-") and name != "kafka-init"
    }
    assert sorted(brokers) == list(BROKERS)
    assert {service["image"] for service in brokers.values()} == {"apache/kafka:4.4.0"}
    assert sorted(str(service["environment"]["NODE_ID"]) for service in brokers.values()) == ["1", "2", "3"]
    ports = [port for service in brokers.values() for port in service["ports"]]
    data = [
        volume for service in brokers.values() for volume in service["volumes"] if volume.endswith("/data")
    ]
    for own in (ports, data):
        assert len(own) == len(set(own)) == 3, f"brokers share one of {own}"
    assert len({service["environment"]["CLUSTER_ID"] for service in brokers.values()}) == 1


def test_the_quorum_voters_agree_and_name_each_broker_by_its_id_and_host():
    voters = {services()[name]["environment"]["CONTROLLER_QUORUM_VOTERS"] for name in BROKERS}
    assert len(voters) == 1
    named = dict(voter.split("@") for voter in voters.pop().split(","))
    for name in BROKERS:
        environment = services()[name]["environment"]
        assert named[str(environment["NODE_ID"])] == f"{environment['ADVERTISED_HOST']}:9093"
        assert environment["ADVERTISED_HOST"] == name
    assert "controller.quorum.voters=${voters}" in BROKER_START and "node.id=${node_id}" in BROKER_START


def test_every_pdo_service_bootstraps_from_all_three_brokers_and_waits_for_them():
    expected = {f"{name}:9092" for name in BROKERS}
    pdo_services = [name for name, service in services().items() if "build" in service]
    assert pdo_services
    for name in pdo_services:
        environment = services()[name]["environment"]
        assert set(environment["PDO_KAFKA_BOOTSTRAP"].split(",")) == expected, name
        assert environment["PDO_REPLICATION_PROFILE"] == "production", name
    assert set(services()["migrate"]["depends_on"]) >= set(BROKERS)


def test_the_compose_brokers_replicate_internal_topics_as_the_production_profile_declares():
    properties = compose_broker_properties()
    internal = topics.internal_replication(dataclasses.replace(Settings(), replication_profile="production"))
    factor, in_sync = str(internal.factor), str(internal.min_insync)
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert properties[key] == factor, key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert properties[key] == in_sync, key


STREAM_WORKERS = ("catalog", "authorization", "sharing", "metering", "audit")


@pytest.mark.parametrize("name", STREAM_WORKERS)
def test_a_stream_worker_can_be_scaled_no_fixed_name_or_host_port(name):
    service = services()[name]
    assert "container_name" not in service and "ports" not in service
    assert service["command"][:2] == ["pdo", name] or service["command"] == ["pdo", f"{name}-worker"]


def test_no_service_has_a_fixed_container_name():
    assert not [name for name, service in services().items() if "container_name" in service]


def test_the_compose_brokers_admit_the_workers_short_group_sessions():
    """The stream workers' 3 s sessions (pdo.core.streams) are below Kafka's default minimum of 6 s."""
    assert int(compose_broker_properties()["group.min.session.timeout.ms"]) <= 3000
