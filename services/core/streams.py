"""faust-streaming apps for pdo's stream processors: one factory, the same settings in every service."""

from __future__ import annotations

import faust

from pdo.core import kafka, topics, worker_metrics
from pdo.core.config import Settings
from pdo.core.topics import TopicId

# When a worker dies (SIGKILL, a lost host), its partitions wait for its session to expire before the group
# hands them to another: session 3 s, heartbeat every 0.75 s (a third of it or less, so a live worker misses
# three or four before it is dropped), and the survivor learns of the rebalance at its next heartbeat — measured
# by bench/recovery.py at 2.3-3.1 s from the kill to the first delivery from the dead worker's partitions
# (with 10 s it was 9.9 s). The price: a worker whose event loop is held for 3 s (nothing in an agent may
# block it: see FIELD-NOTES; a long GC pause, a starved 2-core machine) is dropped and its partitions move,
# a rebalance that redelivers its unacknowledged batch (harmless: sharing and metering are idempotent by
# delivery id). The broker must allow sessions this short: group.min.session.timeout.ms <= 3000 (Kafka's
# default is 6000; `pdo broker start` sets 2000; set it on a production cluster, see README "Operating").
SESSION_TIMEOUT_S = 3.0
HEARTBEAT_INTERVAL_S = 0.75


def make_app(service_id: str, settings: Settings) -> faust.App:
    """A faust app whose id is the service's consumer group; values stay bytes for our Avro codec.

    Topics come from topics/ (`pdo topics apply`), never from faust's own declaration, so partition
    counts stay as declared; faust still creates its internal changelog and leader topics, replicated as the
    internal topics are (topics/internal/replication.yaml).
    """
    # faust makes its own data folder but not the folders above it; a fresh PDO_RUN_DIR has none.
    (settings.run_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        service_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(settings.run_dir / "faust" / service_id),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=internal_replication_factor(settings),
        producer_acks=-1,
        # A killed worker's partitions wait for its session to expire before another worker takes them:
        # faust's 60 s default is a minute without deliveries or metering (see SESSION_TIMEOUT_S).
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
    )
    worker_metrics.watch(app)  # every worker exports its consumer lag and when it last saw a record
    return app


def internal_replication_factor(settings: Settings) -> int:
    """Replicas of faust's changelog and leader topics: the profile's internal replication, capped at the
    brokers PDO_KAFKA_BOOTSTRAP lists (faust creates them itself and cannot ask the cluster's size first;
    their min.insync.replicas is the broker's default, set from the same file)."""
    listed = len([server for server in settings.kafka_bootstrap.split(",") if server.strip()])
    return topics.internal_replication(settings).on(listed).factor


def credentials(settings: Settings) -> faust.SASLCredentials:
    """The worker's SASL/SCRAM credentials (and TLS context for SASL_SSL), as for every other client."""
    username, password = kafka.require_credentials(settings)
    return faust.SASLCredentials(
        username=username,
        password=password,
        mechanism=kafka.SASL_MECHANISM,
        ssl_context=kafka.ssl_context(settings),
    )


def source(app: faust.App, topic: TopicId, settings: Settings) -> faust.TopicT:
    """A declared topic as a faust source; faust must not try to create or alter it."""
    return app.topic(topics.name(topic, settings), internal=False, allow_empty=True)


def run_worker(app: faust.App, loglevel: str = "warn") -> None:
    """Run the app's agents in the foreground until interrupted (faust's own worker, its signal handling)."""
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
