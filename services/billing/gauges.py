"""Billing's gauges: the current period's charges so far and the reconciliation drift, for alerts and dashboards.

`export_billing_metrics` prices the open period (pdo.billing.statements) and reconciles this month and the
last (pdo.billing.reconcile) with one topic scan. It runs on the metering worker's leader every
`PDO_BILLING_GAUGES_INTERVAL_S` (default 300 s: reconciliation reads every tenant topic of this month and the
last, often enough for an alert to fire within minutes of a drift, rarely enough that the scan stays a small
share of the broker's reads) as a timer the entry point (`pdo metering worker`) hands the worker, so metering
never imports billing: the dependency points from billing to metering only.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from sqlalchemy import Engine

from pdo.billing.reconcile import CHECKS, Reconciliation, reconcile_scan
from pdo.billing.statements import compute_statements
from pdo.billing.topic_scan import TopicScan, scan_tenant_topics, tenant_topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.months import period_of, period_start


@dataclass(frozen=True)
class BillingMetrics:
    period_charges: Gauge
    drift: Gauge


def billing_metrics(registry: CollectorRegistry = REGISTRY) -> BillingMetrics:
    return BillingMetrics(
        period_charges=Gauge(
            "pdo_metering_period_charges",
            "Priced usage of the current open billing period so far, per tenant and currency",
            ["tenant", "currency"],
            registry=registry,
        ),
        drift=Gauge(
            "pdo_metering_reconciliation_drift_records",
            "Records that do not reconcile in the last reconciliation (current and previous period), by check",
            ["check"],
            registry=registry,
        ),
    )


@functools.cache
def default_billing_metrics() -> BillingMetrics:
    """The gauges on prometheus_client's default registry (what a worker's metrics port serves), made once."""
    return billing_metrics()


def export_billing_metrics(
    settings: Settings,
    engine: Engine,
    now: datetime,
    metrics: BillingMetrics | None = None,
    codec: AvroCodec | None = None,
) -> list[Reconciliation]:
    """Set both billing gauges: charges of `now`'s period so far, and the drift of this month and the last.

    Blocking (Kafka, SQL): a faust timer calls it through asyncio.to_thread. One topic scan serves both
    periods. Returns the two reconciliations, previous month first.
    """
    metrics = metrics or default_billing_metrics()
    current = period_of(now)
    previous = period_of(period_start(current) - timedelta(days=1))
    with engine.connect() as conn:
        statements = compute_statements(conn, current)
        names = tenant_topics(conn, settings)
    metrics.period_charges.clear()
    charges: dict[tuple[str, str], Any] = defaultdict(int)
    for statement in statements:
        charges[(statement.tenant_id, statement.currency)] += statement.total
    for (tenant, currency), total in charges.items():
        metrics.period_charges.labels(tenant=tenant, currency=currency).set(float(total))
    scanned = _scan_with(settings, codec, names)
    with engine.connect() as conn:
        results = [reconcile_scan(conn, period, scanned) for period in (previous, current)]
    for check in CHECKS:
        metrics.drift.labels(check=check).set(sum(result.drift(check) for result in results))
    return results


def _scan_with(settings: Settings, codec: AvroCodec | None, names: dict[str, tuple[str, str]]) -> TopicScan:
    if codec is not None:
        return scan_tenant_topics(settings, codec, names)
    from pdo.core.registry_client import RegistryClient

    registry = RegistryClient.for_settings(settings)
    try:
        return scan_tenant_topics(settings, AvroCodec(registry), names)
    finally:
        registry.close()
