"""The local Apache Kafka broker: one KRaft node (broker and controller in one JVM) that pdo runs itself.

Development and the test suite need a real broker, and Docker is not always there. So pdo fetches the
broker's jars from Maven (`deploy/kafka/pom.xml`), formats a KRaft data folder once, and runs
`java -cp <lib>/* kafka.Kafka server.properties` in the background, the same main class that
`kafka-server-start.sh` in the official distribution runs. Everything it writes lives under
`<run_dir>/kafka/`:

    server.properties   generated on every start from Settings (so a changed port takes effect)
    log4j2.properties   where the broker logs to
    data/               the formatted KRaft log directory (topics and the cluster metadata log)
    logs/               server.log from log4j2, kafka.out with the JVM's own stdout/stderr
    broker.pid          pid of the running broker

Readiness is checked with a raw Kafka Metadata request over a socket: it needs no client library,
answers in milliseconds, and only succeeds once the broker has registered itself and serves requests.

`pdo broker start --nodes 3` runs a real cluster the same way: three JVMs, each both broker and controller
(a three-voter KRaft quorum), secured alike (the admin's SCRAM credential formatted into every node's
storage; ACLs live in the replicated metadata log). Node n listens on every port of the single broker plus
PORT_STRIDE·(n−1) (client 9092, 9102, 9112 by default) and keeps its files in
`<run_dir>/kafka-cluster/node-<n>/`, laid out as above. Kafka's internal topics are replicated as
topics/internal/replication.yaml says for PDO_REPLICATION_PROFILE, never beyond the nodes there are.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from kafka.errors import KafkaError

from pdo.core import topics
from pdo.core.config import Settings, ensure_local_secret, write_private
from pdo.core.errors import PdoError
from pdo.core.kafka import admin_client

KAFKA_VERSION = "4.4.0"  # must match <kafka.version> in deploy/kafka/pom.xml
NODE_ID = 1
BROKER_MAIN_CLASS = "kafka.Kafka"  # what kafka-server-start.sh runs
STORAGE_MAIN_CLASS = "kafka.tools.StorageTool"  # what kafka-storage.sh runs
STOP_TIMEOUT_S = 30.0
INSTALL_HINT = "install Java 17 and Maven, e.g. `apt-get install openjdk-17-jre-headless maven`"

PORT_STRIDE = 10  # node n's ports are the configured ones + PORT_STRIDE * (n - 1)
MAX_NODES = 9

Report = Callable[[str], None]


@dataclass(frozen=True)
class Node:
    """One node of the local Kafka: node `id` (1-based) of a cluster of `nodes` (1: the single broker)."""

    id: int = NODE_ID
    nodes: int = 1

    @property
    def offset(self) -> int:
        return PORT_STRIDE * (self.id - 1)

    @property
    def label(self) -> str:
        return "Kafka broker" if self.nodes == 1 else f"Kafka node {self.id}/{self.nodes}"


SINGLE = Node()


def cluster_nodes(nodes: int) -> list[Node]:
    if not 1 <= nodes <= MAX_NODES:
        raise PdoError(f"--nodes {nodes}: a local cluster has 1 to {MAX_NODES} nodes", "use 1 or 3")
    return [Node(node_id, nodes) for node_id in range(1, nodes + 1)]


def node_settings(settings: Settings, node: Node) -> Settings:
    """The settings as node `node` sees them: its own client, controller and TLS ports."""
    if node.offset == 0:
        return settings
    return replace(
        settings,
        kafka_port=settings.kafka_port + node.offset,
        kafka_controller_port=settings.kafka_controller_port + node.offset,
        kafka_tls_port=settings.kafka_tls_port + node.offset if settings.kafka_tls_port else 0,
    )


def bootstrap(settings: Settings, nodes: int = 1) -> str:
    """PDO_KAFKA_BOOTSTRAP for the local broker or cluster: every node's client listener."""
    return ",".join(f"127.0.0.1:{node_settings(settings, node).kafka_port}" for node in cluster_nodes(nodes))


@dataclass(frozen=True)
class BrokerPaths:
    """Where the broker's jars come from and where its files go, derived from Settings."""

    pom: Path
    lib: Path
    root: Path

    @classmethod
    def from_settings(cls, settings: Settings, node: Node = SINGLE) -> BrokerPaths:
        kafka_deploy = settings.home / "deploy" / "kafka"
        root = settings.run_dir / "kafka"
        if node.nodes > 1:
            root = cluster_root(settings) / f"node-{node.id}"
        return cls(pom=kafka_deploy / "pom.xml", lib=kafka_deploy / "target" / "lib", root=root)

    @property
    def fetched_stamp(self) -> Path:
        # Written only after Maven succeeded, so a half-copied lib folder is fetched again.
        return self.lib / f".fetched-{KAFKA_VERSION}"

    @property
    def server_properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def console_log(self) -> Path:
        return self.logs / "kafka.out"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def secured_stamp(self) -> Path:
        # Written when pdo formats the storage with its admin credential; an older, open folder lacks it.
        return self.data / ".pdo-secured"

    @property
    def tls_keystore(self) -> Path:
        return self.root / "tls-keystore.pem"


def cluster_root(settings: Settings) -> Path:
    return settings.run_dir / "kafka-cluster"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    port: int
    answering: bool


# ---------------------------------------------------------------------------------------------- tools


def require_tool(name: str) -> str:
    """The absolute path of `java` or `mvn`, or a PdoError that says what to install."""
    path = shutil.which(name)
    if path is None:
        raise PdoError(
            f"`{name}` is not on PATH; the local Kafka broker needs Java 17 and Maven", INSTALL_HINT
        )
    return path


# ---------------------------------------------------------------------------------------------- fetch


def jars_present(paths: BrokerPaths) -> bool:
    return paths.fetched_stamp.exists() and (paths.lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()


def fetch_jars(settings: Settings, report: Report = print, force: bool = False) -> Path:
    """Download the broker jars into deploy/kafka/target/lib once; later calls return at once."""
    paths = BrokerPaths.from_settings(settings)
    if jars_present(paths) and not force:
        report(f"Kafka {KAFKA_VERSION} jars already in {paths.lib}")
        return paths.lib
    mvn = require_tool("mvn")
    report(
        f"fetching Apache Kafka {KAFKA_VERSION} broker jars with Maven into {paths.lib} (first time only)..."
    )
    started = time.monotonic()
    # -B: no colour codes or interactive prompts; -q: Maven prints only problems.
    result = subprocess.run([mvn, "-q", "-B", "-f", str(paths.pom), "package"], check=False)
    if result.returncode != 0:
        raise PdoError(
            f"Maven could not fetch the Kafka jars (exit code {result.returncode})",
            f"check network access to Maven Central, then retry `pdo broker fetch`; pom: {paths.pom}",
        )
    paths.fetched_stamp.touch()
    jar_count = len(list(paths.lib.glob("*.jar")))
    report(f"fetched {jar_count} jars in {time.monotonic() - started:.1f} s")
    return paths.lib


# ---------------------------------------------------------------------------------------------- config


CONTROLLER_USER = "controller"
ADMIN_USER = "admin"
SCRAM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def admin_password(settings: Settings) -> str:
    """The bootstrap super user's password: PDO_KAFKA_PASSWORD when this process is the admin, else made once
    per run dir and kept in <run_dir>/secrets/kafka-admin (the file every local client falls back to)."""
    if settings.kafka_username == ADMIN_USER and settings.kafka_password:
        return settings.kafka_password
    return ensure_local_secret(settings.run_dir, f"kafka-{ADMIN_USER}")


def _jaas(module: str, **options: str) -> str:
    quoted = " ".join(f'{key}="{value}"' for key, value in options.items())
    return f"org.apache.kafka.common.security.{module} required {quoted};"


def security_properties(settings: Settings, paths: BrokerPaths) -> dict[str, object]:
    """SASL on every listener, Kafka's StandardAuthorizer, and nothing allowed without an ACL.

    Clients authenticate with SCRAM-SHA-512 (users live in the cluster metadata; the admin is added when
    the storage is formatted). KRaft controllers cannot use SCRAM (KAFKA-14369), so the loopback-only
    controller listener uses SASL/PLAIN with one static user, a super user like the admin: the quorum's
    own requests pass the authorizer too.
    """
    admin = admin_password(settings)
    controller = ensure_local_secret(settings.run_dir, "kafka-controller")
    scram_login = _jaas("scram.ScramLoginModule", username=ADMIN_USER, password=admin)
    properties: dict[str, object] = {
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "plain.PlainLoginModule",
            username=CONTROLLER_USER,
            password=controller,
            **{f"user_{CONTROLLER_USER}": controller},
        ),
        "listener.name.client.scram-sha-512.sasl.jaas.config": scram_login,
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{ADMIN_USER};User:{CONTROLLER_USER}",
        "allow.everyone.if.no.acl.found": "false",
    }
    if settings.kafka_tls_port:
        properties.update(
            {
                "listener.name.client_tls.scram-sha-512.sasl.jaas.config": scram_login,
                "listener.name.client_tls.ssl.keystore.type": "PEM",
                "listener.name.client_tls.ssl.keystore.location": paths.tls_keystore,
            }
        )
    return properties


def listener_properties(settings: Settings) -> dict[str, object]:
    """CLIENT (SASL_PLAINTEXT), optionally CLIENT_TLS (SASL_SSL), and CONTROLLER, all on loopback."""
    host = "127.0.0.1"
    client = f"CLIENT://{host}:{settings.kafka_port}"
    tls = f",CLIENT_TLS://{host}:{settings.kafka_tls_port}" if settings.kafka_tls_port else ""
    return {
        "listeners": f"{client}{tls},CONTROLLER://{host}:{settings.kafka_controller_port}",
        "advertised.listeners": f"{client}{tls}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "CLIENT",
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CLIENT_TLS:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
    }


def quorum_voters(settings: Settings, nodes: int) -> str:
    return ",".join(
        f"{node.id}@127.0.0.1:{node_settings(settings, node).kafka_controller_port}"
        for node in cluster_nodes(nodes)
    )


def replication_properties(settings: Settings, nodes: int) -> dict[str, object]:
    """Kafka's internal topics and the defaults faust's topics take (replication -1), from the declared
    internal replication of the profile in force; a single node holds one replica whatever the profile."""
    internal = topics.internal_replication(settings).on(nodes)
    return {
        "default.replication.factor": internal.factor,
        "min.insync.replicas": internal.min_insync,
        "offsets.topic.replication.factor": internal.factor,
        "transaction.state.log.replication.factor": internal.factor,
        "transaction.state.log.min.isr": internal.min_insync,
        "share.coordinator.state.topic.replication.factor": internal.factor,
        "share.coordinator.state.topic.min.isr": internal.min_insync,
    }


def failover_properties(nodes: int) -> dict[str, object]:
    """A cluster's controller fences a node that stopped heartbeating, and moves its partition leaders,
    after 4 s rather than Kafka's 9 s: a SIGKILLed node then stalls its partitions' writers half as long.
    Heartbeats every second keep a live but busy node (a GC pause on a shared 2-core machine) in."""
    if nodes == 1:
        return {}
    return {"broker.heartbeat.interval.ms": 1000, "broker.session.timeout.ms": 4000}


def server_properties(settings: Settings, paths: BrokerPaths, node: Node = SINGLE) -> str:
    """One node's configuration, both broker and controller, sized for a small machine. `settings` are the
    configured ones; the node's own ports are derived from them."""
    own = node_settings(settings, node)
    settings_lines = {
        "process.roles": "broker,controller",
        "node.id": node.id,
        # A static quorum (rather than `format --standalone`) keeps no endpoint in the metadata log, so
        # changing PDO_KAFKA_CONTROLLER_PORT later only needs a new properties file.
        "controller.quorum.voters": quorum_voters(settings, node.nodes),
        **listener_properties(own),
        **security_properties(own, paths),
        "log.dirs": paths.data,
        # Topics are created on purpose by `pdo topics`, never by a typo in a producer.
        "auto.create.topics.enable": "false",
        **replication_properties(settings, node.nodes),
        **failover_properties(node.nodes),
        # Fewer internal partitions than the default 50: quicker first consumer group on 2 cores.
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.num.partitions": 10,
        # Consumers in tests join a group and should get partitions at once, not after 3 s.
        "group.initial.rebalance.delay.ms": 0,
        # Workers keep 3 s sessions so a dead worker's partitions move within ~4 s (pdo.core.streams);
        # Kafka refuses sessions below this minimum (6 s by default).
        "group.min.session.timeout.ms": 2000,
        # Modest thread counts for a 2-core machine.
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 4,
        "num.partitions": 1,
        "log.retention.hours": 168,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.check.interval.ms": 300000,
    }
    lines = ["# Generated by `pdo broker start` from pdo's Settings on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings_lines.items()]
    return "\n".join(lines) + "\n"


def log4j_properties(paths: BrokerPaths) -> str:
    """log4j2 settings: INFO to a size-capped logs/server.log, chatty request/state loggers quieter."""
    log = paths.server_log
    return f"""# Generated by `pdo broker start`.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def write_config_files(settings: Settings, paths: BrokerPaths, node: Node = SINGLE) -> None:
    """server.properties and log4j2.properties of one node, from the configured settings."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    if settings.kafka_tls_port:
        write_tls_keystore(settings, paths)
    write_private(paths.server_properties, server_properties(settings, paths, node))  # it holds passwords
    paths.log4j_properties.write_text(log4j_properties(paths))


def write_tls_keystore(settings: Settings, paths: BrokerPaths) -> None:
    """Kafka's PEM keystore is one file holding the private key (PKCS#8, unencrypted) and the chain."""
    sources = {
        "PDO_KAFKA_TLS_KEYFILE": settings.kafka_tls_keyfile,
        "PDO_KAFKA_TLS_CERTFILE": settings.kafka_tls_certfile,
    }
    missing = [name for name, value in sources.items() if not value or not Path(value).is_file()]
    if missing:
        raise PdoError(
            f"PDO_KAFKA_TLS_PORT={settings.kafka_tls_port} needs {' and '.join(missing)} (PEM files)",
            "make a development CA and broker certificate with `deploy/local/tls.sh <folder>`",
        )
    key = Path(settings.kafka_tls_keyfile).read_text()
    chain = Path(settings.kafka_tls_certfile).read_text()
    write_private(paths.tls_keystore, key.rstrip() + "\n" + chain)


def new_cluster_id() -> str:
    """A Kafka cluster id as `kafka-storage random-uuid` makes: 16 random bytes, URL-safe base64, unpadded."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's own generator rejects ids starting with "-" so they never look like a command-line flag.
        if not cluster_id.startswith("-"):
            return cluster_id


def cluster_id(settings: Settings, node: Node) -> str:
    """A new id for a single broker; for a cluster, the one id every node is formatted with (made once)."""
    if node.nodes == 1:
        return new_cluster_id()
    stored = cluster_root(settings) / "cluster-id"
    if not stored.exists():
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(new_cluster_id() + "\n")
    return stored.read_text().strip()


def java_command(
    settings: Settings, paths: BrokerPaths, main_class: str, *args: str, node: Node = SINGLE
) -> list[str]:
    """java with the broker's classpath, heap and logging; used for both StorageTool and the broker."""
    heap = settings.kafka_heap if node.nodes == 1 else settings.kafka_node_heap
    return [
        require_tool("java"),
        f"-Xmx{heap}",
        "-Xms128m",
        # The JVM flags kafka-run-class.sh uses, minus its GC logging.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExitOnOutOfMemoryError",
        f"-XX:ErrorFile={paths.logs}/hs_err_pid%p.log",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j_properties}",
        # Otherwise log4j2 closes its files in its own shutdown hook while Kafka's hook is still
        # shutting down, and the end of a clean shutdown never reaches server.log.
        "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        f"{paths.lib}/*",
        main_class,
        *args,
    ]


def is_formatted(paths: BrokerPaths) -> bool:
    return (paths.data / "meta.properties").exists()


def format_storage(
    settings: Settings, paths: BrokerPaths, report: Report = print, node: Node = SINGLE
) -> None:
    """Format the KRaft data folder once; a formatted folder is kept, with its topics, across restarts."""
    if is_formatted(paths):
        if not paths.secured_stamp.exists():
            raise PdoError(
                f"{paths.data} was formatted before pdo's broker was secured (no admin credential in it)",
                f"remove {paths.data} (its topics go with it) and run `pdo broker start` again",
            )
        return
    formatted_id = cluster_id(settings, node)
    report(f"formatting KRaft storage in {paths.data} (cluster id {formatted_id})")
    scram_admin = f"{SCRAM}=[name={ADMIN_USER},password={admin_password(settings)}]"
    command = java_command(
        settings,
        paths,
        STORAGE_MAIN_CLASS,
        "format",
        "-t",
        formatted_id,
        "-c",
        str(paths.server_properties),
        # KIP-900: the admin's SCRAM credential goes into the metadata log before the broker first starts,
        # since the broker itself authenticates as the admin on its client listener.
        "--add-scram",
        scram_admin,
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PdoError(
            f"formatting the Kafka storage failed:\n{(result.stdout + result.stderr).strip()}",
            f"remove {paths.data} and retry `pdo broker start`",
        )
    paths.secured_stamp.touch()


# ---------------------------------------------------------------------------------------------- probing


def api_versions_request(correlation_id: int = 1) -> bytes:
    """An ApiVersions v0 request: the one request a SASL listener answers before authentication."""
    client_id = b"pdo-broker-probe"
    header = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id  # api_key 18
    return struct.pack(">i", len(header)) + header


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def answers_api_versions(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """True when a Kafka broker on host:port answers ApiVersions without error (no credentials needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(api_versions_request())
            (size,) = struct.unpack(">i", _receive_exactly(sock, 4))
            answered_id, error_code = struct.unpack_from(">ih", _receive_exactly(sock, size))
            return answered_id == 1 and error_code == 0
    except (OSError, ConnectionError, struct.error):
        return False


def as_admin(settings: Settings, bootstrap_servers: str) -> Settings:
    """The settings the launcher talks to its own broker with: the admin over SASL_PLAINTEXT, short timeouts."""
    return replace(
        settings,
        kafka_username=ADMIN_USER,
        kafka_password=admin_password(settings),
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_bootstrap=bootstrap_servers,
        kafka_timeout_s=2,
    )


def serves_authenticated_clients(settings: Settings) -> bool:
    """True once the broker lists itself to the admin over SASL: registered, its authorizer loaded."""
    try:
        with admin_client(as_admin(settings, f"127.0.0.1:{settings.kafka_port}")) as client:
            return bool(client.describe_cluster()["brokers"])
    except PdoError:
        return False


def under_replicated(settings: Settings, nodes: int) -> int | None:
    """How many partitions of the cluster have fewer in-sync replicas than replicas; None when it cannot say."""
    try:
        with admin_client(as_admin(settings, bootstrap(settings, nodes))) as client:
            if len(client.describe_cluster()["brokers"]) < nodes:
                return None  # a node is not registered yet: its replicas cannot be in sync
            described = client.describe_topics()
    except (PdoError, KafkaError):
        return None
    return sum(
        len(partition["isr_nodes"]) < len(partition["replica_nodes"])
        for topic in described
        for partition in topic["partitions"]
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------- process


def read_pid(paths: BrokerPaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True while pid is a running Kafka broker; reaps it first if it is our own exited child."""
    try:
        # When this Python process started the broker (tests do), an exited broker stays a zombie,
        # which kill(pid, 0) would still report as alive, until it is reaped here.
        reaped_pid, _ = os.waitpid(pid, os.WNOHANG)
        if reaped_pid == pid:
            return False
    except ChildProcessError:
        pass  # not our child: someone else reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _looks_like_broker(pid)


def _looks_like_broker(pid: int) -> bool:
    # After a reboot the pid in a stale pid file may belong to an unrelated process: never signal that.
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (macOS): trust the pid file
    try:
        arguments = (proc / "cmdline").read_bytes()
        if not arguments:
            # Empty while the process is still exec'ing java (just spawned), and for a zombie.
            return " Z " not in (proc / "stat").read_text().split(")", 1)[-1][:3]
        return BROKER_MAIN_CLASS.encode() in arguments.split(b"\0")
    except OSError:
        return False


def running_pid(paths: BrokerPaths) -> int | None:
    pid = read_pid(paths)
    return pid if pid is not None and process_alive(pid) else None


def spawn_detached(command: list[str], console_log: Path) -> int:
    """Start the broker in its own session with output to console_log, so it outlives this command."""
    # posix_spawn rather than subprocess.Popen: there is no Popen object left behind to warn
    # "subprocess is still running" when this process forgets about the long-lived broker.
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(console_log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(command[0], command, dict(os.environ), file_actions=file_actions, setsid=True)


def log_tail(paths: BrokerPaths, lines: int = 30) -> str:
    """The last lines of the JVM output and server.log, to show why a broker did not come up."""
    parts = []
    for log in (paths.console_log, paths.server_log):
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                parts.append(f"--- {log} ---\n" + "\n".join(tail))
    return "\n".join(parts) or "(the broker wrote no log)"


def wait_until_answering(pid: int, settings: Settings, paths: BrokerPaths, report: Report = print) -> float:
    """Seconds until the new broker served the admin, saying every few seconds that it still waits (a cold
    JVM on a busy machine takes a while); PdoError if it exits or the timeout passes."""
    started = time.monotonic()
    deadline = started + settings.kafka_start_timeout_s
    next_word = started + STILL_WAITING_EVERY_S
    while time.monotonic() < deadline:
        if answers_api_versions(settings.kafka_port, timeout_s=0.5) and serves_authenticated_clients(
            settings
        ):
            return time.monotonic() - started
        if time.monotonic() >= next_word:
            report(
                f"  still waiting for the broker on port {settings.kafka_port}: {time.monotonic() - started:.0f} s "
                f"of at most {settings.kafka_start_timeout_s} s (PDO_KAFKA_START_TIMEOUT_S)"
            )
            next_word += STILL_WAITING_EVERY_S
        if not process_alive(pid):
            paths.pid_file.unlink(missing_ok=True)
            raise PdoError(
                f"the Kafka broker exited during startup:\n{log_tail(paths)}",
                f"see {paths.logs}; a port in use, a damaged {paths.data} (remove it) or too little "
                "memory (PDO_KAFKA_HEAP) are the usual causes",
            )
        time.sleep(0.25)
    raise PdoError(
        f"the Kafka broker (pid {pid}) did not answer on port {settings.kafka_port} within "
        f"{settings.kafka_start_timeout_s} s:\n{log_tail(paths)}",
        f"it is still running; see {paths.logs}, stop it with `pdo broker stop`, "
        "or raise PDO_KAFKA_START_TIMEOUT_S",
    )


# ---------------------------------------------------------------------------------------------- commands


def start(settings: Settings | None = None, report: Report = print, nodes: int = 1) -> BrokerStatus:
    """Start the local broker (or each node of a local cluster) unless it already answers; wait until every
    node serves the admin. The status returned is node 1's."""
    settings = settings or Settings.from_env()
    pending = []
    for node in cluster_nodes(nodes):
        up = _already_up(settings, node, report)
        if up is None:
            pending.append(node)
        elif nodes == 1:
            return up  # possibly a broker pdo did not start, which the single-broker default accepts
    for node in pending:
        require_ports_free(node_settings(settings, node), node)
    if pending:
        require_tool("java")
        fetch_jars(settings, report)
    for node in pending:
        prepare_node(settings, node, report)
    # Every node is spawned before any is waited for: a cluster's quorum needs a majority of its voters.
    started = time.monotonic()
    pids = {node: spawn_node(settings, node, report) for node in pending}
    for node, pid in pids.items():
        wait_until_ready(settings, node, pid, started, report)
    if nodes > 1:
        report(
            f"Kafka cluster of {nodes} nodes ready; clients use PDO_KAFKA_BOOTSTRAP={bootstrap(settings, nodes)}"
        )
    return status(settings, nodes)


def _already_up(settings: Settings, node: Node, report: Report) -> BrokerStatus | None:
    """The node's status when pdo started it before (waiting for it if still starting) or, for the single
    broker, when another broker answers on its port; None when it has to be started."""
    own = node_settings(settings, node)
    paths = BrokerPaths.from_settings(settings, node)
    port = own.kafka_port
    existing = running_pid(paths)
    if existing is not None:
        if answers_api_versions(port):
            report(f"{node.label} already running (pid {existing}) on 127.0.0.1:{port}; nothing to do")
            return BrokerStatus(running=True, pid=existing, port=port, answering=True)
        report(f"{node.label} (pid {existing}) is running but not answering yet; waiting for it")
        elapsed = wait_until_answering(existing, own, paths, report)
        report(f"{node.label} ready after {elapsed:.1f} s more")
        return BrokerStatus(running=True, pid=existing, port=port, answering=True)
    if node.nodes == 1 and answers_api_versions(port):
        report(f"a Kafka broker not started from {paths.root} already answers on 127.0.0.1:{port}; using it")
        return BrokerStatus(running=True, pid=None, port=port, answering=True)
    return None


def prepare_node(settings: Settings, node: Node, report: Report = print) -> BrokerPaths:
    """Check the node's ports, write its configuration and format its storage (once)."""
    paths = BrokerPaths.from_settings(settings, node)
    require_ports_free(node_settings(settings, node), node)
    write_config_files(settings, paths, node)
    format_storage(settings, paths, report, node)
    return paths


# How often a start that is still waiting says so.
STILL_WAITING_EVERY_S = 5.0


def require_ports_free(settings: Settings, node: Node = SINGLE) -> None:
    suffix = "" if node.offset == 0 else f" + {node.offset} for node {node.id}"
    for name, port in (
        ("PDO_KAFKA_PORT", settings.kafka_port),
        ("PDO_KAFKA_CONTROLLER_PORT", settings.kafka_controller_port),
    ):
        if not port_is_free(port):
            raise PdoError(
                f"port {port} ({name}{suffix}) is in use by something that is not a Kafka broker pdo can use",
                f"stop whatever listens there or set {name} to a free port",
            )


def spawn_node(settings: Settings, node: Node, report: Report = print) -> int:
    own = node_settings(settings, node)
    paths = BrokerPaths.from_settings(settings, node)
    command = java_command(settings, paths, BROKER_MAIN_CLASS, str(paths.server_properties), node=node)
    heap = settings.kafka_heap if node.nodes == 1 else settings.kafka_node_heap
    report(
        f"starting {node.label} (Kafka {KAFKA_VERSION}) on 127.0.0.1:{own.kafka_port} "
        f"(controller {own.kafka_controller_port}, heap {heap}), logs in {paths.logs}"
    )
    pid = spawn_detached(command, paths.console_log)
    paths.pid_file.write_text(f"{pid}\n")
    return pid


def wait_until_ready(settings: Settings, node: Node, pid: int, started: float, report: Report) -> None:
    own = node_settings(settings, node)
    wait_until_answering(pid, own, BrokerPaths.from_settings(settings, node), report)
    report(
        f"{node.label} ready in {time.monotonic() - started:.1f} s (pid {pid}, bootstrap 127.0.0.1:{own.kafka_port})"
    )


def start_node(settings: Settings, node: Node, report: Report = print) -> int:
    """Start one stopped node of a running cluster (a rolling restart, a node back after a crash); its pid."""
    prepare_node(settings, node, report)
    started = time.monotonic()
    pid = spawn_node(settings, node, report)
    wait_until_ready(settings, node, pid, started, report)
    return pid


def restart(settings: Settings, report: Report = print, nodes: int = 1) -> None:
    """Restart the broker; a cluster node by node, each only once every partition is back in sync, so a
    topic with min.insync.replicas 2 of 3 keeps taking writes and no leader waits for a stopped node."""
    for node in cluster_nodes(nodes):
        stop_node(settings, node, report)
        start_node(settings, node, report)
        if nodes > 1:
            wait_until_in_sync(settings, nodes, report)


def wait_until_in_sync(settings: Settings, nodes: int, report: Report = print) -> float:
    """Seconds until no partition of the cluster lacks an in-sync replica; PdoError after the start timeout."""
    started = time.monotonic()
    deadline = started + settings.kafka_start_timeout_s
    while time.monotonic() < deadline:
        if under_replicated(settings, nodes) == 0:
            elapsed = time.monotonic() - started
            report(f"every partition in sync on all {nodes} nodes after {elapsed:.1f} s")
            return elapsed
        time.sleep(0.5)
    raise PdoError(
        f"partitions stayed under-replicated for {settings.kafka_start_timeout_s} s after a node restarted",
        "see the nodes' server.log; do not stop another node until `pdo broker status --nodes N` shows all "
        "running and the replicas have caught up",
    )


def stop(settings: Settings | None = None, report: Report = print, nodes: int = 1) -> bool:
    """Stop the broker (or every node of the cluster) pdo started from this run dir: SIGTERM, up to 30 s of
    clean shutdown, then SIGKILL. False when none was running."""
    settings = settings or Settings.from_env()
    # Every node is told at once: one by one, the last would wait for a quorum that has already gone.
    running = [(node, pid) for node in cluster_nodes(nodes) if (pid := _signal_stop(settings, node, report))]
    for node, pid in running:
        _wait_stopped(settings, node, pid, report)
    return bool(running)


def stop_node(settings: Settings, node: Node = SINGLE, report: Report = print) -> bool:
    """Stop one node (the single broker by default); False when it was not running."""
    pid = _signal_stop(settings, node, report)
    if pid is not None:
        _wait_stopped(settings, node, pid, report)
    return pid is not None


def _signal_stop(settings: Settings, node: Node, report: Report) -> int | None:
    """SIGTERM to the node's JVM (Kafka's clean shutdown); its pid, or None when it was not running."""
    paths = BrokerPaths.from_settings(settings, node)
    port = node_settings(settings, node).kafka_port
    pid = running_pid(paths)
    if pid is None:
        paths.pid_file.unlink(missing_ok=True)
        others = " (another broker answers on that port; pdo did not start it and leaves it alone)"
        report(
            f"no {node.label} started from {paths.root} is running"
            + (others if answers_api_versions(port) else "")
        )
        return None
    report(f"stopping {node.label} (pid {pid})...")
    os.kill(pid, signal.SIGTERM)
    return pid


def _wait_stopped(settings: Settings, node: Node, pid: int, report: Report) -> None:
    started = time.monotonic()
    if not wait_for_exit(pid, STOP_TIMEOUT_S):
        report(f"{node.label} did not shut down within {STOP_TIMEOUT_S:.0f} s; killing it")
        os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, 5.0)
    BrokerPaths.from_settings(settings, node).pid_file.unlink(missing_ok=True)
    report(f"{node.label} stopped in {time.monotonic() - started:.1f} s")


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.2)
    return not process_alive(pid)


def status(settings: Settings | None = None, nodes: int = 1) -> BrokerStatus:
    """Node 1's status (the single broker's); `node_statuses` gives every node's."""
    return node_statuses(settings or Settings.from_env(), nodes)[0]


def node_statuses(settings: Settings, nodes: int = 1) -> list[BrokerStatus]:
    statuses = []
    for node in cluster_nodes(nodes):
        pid = running_pid(BrokerPaths.from_settings(settings, node))
        port = node_settings(settings, node).kafka_port
        statuses.append(
            BrokerStatus(running=pid is not None, pid=pid, port=port, answering=answers_api_versions(port))
        )
    return statuses
