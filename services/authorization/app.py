"""The authorization worker: faust app "authorization" with its agents and its clock.

- `decide_request` reads pdo.requests and decides each submitted request by policy;
- `suspend_on_quota` reads pdo.quota-exceeded and suspends grants that reached their daily quota;
- `enforce_catalog_changes` reads pdo.catalog into the worker's own view of the datasets (`authz_datasets`,
  datasets.py) and, for every dataset update, suspends the grants the policy now denies (reclassified
  CORE / NOT_OPEN) and re-masks fields newly marked sensitive, in stream order;
- the `publish_outbox` timer (every worker, every OUTBOX_INTERVAL_S) publishes outbox events the process that
  committed them could not (outbox.py: a lease lets one relay publish at a time);
- the `expire_due_grants` timer (leader only, every few seconds) expires grants past valid-until, resumes
  grants whose quota day is over, and decides requests left SUBMITTED;
- the `count_requests_and_grants` timer (every worker) refreshes the pending-request and grant gauges
  (gauges.py) from SQL.

**Datasets come from events.** The worker never reads the catalog's tables: the service decides with the
view `enforce_catalog_changes` keeps. That view may lag behind pdo.catalog (a request can be read before
the registration of its dataset is projected), so before deciding that a dataset does not exist the worker
catches the view up to the current end of pdo.catalog and looks again (the ordering rule, datasets.py).

**Failures** follow the core's one policy (pdo.core.retry): each message's handler is retried while a
backing service does not answer, forever (the stall shows as consumer lag and in
`pdo_worker_retries_total{service="authorization"}`); a message that is itself at fault is dead-lettered
at once (agents.py).

All SQL and broker work runs in a thread (asyncio.to_thread) so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import faust
from sqlalchemy import Engine

from pdo.authorization import gauges
from pdo.authorization.agents import AuthorizationHandlers
from pdo.authorization.datasets import CatalogCatchUp, ProjectedDatasets
from pdo.authorization.policy import load_policy
from pdo.authorization.service import AuthorizationService
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.db import make_engine
from pdo.core.deadletters import source_message
from pdo.core.events import EventPublisher
from pdo.core.registry_client import RegistryClient
from pdo.core.retry import retrying
from pdo.core.streams import make_app, source
from pdo.core.topics import TopicId

log = logging.getLogger(__name__)

APP_ID = "authorization"
CLOCK_INTERVAL_S = 5.0
OUTBOX_INTERVAL_S = 0.5


@dataclass
class Runtime:
    """What one worker process holds; close() releases the producer, the registry and the database pool."""

    settings: Settings
    engine: Engine
    publisher: EventPublisher
    codec: AvroCodec
    datasets: ProjectedDatasets
    service: AuthorizationService
    handlers: AuthorizationHandlers

    def close(self) -> None:
        self.publisher.close()
        self.codec.registry.close()
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """The service wired to the database, the broker, the worker's view of the catalog and the policy."""
    engine = make_engine(settings.service_database_url("authorization"))
    publisher = EventPublisher(settings)
    codec = AvroCodec(RegistryClient.for_settings(settings))
    datasets = ProjectedDatasets(engine, codec.registry, CatalogCatchUp(settings, codec))
    service = AuthorizationService(engine, publisher, datasets, load_policy(), settings)
    handlers = AuthorizationHandlers(service, publisher, codec, datasets)
    return Runtime(settings, engine, publisher, codec, datasets, service, handlers)


def create_app(settings: Settings, runtime: Runtime | None = None, app_id: str = APP_ID) -> faust.App:
    """The faust app; the runtime built from settings if not given (then it lives as long as the process).
    `app_id` is its consumer group (another one only for side-by-side runs, e.g. tests)."""
    handlers = (runtime or build_runtime(settings)).handlers
    app = make_app(app_id, settings)
    requests = source(app, TopicId.REQUESTS, settings)
    quota_exceeded = source(app, TopicId.QUOTA_EXCEEDED, settings)
    catalog = source(app, TopicId.CATALOG, settings)

    @app.agent(requests, name="decide_request")
    async def decide_request(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await retrying("deciding a request", handlers.on_request, source_message(event.message))

    @app.agent(quota_exceeded, name="suspend_on_quota")
    async def suspend_on_quota(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await retrying("suspending on quota", handlers.on_quota_exceeded, source_message(event.message))

    @app.agent(catalog, name="enforce_catalog_changes")
    async def enforce_catalog_changes(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await retrying("applying a catalog change", handlers.on_catalog, source_message(event.message))

    # Every worker runs the relay: the outbox's lease lets one publish at a time, and any can take over.
    @app.timer(interval=OUTBOX_INTERVAL_S, name="publish_outbox")
    async def publish_outbox() -> None:
        try:
            await asyncio.to_thread(handlers.publish_outbox)
        except Exception as error:  # the broker is away: the rows wait, in order, for the next tick
            log.warning("publishing the outbox failed (%s); retrying in %.1f s", error, OUTBOX_INTERVAL_S)

    # One worker runs the clock: the others would only find nothing left to do.
    @app.timer(interval=CLOCK_INTERVAL_S, on_leader=True, name="expire_due_grants")
    async def expire_due_grants() -> None:
        await asyncio.to_thread(handlers.tick)

    @app.timer(interval=CLOCK_INTERVAL_S, name="count_requests_and_grants")
    async def count_requests_and_grants() -> None:
        try:
            await asyncio.to_thread(gauges.refresh, handlers.service.engine)
        except Exception:  # the database may be down for a moment: the next tick counts again
            log.exception("counting requests and grants failed")

    return app
