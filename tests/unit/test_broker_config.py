"""The broker launcher's pure logic: generated (secured) configuration, error messages and the probe."""

from __future__ import annotations

import dataclasses
import re
import socket
import struct

import pytest

from pdo.core.config import PROJECT_ROOT, Settings
from pdo.core.errors import PdoError
from pdo.stack import broker


@pytest.fixture
def broker_settings(tmp_path) -> Settings:
    return dataclasses.replace(
        Settings.from_env(),
        run_dir=tmp_path,
        kafka_port=29092,
        kafka_controller_port=29093,
        kafka_heap="256m",
        kafka_tls_port=0,  # deploy/test.sh sets the suite broker's; these tests choose their own
        kafka_tls_certfile="",
        kafka_tls_keyfile="",
    )


def parsed_properties(settings: Settings) -> dict[str, str]:
    text = broker.server_properties(settings, broker.BrokerPaths.from_settings(settings))
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_server_properties_turn_topic_auto_creation_off(broker_settings):
    assert parsed_properties(broker_settings)["auto.create.topics.enable"] == "false"


def test_server_properties_listen_on_loopback_at_the_configured_ports(broker_settings):
    props = parsed_properties(broker_settings)
    assert props["listeners"] == "CLIENT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "CLIENT://127.0.0.1:29092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"


def test_every_listener_authenticates_and_nothing_passes_without_an_acl(broker_settings):
    props = parsed_properties(broker_settings)
    protocols = dict(entry.split(":") for entry in props["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) <= {"SASL_PLAINTEXT", "SASL_SSL"}
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:controller"


def test_the_admin_password_is_random_per_run_dir_and_kept_private(broker_settings, tmp_path):
    broker_settings = dataclasses.replace(broker_settings, kafka_password="")  # none configured
    password = broker.admin_password(broker_settings)
    secret_file = tmp_path / "secrets" / "kafka-admin"
    assert secret_file.read_text().strip() == password and len(password) >= 40
    assert secret_file.stat().st_mode & 0o077 == 0
    assert broker.admin_password(broker_settings) == password  # made once
    other = dataclasses.replace(broker_settings, run_dir=tmp_path / "elsewhere")
    assert broker.admin_password(other) != password


def test_a_configured_admin_password_is_the_one_the_broker_is_formatted_with(broker_settings):
    configured = dataclasses.replace(
        broker_settings, kafka_username="admin", kafka_password="s3cret-from-env"
    )
    assert broker.admin_password(configured) == "s3cret-from-env"
    assert 'username="admin" password="s3cret-from-env"' in broker.server_properties(
        configured, broker.BrokerPaths.from_settings(configured)
    )


def test_the_properties_file_holding_passwords_is_readable_by_its_owner_only(broker_settings):
    paths = broker.BrokerPaths.from_settings(broker_settings)
    broker.write_config_files(broker_settings, paths)
    assert paths.server_properties.stat().st_mode & 0o077 == 0
    assert broker.admin_password(broker_settings) in paths.server_properties.read_text()


def test_a_tls_port_without_certificate_files_says_how_to_make_them(broker_settings):
    settings = dataclasses.replace(broker_settings, kafka_tls_port=29094)
    with pytest.raises(PdoError, match="PDO_KAFKA_TLS_KEYFILE and PDO_KAFKA_TLS_CERTFILE") as raised:
        broker.write_config_files(settings, broker.BrokerPaths.from_settings(settings))
    assert "deploy/local/tls.sh" in raised.value.hint


def test_a_tls_port_adds_a_sasl_ssl_listener_with_a_pem_keystore(broker_settings, tmp_path):
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\ny\n-----END CERTIFICATE-----\n")
    settings = dataclasses.replace(
        broker_settings,
        kafka_tls_port=29094,
        kafka_tls_keyfile=str(tmp_path / "key.pem"),
        kafka_tls_certfile=str(tmp_path / "cert.pem"),
    )
    paths = broker.BrokerPaths.from_settings(settings)
    broker.write_config_files(settings, paths)
    props = parsed_properties(settings)
    assert "CLIENT_TLS://127.0.0.1:29094" in props["listeners"]
    assert props["listener.name.client_tls.ssl.keystore.type"] == "PEM"
    keystore = paths.tls_keystore.read_text()
    assert keystore.index("PRIVATE KEY") < keystore.index("CERTIFICATE")
    assert paths.tls_keystore.stat().st_mode & 0o077 == 0


def test_a_data_folder_formatted_before_security_is_refused_with_what_to_do(broker_settings):
    paths = broker.BrokerPaths.from_settings(broker_settings)
    paths.data.mkdir(parents=True)
    (paths.data / "meta.properties").write_text("cluster.id=x\n")
    with pytest.raises(PdoError, match="formatted before pdo's broker was secured") as raised:
        broker.format_storage(broker_settings, paths, report=lambda _line: None)
    assert "remove" in raised.value.hint


def test_server_properties_describe_a_single_kraft_node(broker_settings, tmp_path):
    props = parsed_properties(broker_settings)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_java_command_uses_the_heap_setting_and_the_broker_main_class(broker_settings):
    paths = broker.BrokerPaths.from_settings(broker_settings)
    command = broker.java_command(broker_settings, paths, broker.BROKER_MAIN_CLASS, "server.properties")
    assert "-Xmx256m" in command
    assert command[-2:] == ["kafka.Kafka", "server.properties"]
    assert command[command.index("-cp") + 1] == f"{paths.lib}/*"


def test_missing_java_says_what_to_install(monkeypatch):
    monkeypatch.setattr(broker.shutil, "which", lambda name: None)
    with pytest.raises(PdoError) as raised:
        broker.require_tool("java")
    assert "`java` is not on PATH" in str(raised.value)
    assert "apt-get install openjdk-17-jre-headless maven" in raised.value.hint


def test_fetch_without_maven_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(broker.shutil, "which", lambda name: None)
    settings = dataclasses.replace(Settings.from_env(), home=tmp_path)  # no jars fetched there
    with pytest.raises(PdoError, match="`mvn` is not on PATH"):
        broker.fetch_jars(settings, report=lambda _line: None)


def test_cluster_ids_look_like_kafka_uuids():
    for _ in range(200):
        cluster_id = broker.new_cluster_id()
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")


def test_pom_fetches_the_kafka_version_the_launcher_expects():
    pom = (PROJECT_ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{broker.KAFKA_VERSION}</kafka.version>" in pom


def test_the_probe_is_a_framed_api_versions_v0_request():
    request = broker.api_versions_request(correlation_id=7)
    (size,) = struct.unpack_from(">i", request)
    assert size == len(request) - 4
    api_key, api_version, correlation_id = struct.unpack_from(">hhi", request, 4)
    assert (api_key, api_version, correlation_id) == (18, 0, 7)


def test_a_port_nobody_listens_on_does_not_answer():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not broker.answers_api_versions(port, timeout_s=0.2)


def test_start_refuses_a_port_held_by_something_that_is_not_kafka(broker_settings):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        settings = dataclasses.replace(broker_settings, kafka_port=squatter.getsockname()[1])
        with pytest.raises(PdoError, match="in use by something that is not a Kafka broker"):
            broker.start(settings, report=lambda _line: None)


def test_stop_without_a_running_broker_is_harmless(broker_settings):
    lines: list[str] = []
    assert broker.stop(broker_settings, report=lines.append) is False
    assert "no Kafka broker started from" in lines[0]


def test_a_stale_pid_file_does_not_count_as_running(broker_settings):
    paths = broker.BrokerPaths.from_settings(broker_settings)
    paths.root.mkdir(parents=True)
    paths.pid_file.write_text("999999999\n")
    assert broker.status(broker_settings).running is False


# ---------------------------------------------------------------------------------------------- a local cluster

CLUSTER = broker.cluster_nodes(3)


def node_properties(settings: Settings, node: broker.Node) -> dict[str, str]:
    text = broker.server_properties(settings, broker.BrokerPaths.from_settings(settings, node), node)
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_each_node_of_a_cluster_has_its_own_ports_ten_apart_and_its_own_folder(broker_settings, tmp_path):
    third = node_properties(broker_settings, CLUSTER[2])

    assert third["node.id"] == "3"
    assert third["listeners"] == "CLIENT://127.0.0.1:29112,CONTROLLER://127.0.0.1:29113"
    assert third["advertised.listeners"] == "CLIENT://127.0.0.1:29112"
    assert third["log.dirs"] == str(tmp_path / "kafka-cluster" / "node-3" / "data")
    assert broker.bootstrap(broker_settings, 3) == "127.0.0.1:29092,127.0.0.1:29102,127.0.0.1:29112"


def test_every_node_names_the_same_three_voters_and_is_secured_alike(broker_settings):
    nodes = [node_properties(broker_settings, node) for node in CLUSTER]

    assert {props["controller.quorum.voters"] for props in nodes} == {
        "1@127.0.0.1:29093,2@127.0.0.1:29103,3@127.0.0.1:29113"
    }
    for key in (
        "sasl.enabled.mechanisms",
        "authorizer.class.name",
        "super.users",
        "allow.everyone.if.no.acl.found",
    ):
        assert len({props[key] for props in nodes}) == 1


@pytest.mark.parametrize(("profile", "replicas", "in_sync"), [("production", "3", "2"), ("local", "1", "1")])
def test_a_clusters_internal_topics_are_replicated_as_the_profile_says(
    broker_settings, profile, replicas, in_sync
):
    settings = dataclasses.replace(broker_settings, replication_profile=profile)
    props = node_properties(settings, CLUSTER[0])

    assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == replicas
    assert props["transaction.state.log.replication.factor"] == replicas
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == in_sync


def test_the_single_broker_keeps_one_replica_whatever_the_profile(broker_settings):
    props = parsed_properties(dataclasses.replace(broker_settings, replication_profile="production"))

    assert props["default.replication.factor"] == props["min.insync.replicas"] == "1"


def test_every_node_of_a_cluster_is_formatted_with_one_cluster_id(broker_settings):
    ids = {broker.cluster_id(broker_settings, node) for node in CLUSTER}

    assert len(ids) == 1
    assert broker.cluster_id(broker_settings, broker.SINGLE) not in ids


def test_cluster_nodes_run_on_the_node_heap(broker_settings):
    node = CLUSTER[1]
    settings = dataclasses.replace(broker_settings, kafka_node_heap="320m")
    paths = broker.BrokerPaths.from_settings(settings, node)

    command = broker.java_command(settings, paths, broker.BROKER_MAIN_CLASS, "x", node=node)

    assert "-Xmx320m" in command


@pytest.mark.parametrize("nodes", [0, 10])
def test_a_cluster_size_out_of_range_is_refused(nodes):
    with pytest.raises(PdoError, match="a local cluster has 1 to 9 nodes"):
        broker.cluster_nodes(nodes)


def test_status_of_a_cluster_that_never_ran_lists_each_node_stopped(broker_settings):
    statuses = broker.node_statuses(broker_settings, 3)

    assert [state.port for state in statuses] == [29092, 29102, 29112]
    assert not any(state.running for state in statuses)


def test_a_cluster_fences_a_silent_node_sooner_than_kafkas_default_and_the_single_broker_is_unchanged(
    broker_settings,
):
    clustered = node_properties(broker_settings, CLUSTER[0])
    single = parsed_properties(broker_settings)

    assert int(clustered["broker.session.timeout.ms"]) < 9000
    assert int(clustered["broker.heartbeat.interval.ms"]) * 3 <= int(clustered["broker.session.timeout.ms"])
    assert "broker.session.timeout.ms" not in single


def test_a_slow_start_says_it_is_still_waiting_then_gives_up_with_the_setting_to_raise(
    broker_settings, monkeypatch
):
    with socket.socket() as probe:  # a port nothing answers on
        probe.bind(("127.0.0.1", 0))
        silent = probe.getsockname()[1]
    settings = dataclasses.replace(broker_settings, kafka_port=silent, kafka_start_timeout_s=1)
    monkeypatch.setattr(broker, "STILL_WAITING_EVERY_S", 0.3)
    monkeypatch.setattr(broker, "process_alive", lambda pid: True)  # a JVM still starting
    said: list[str] = []

    with pytest.raises(PdoError, match="did not answer") as refused:
        broker.wait_until_answering(4242, settings, broker.BrokerPaths.from_settings(settings), said.append)

    assert said and all(f"still waiting for the broker on port {silent}" in line for line in said)
    assert "PDO_KAFKA_START_TIMEOUT_S" in said[0] and "PDO_KAFKA_START_TIMEOUT_S" in refused.value.hint
