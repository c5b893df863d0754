"""A short in-memory history of the gateway's refusals and the stream workers' consumer lag, for the console.

Prometheus keeps history where it runs; where it does not (a local platform without one), the console still
charts the last hours of refusals and lag from this. The served gateway samples every SAMPLE_INTERVAL_S; the
series routes add a reading taken when they answer (not kept, so many viewers do not crowd the kept hours
out), so the newest point is current. KEEP samples are kept, and the history starts afresh when the gateway
restarts.

Refusals are the gateway's own `pdo_gateway_refusals` counter, so each sample is exact. Lag is read from the
workers' metrics endpoints on this host (`pdo_consumer_lag_records`, summed per service): a worker without a
metrics port, or one on another host (docker-compose), is simply absent, and the answer says which services
were read. A worker that does not answer within SCRAPE_TIMEOUT_S is skipped for that sample.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from pdo.gateway.series import Labels, Point

SAMPLE_INTERVAL_S = 10.0
KEEP = 6 * 360  # six hours of samples
SCRAPE_TIMEOUT_S = 1.0
WORKERS = ("catalog", "authorization", "sharing", "metering", "audit")
LAG = "pdo_consumer_lag_records"

Reading = dict[Labels, float]


@dataclass(frozen=True)
class Sample:
    at: datetime
    values: Reading


class History:
    """Samples of one reading, oldest first; safe to sample and read from several threads."""

    def __init__(self, read: Callable[[], Reading], keep: int = KEEP) -> None:
        self._read = read
        self._samples: deque[Sample] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def sample(self, now: datetime) -> None:
        values = self._read()
        with self._lock:
            self._samples.append(Sample(now, values))

    def _snapshot(self, now: datetime | None) -> tuple[list[Sample], bool]:
        """The kept samples, plus a reading taken now (not kept) when `now` is given; and whether none was
        dropped yet."""
        with self._lock:
            samples = list(self._samples)
            complete = len(samples) < (self._samples.maxlen or 0)
        if now is not None:
            samples.append(Sample(now, self._read()))
        return samples, complete

    def levels(self, now: datetime | None = None) -> Iterator[Point]:
        """Every sampled value, as a gauge's level at its sample time (and the level `now`, if given)."""
        for sample in self._snapshot(now)[0]:
            for labels, value in sample.values.items():
                yield sample.at, dict(labels), value

    def increases(self, now: datetime | None = None) -> Iterator[Point]:
        """A counter's increase between consecutive samples, dated at the later one (a reset counts from 0),
        up to `now` if given. The counter starts at 0 with the gateway, so while no sample was dropped, the
        first sample is all increase."""
        samples, complete = self._snapshot(now)
        if samples and complete:
            samples.insert(0, Sample(samples[0].at, {}))
        for before, after in zip(samples, samples[1:], strict=False):
            for labels, value in after.values.items():
                previous = before.values.get(labels, 0.0)
                increase = value - previous if value >= previous else value
                if increase:
                    yield after.at, dict(labels), increase


def counter_reading(counter: Counter) -> Callable[[], Reading]:
    """The counter's `_total` samples now, by label set."""

    def read() -> Reading:
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for metric in counter.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }

    return read


def worker_lag_reading(endpoints: dict[str, str]) -> Callable[[], Reading]:
    """Consumer lag per service, summed over its partitions, from each worker's metrics URL."""

    def read() -> Reading:
        reading: Reading = {}
        for service, url in endpoints.items():
            lag = _scrape_lag(url)
            if lag is not None:
                reading[(("service", service),)] = lag
        return reading

    return read


def local_worker_endpoints(host: str, port_of: Callable[[str], int]) -> dict[str, str]:
    """The metrics URLs of the workers that have a port, on this host (a wildcard bind is read on loopback)."""
    address = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return {
        service: f"http://{address}:{port_of(service)}/metrics" for service in WORKERS if port_of(service)
    }


def _scrape_lag(url: str) -> float | None:
    try:
        response = httpx.get(url, timeout=SCRAPE_TIMEOUT_S)
        response.raise_for_status()
    except httpx.HTTPError:
        return None  # not running, or not here: the chart shows the services that answered
    total = 0.0
    for family in text_string_to_metric_families(response.text):
        if family.name == LAG:
            total += sum(sample.value for sample in family.samples)
    return total
