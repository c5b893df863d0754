"""What every stream worker exports besides its own metrics: consumer lag and signs of life, and the port.

`streams.make_app` calls `watch(app)`, so each faust worker gets, labelled with its consumer group:

- `pdo_consumer_lag_records{service,topic,partition}`: for each partition assigned to this worker, the
  broker's end offset minus the group's committed offset (the consumer's position where nothing was
  committed yet). A faust timer samples it every LAG_INTERVAL_S; the end offsets are asked of the broker
  (awaited in faust's consumer thread, never blocking the loop), not taken from the last fetch, so a
  consumer that stopped fetching shows its lag growing.
- `pdo_consumer_last_record_timestamp_seconds{service}`: when (Unix seconds, the worker's clock) the
  worker last received a record, noted by a faust sensor; absent until the first record. aiokafka
  consumers have been reported going silent after long runs (FIELD-NOTES): lag above zero while this
  stands still is that failure.

Each sample replaces a snapshot whole, and one collector on the default registry reads the snapshots at
scrape time, so a scrape never sees a half-written set and revoked partitions drop out.

A worker on a plain aiokafka group consumer (sharing) gets the same two metrics from `watch_consumer` and
`follow_lag`: it notes `last_record_at` itself when a fetch returns records.

`serve` starts a worker's metrics endpoint: the default registry plus any registry of the service's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, ConsumerT, Message
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pdo.core.errors import PdoError

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 10.0
# A sample waits at most this long for the broker; a slow answer is retried at the next tick.
LAG_TIMEOUT_S = 5.0


@dataclass(eq=False)
class ConsumerProgress:
    """One worker's latest lag sample and when it last received a record."""

    service: str
    lag: Mapping[TP, int] | Mapping[TopicPartition, int] = field(default_factory=dict)
    last_record_at: float | None = None


# Weak, so apps that tests build and drop leave nothing behind; a running app (or consumer) holds its progress.
_watched: weakref.WeakKeyDictionary[object, ConsumerProgress] = weakref.WeakKeyDictionary()


class LastRecordSensor(faust.Sensor):
    """Notes the time of each record the consumer hands to a stream (cheap: it runs on the event loop)."""

    def __init__(
        self, progress: ConsumerProgress, clock: Callable[[], float] = time.time, **kwargs: Any
    ) -> None:
        self.progress = progress
        self.clock = clock
        super().__init__(**kwargs)

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        self.progress.last_record_at = self.clock()


async def sample_lag(consumer: ConsumerT) -> dict[TP, int]:
    """Records not yet committed per assigned partition: end offset minus committed (or position)."""
    assigned = consumer.assignment()
    if not assigned:
        return {}
    ends = await consumer.highwaters(*assigned)
    lag: dict[TP, int] = {}
    for tp in assigned:
        # faust keeps what it committed per partition but offers no public getter for it (nor declares it).
        done = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
        if done is None:
            done = await consumer.position(tp)
        end = ends.get(tp)
        if end is not None and done is not None:
            lag[tp] = max(end - done, 0)
    return lag


def watch(app: faust.App) -> ConsumerProgress:
    """Add the lag timer and the last-record sensor to `app`; its metrics appear at the next scrape."""
    progress = ConsumerProgress(service=app.conf.id)
    _watched[app] = progress  # the app owns it: the weak mapping forgets it with the app
    app.sensors.add(LastRecordSensor(progress))

    # faust's timer decorator is declared as returning a bare Callable.
    @app.timer(interval=LAG_INTERVAL_S, name="sample_consumer_lag")  # type: ignore[untyped-decorator]
    async def sample_consumer_lag() -> None:
        try:
            progress.lag = await asyncio.wait_for(sample_lag(app.consumer), LAG_TIMEOUT_S)
        except Exception as error:  # not started yet, a rebalance, a slow broker: keep the last sample
            log.debug("consumer lag not sampled this time: %r", error)

    return progress


def watch_consumer(consumer: AIOKafkaConsumer, service: str) -> ConsumerProgress:
    """Export `consumer`'s lag (once `follow_lag` samples it) and last record under `service`."""
    progress = ConsumerProgress(service=service)
    _watched[consumer] = progress
    return progress


async def follow_lag(consumer: AIOKafkaConsumer, progress: ConsumerProgress) -> None:
    """Sample `consumer`'s lag into `progress` every LAG_INTERVAL_S, until cancelled."""
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        try:
            progress.lag = await asyncio.wait_for(sample_group_lag(consumer), LAG_TIMEOUT_S)
        except Exception as error:  # a rebalance, a slow broker: keep the last sample
            log.debug("consumer lag not sampled this time: %r", error)


async def sample_group_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Records not yet committed per assigned partition of an aiokafka group consumer."""
    assigned = sorted(consumer.assignment())
    if not assigned:
        return {}
    ends = await consumer.end_offsets(assigned)
    lag: dict[TopicPartition, int] = {}
    for tp in assigned:
        done = await consumer.committed(tp)
        if done is None:
            done = await consumer.position(tp)
        lag[tp] = max(ends[tp] - done, 0)
    return lag


def progress_of(app: faust.App) -> ConsumerProgress:
    """The progress `watch` keeps for `app`."""
    return _watched[app]


class ConsumerCollector(Collector):
    """Exports every watched worker's latest snapshot."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "pdo_consumer_lag_records",
            "Records on an assigned partition the worker's group has not committed yet",
            labels=["service", "topic", "partition"],
        )
        last = GaugeMetricFamily(
            "pdo_consumer_last_record_timestamp_seconds",
            "When the worker last received a record (Unix time, the worker's clock)",
            labels=["service"],
        )
        for progress in list(_watched.values()):
            for tp, records in sorted(progress.lag.items()):
                lag.add_metric([progress.service, tp.topic, str(tp.partition)], records)
            if progress.last_record_at is not None:
                last.add_metric([progress.service], progress.last_record_at)
        yield lag
        yield last


REGISTRY.register(ConsumerCollector())


class MetricsPortUnavailable(PdoError):
    """The metrics endpoint could not listen on its address."""


def serve(port: int, host: str, *registries: CollectorRegistry) -> None:
    """Serve the default registry, with `registries` added to it, on host:port until exit; port 0: none."""
    if not port:
        return
    for registry in registries:
        REGISTRY.register(registry)
    try:
        start_http_server(port, addr=host)
    except OSError as error:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}",
            hint="is the port taken? pass --metrics-port or set the service's PDO_*_METRICS_PORT "
            "(0 turns the endpoint off)",
        ) from None
