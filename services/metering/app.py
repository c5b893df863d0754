"""The metering worker: faust app "metering" counting every usage fact on pdo.deliveries exactly once.

- the agent `meter_deliveries` takes the facts in batches (`stream.take_events(batch_size, within)`: up to
  `batch_size` facts, or whatever arrived within `within` seconds) and runs the handler's steps for each
  batch in a thread (handler.py): decode, dead-letter the refused, write the ledger in one transaction
  (pdo.metering.ledger), announce quotas reached. faust acknowledges a batch's events only after the loop
  body returns, i.e. after the ledger transaction committed; a crash before that redelivers the batch and
  the ledger ignores the delivery ids it already holds. A failing step is retried with backoff until it
  succeeds: a batch is never skipped (a stalled worker shows as consumer lag, a skipped one as lost money);
- the `publish_usage` timer (leader only) publishes UsageRecorded for closed windows, each window version
  once (pdo.metering.usage), and retries QuotaExceeded notices still pending;
- the `export_billing_metrics` timer (leader only) reconciles this month and the last (tenant topics,
  ledger, statements: pdo.metering.reconcile) into the drift and charges gauges alerts and dashboards read.

Several workers may run in the group: they split pdo.deliveries' partitions, and the ledger's unique key
holds across them (a fact redelivered to another worker after a rebalance is ignored there too).
Nothing blocking runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from sqlalchemy import Engine

from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.db import make_engine
from pdo.core.deadletters import source_message
from pdo.core.events import EventPublisher, utc_now
from pdo.core.registry_client import RegistryClient
from pdo.core.streams import make_app, source
from pdo.core.topics import TopicId
from pdo.metering.handler import MeteringHandler
from pdo.metering.ledger import Ledger
from pdo.metering.reconcile import export_billing_metrics

log = logging.getLogger(__name__)

APP_ID = "metering"
BATCH_SIZE = 1000
BATCH_WITHIN_S = 0.5
PUBLISH_INTERVAL_S = 5.0
# Reconciliation reads every tenant topic of this month and the last: often enough for an alert to fire
# within minutes of a drift, rarely enough that the scan stays a small share of the broker's reads.
RECONCILE_INTERVAL_S = 300.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


@dataclass
class Runtime:
    """What one worker process holds; close() releases the producer, the registries and the pool."""

    handler: MeteringHandler
    publisher: EventPublisher
    engine: Engine

    def close(self) -> None:
        self.publisher.close()
        self.handler.codec.registry.close()
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.service_database_url("metering"))
    publisher = EventPublisher(settings)
    codec = AvroCodec(RegistryClient.for_settings(settings))
    return Runtime(MeteringHandler(Ledger(engine), publisher, codec), publisher, engine)


async def retrying(what: str, work: Callable[..., Any], *args: Any) -> Any:
    """Run blocking `work(*args)` in a thread until it succeeds, backing off; never gives up."""
    backoff = FIRST_BACKOFF_S
    while True:
        try:
            return await asyncio.to_thread(work, *args)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("%s failed, retrying in %.1f s: %s: %s", what, backoff, type(error).__name__, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


async def meter(handler: MeteringHandler, messages: list[Any]) -> None:
    """One batch through the handler's steps, each retried on its own."""
    batch = await retrying(f"decoding {len(messages)} usage facts", handler.decode, messages)
    if batch.refused:
        await retrying("dead-lettering refused usage facts", handler.dead_letter, batch.refused)
    if batch.facts:
        result = await retrying(f"writing {len(batch.facts)} usage facts", handler.record, batch.facts)
        if result.notices:
            await asyncio.to_thread(handler.announce, result.notices)


def create_app(
    settings: Settings,
    runtime: Runtime,
    app_id: str = APP_ID,
    batch_size: int = BATCH_SIZE,
    within_s: float = BATCH_WITHIN_S,
) -> faust.App:
    """The faust app; `app_id` is its consumer group (another one only for side-by-side runs, e.g. tests)."""
    app = make_app(app_id, settings)
    deliveries = source(app, TopicId.DELIVERIES, settings)
    handler = runtime.handler

    @app.agent(deliveries, name="meter_deliveries")
    async def meter_deliveries(stream: faust.StreamT[bytes]) -> None:
        # take_events is faust's Stream's, missing from the StreamT interface.
        async for events in stream.take_events(batch_size, within_s):  # type: ignore[attr-defined]
            await meter(handler, [source_message(event.message) for event in events])

    # One worker publishes: the others would only find nothing left to do.
    @app.timer(interval=PUBLISH_INTERVAL_S, on_leader=True, name="publish_usage")
    async def publish_usage() -> None:
        try:
            await asyncio.to_thread(handler.publish_due)
        except Exception:  # retried at the next tick; it must never stop the worker
            log.exception("publishing usage windows failed")

    @app.timer(interval=RECONCILE_INTERVAL_S, on_leader=True, name="export_billing_metrics")
    async def reconcile_for_metrics() -> None:
        """pdo_metering_period_charges and pdo_metering_reconciliation_drift_records (reconcile.py)."""
        try:
            await asyncio.to_thread(
                export_billing_metrics, settings, runtime.engine, utc_now(), codec=handler.codec
            )
        except Exception:  # the gauges keep their last values; retried at the next tick
            log.exception("reconciliation for the billing gauges failed")

    return app
