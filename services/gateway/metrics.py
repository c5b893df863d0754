"""The gateway's Prometheus metrics, on a registry of its own per app (so tests can build many apps)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    refusals: Counter
    limited: Counter
    # Fail closed (pdo.audit.liveness): 1 while the audit log is not appendable, and what it refused meanwhile.
    audit_fail_closed: Gauge
    audit_refused: Counter


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
        audit_fail_closed=Gauge(
            "pdo_audit_fail_closed",
            "1 while the audit log is not appendable and approvals and resumptions are refused, else 0",
            registry=registry,
        ),
        audit_refused=Counter(
            "pdo_audit_fail_closed_refusals",
            "Access-widening changes (approvals, resumptions) refused because the audit log was not "
            "appendable, by route template",
            ["route"],
            registry=registry,
        ),
    )
