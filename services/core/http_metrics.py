"""HTTP request metrics for pdo's ASGI apps: one counter by method, route template and status."""

from __future__ import annotations

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}


def route_label(scope: Scope) -> str:
    """The matched route's template, never the raw path, so ids in URLs cannot explode the label set."""
    path: str | None = getattr(scope.get("route"), "path", None)
    return path or "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request by method, route template (bounded) and status."""

    def __init__(self, app: ASGIApp, requests: Counter) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope.get("method", "")
            method = method if method in KNOWN_METHODS else "OTHER"
            self.requests.labels(method=method, route=route_label(scope), status=str(status)).inc()
