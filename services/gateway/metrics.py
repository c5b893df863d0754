"""The gateway's Prometheus metrics, on a registry of its own per app (so tests can build many apps)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    refusals: Counter
    limited: Counter


def gateway_metrics() -> GatewayMetrics:
    registry = CollectorRegistry()
    return GatewayMetrics(
        registry=registry,
        requests=Counter(
            "pdo_gateway_http_requests",
            "HTTP requests the gateway answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        ),
        refusals=Counter(
            "pdo_gateway_refusals",
            "Requests the gateway refused, by route template and reason (the error kind)",
            ["route", "reason"],
            registry=registry,
        ),
        limited=Counter(
            "pdo_gateway_limited",
            "Requests refused (429) or streams ended by a cap, by cap: rate, streams, streams_per_tenant, "
            "stream_duration, grants_per_tenant_dataset",
            ["limit"],
            registry=registry,
        ),
    )
