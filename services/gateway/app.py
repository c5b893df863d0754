"""The gateway's HTTP API: providers, tenants and operators call the catalog and authorization services.

`create_app` takes the services ready-made, so tests pass real ones (or fakes) and the CLI wires them to
Kafka, the registry and SQL. Endpoints are plain `def`s: the services block on SQL and on Kafka acks, so
FastAPI runs them in its threadpool and the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import fastapi
import sqlalchemy as sa
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine

from pdo.audit.public import appendability
from pdo.core.config import Settings
from pdo.core.errors import Unavailable
from pdo.core.events import OnDemandPublisher, utc_now
from pdo.core.http_metrics import MetricsMiddleware
from pdo.core.outbox import OutboxRelay, Publisher
from pdo.gateway import (
    history,
    routes_audit,
    routes_billing,
    routes_console,
    routes_datasets,
    routes_deadletters,
    routes_grants,
    routes_ingest,
    routes_kafka,
    routes_principals,
    routes_requests,
    routes_series,
    routes_streams,
    routes_usage,
)
from pdo.gateway import outbox as access_outbox
from pdo.gateway.auth import require_metrics_reader
from pdo.gateway.caps import Caps
from pdo.gateway.errors import UnexpectedErrorMiddleware, install_error_handlers
from pdo.gateway.idempotency import IdempotencyStore
from pdo.gateway.kafka_credentials import KafkaCredentialIssuer
from pdo.gateway.limits import BodyLimitMiddleware
from pdo.gateway.metrics import gateway_metrics
from pdo.gateway.principals import PrincipalStore
from pdo.publishing.public import FeedPublishers, RecordIdWindow

log = logging.getLogger(__name__)

DESCRIPTION = """\
pdo's API for data providers (register and maintain datasets, publish records to their feeds), tenants
(request access, read their own requests, grants, usage and statements, stream their delivered records) and
operators (review requests, suspend, resume and revoke grants, see all usage, read every statement and asset
report, read dead letters, and read time series for charts under /v1/series). The console at /console works
against this API for operators, tenants and auditors (GET /v1/me tells a key's holder who it is). Providers see the usage
and asset reports of their own datasets. Auditors read the audit log under /v1/audit (and nothing else);
tenants read the entries about themselves there, with proofs to check offline.

Authenticate with an API key (`pdo principals add` / `pdo principals key` issue them) sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Every refusal reads
`{"error": kind, "message": ..., "hint": ...}`.
"""


def create_app(
    settings: Settings,
    catalog: Any,
    authorization: Any,
    engine: Engine,
    principals: PrincipalStore | None = None,
    feeds: Any | None = None,
    streams: routes_streams.StreamHub | None = None,
    dead_letters: routes_deadletters.DeadLetterSource | None = None,
    kafka_credentials: KafkaCredentialIssuer | None = None,
    feed_offsets: routes_billing.FeedOffsets | None = None,
    access_events: Publisher | None = None,
    relay_interval_s: float | None = None,
) -> fastapi.FastAPI:
    """The gateway over `engine` (migrated already: pdo.core.db.upgrade) and the two services.

    `feeds` gives the HTTP ingest a FeedPublisher per dataset (`for_dataset(dataset)`); by default a
    FeedPublishers over `settings`, connecting to Kafka on the first ingest and closed with the app.
    `streams` serves tenants' HTTP streams (Kafka consumers, a codec); by default a StreamHub over
    `settings`, closed with the app.
    `dead_letters` gives GET /v1/dead-letters the newest dead letters; by default read from the topic with
    the streams' codec.
    `kafka_credentials` issues and revokes tenants' and providers' Kafka users; by default on the broker.
    `feed_offsets` opens what a listing measures a feed's activity with; by default a Kafka consumer.
    `access_events` publishes access acts to pdo.access (the outbox of principal and key changes, and the
    record made before a Kafka credential changes); by default an OnDemandPublisher over `settings`.
    `relay_interval_s`: how often the app publishes what its outbox still holds (the served gateway's
    relay: changes whose prompt publish failed, or made by `pdo principals`); None runs no relay.
    """
    metrics = gateway_metrics()
    own_feeds = feeds is None
    record_ids = RecordIdWindow(engine, settings.record_id_window_s)
    feeds = feeds if feeds is not None else FeedPublishers(settings, record_ids=record_ids)
    idempotency_store = IdempotencyStore(engine, settings.idempotency_retention_s)
    own_streams = streams is None
    streams = streams if streams is not None else routes_streams.StreamHub(settings)
    own_access_events: OnDemandPublisher | None = None
    if access_events is None:
        access_events = own_access_events = OnDemandPublisher(settings)
    relay = access_outbox.relay(engine, access_events, settings.kafka_timeout_s)
    housekeeping = Housekeeping(relay, idempotency_store, record_ids)

    @asynccontextmanager
    async def lifespan(_app: fastapi.FastAPI) -> AsyncIterator[None]:
        relaying = (
            None if relay_interval_s is None else asyncio.create_task(_relay(housekeeping, relay_interval_s))
        )
        sampling = asyncio.create_task(_sample(_app.state.refusal_history, _app.state.lag_history))
        yield
        sampling.cancel()
        if relaying is not None:
            relaying.cancel()
        if own_feeds:
            feeds.close()
        if own_streams:
            streams.close()
        if own_access_events is not None:
            own_access_events.close()  # its registry client's connection, opened by the first access event

    app = fastapi.FastAPI(
        title="pdo gateway",
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
    )
    app.state.engine = engine  # metering usage is read straight from its tables
    app.state.catalog = catalog
    app.state.authorization = authorization
    app.state.principals = principals or PrincipalStore(engine, access_outbox.prompt(relay).publish_soon)
    app.state.engine = engine  # statements and asset reports are read straight from SQL
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.metrics_token = settings.secret("metrics_token") if settings.metrics_token else ""
    app.state.caps = Caps(settings, metrics.limited)
    app.state.feeds = feeds
    app.state.idempotency = idempotency_store
    app.state.ingested_records = routes_ingest.ingested_records_counter(metrics.registry)
    app.state.streams = streams
    app.state.stream_metrics = routes_streams.stream_metrics(metrics.registry)
    app.state.kafka_credentials = kafka_credentials or KafkaCredentialIssuer(
        settings, lambda provider_id: [d.dataset_id for d in catalog.list(provider_id)], events=access_events
    )
    app.state.feed_offsets = feed_offsets or routes_billing.broker_offsets(settings)
    app.state.dead_letters = dead_letters or routes_deadletters.topic_reader(settings, lambda: streams.codec)
    app.state.refusal_history = history.History(history.counter_reading(metrics.refusals))
    app.state.lag_sources = history.local_worker_endpoints(settings.metrics_host, settings.metrics_port)
    app.state.lag_history = history.History(history.worker_lag_reading(app.state.lag_sources))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.gateway_max_body_bytes)
    app.add_middleware(UnexpectedErrorMiddleware, refusals=metrics.refusals)
    app.add_middleware(MetricsMiddleware, requests=metrics.requests)
    install_error_handlers(app, metrics.refusals, metrics.audit_refused)
    metrics.audit_fail_closed.set_function(lambda: float(audit_fail_closed(settings, engine)))
    for router in (
        routes_datasets.router,
        routes_ingest.router,
        routes_requests.router,
        routes_grants.router,
        routes_streams.router,
        routes_deadletters.router,
        routes_billing.router,
        routes_usage.router,
        routes_series.router,
        routes_kafka.router,
        routes_audit.router,
        routes_principals.router,
        routes_console.console_router(),
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["operations"], summary="Liveness and database reachability (no key needed)")
    def healthz() -> dict:
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            raise Unavailable("the database does not answer", hint="check PDO_DATABASE_URL") from None
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint(request: fastapi.Request) -> Response:
        # Per-tenant usage and refusals: operators' data, not the public's.
        require_metrics_reader(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def root() -> JSONResponse:
        return JSONResponse(
            {"service": "pdo gateway", "docs": "/docs", "openapi": "/openapi.json", "console": "/console"}
        )

    return app


def audit_fail_closed(settings: Settings, engine: Engine) -> bool:
    """True while approvals and resumptions are refused for want of an appendable audit log (read at scrape)."""
    limit_s = settings.audit_fail_closed_after_s
    return limit_s > 0 and not appendability(engine, limit_s).appendable


@dataclass(frozen=True)
class Housekeeping:
    """What the gateway's round does besides serving: its outbox, and forgetting what is past its retention."""

    relay: OutboxRelay
    idempotency: IdempotencyStore
    record_ids: RecordIdWindow

    def round(self) -> None:
        self.relay.publish_all()
        access_outbox.OUTBOX.prune_sent(self.relay.engine, utc_now())
        self.idempotency.prune()
        self.record_ids.prune()


async def _relay(housekeeping: Housekeeping, interval_s: float) -> None:
    """Publish what the prompt rounds could not (the broker was away, or `pdo principals` committed it) and
    prune what went out long ago, expired Idempotency-Key answers and record ids past their window, every
    `interval_s`, as long as the app runs."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(housekeeping.round)
        except Exception as error:  # the rows wait, in order, for the next round
            log.warning("the gateway's housekeeping round failed (%s); retrying", error)


async def _sample(*histories: history.History) -> None:
    """Sample the console's histories every SAMPLE_INTERVAL_S while the app runs (off the event loop: the
    lag sample reads the workers' endpoints)."""
    while True:
        for kept in histories:
            try:
                await asyncio.to_thread(kept.sample, utc_now())
            except Exception as error:  # a missed sample is a gap in a chart, never a stopped gateway
                log.warning("sampling the console's history failed (%s)", error)
        await asyncio.sleep(history.SAMPLE_INTERVAL_S)
