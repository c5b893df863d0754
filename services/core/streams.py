"""faust-streaming apps for pdo's stream processors: one factory, the same settings in every service."""

from __future__ import annotations

import faust

from pdo.core import kafka, topics, worker_metrics
from pdo.core.config import Settings
from pdo.core.topics import TopicId

SESSION_TIMEOUT_S = 10.0


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
        # faust's 60 s default is a minute without deliveries or metering. Heartbeats run beside the agents
        # and nothing blocks the event loop, so a live worker keeps its session easily.
        broker_session_timeout=SESSION_TIMEOUT_S,
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
