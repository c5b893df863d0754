"""The gateway's Prometheus metrics, on a registry of its own per app (so tests can build many apps)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    refusals: Counter


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
    )


class MetricsMiddleware:
    """Counts every HTTP request by method, route template (bounded) and status."""

    def __init__(self, app, requests: Counter) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            method = method if method in KNOWN_METHODS else "OTHER"
            self.requests.labels(method=method, route=route, status=str(status)).inc()
