"""How the gateway answers a refusal: PdoError kinds to HTTP statuses, one JSON shape, one metric.

Every refusal reads `{"error": kind, "message": ..., "hint": ...}` (validation errors add `details`, one
entry per offending field) and is counted in pdo_gateway_refusals_total{route, reason=kind}; a change
refused because the audit log is not appendable (503) also in pdo_audit_fail_closed_refusals_total{route}.
Nothing the caller sent is echoed back unbounded: field paths and messages are clipped and made printable.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pdo.audit.public import AuditLogNotAppendable
from pdo.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PdoError,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from pdo.core.http_metrics import route_label
from pdo.gateway.limits import LIMIT_SCOPE_KEY

log = logging.getLogger(__name__)

# Most specific first; a subclass of one of these maps as its base does.
ERROR_KINDS: tuple[tuple[type[PdoError], str, int], ...] = (
    (InvalidInput, "invalid_input", 422),
    (NotFound, "not_found", 404),
    (Conflict, "conflict", 409),
    (Unauthenticated, "unauthenticated", 401),
    (Forbidden, "forbidden", 403),
    (Unavailable, "unavailable", 503),
    (TooManyRequests, "too_many_requests", 429),
)
HTTP_KINDS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
MAX_DETAILS = 20
MAX_TEXT = 300


def error_kind(error: PdoError) -> tuple[str, int]:
    """(kind, HTTP status) of a PdoError; an unclassified PdoError is the server's failure (500)."""
    for cls, kind, status in ERROR_KINDS:
        if isinstance(error, cls):
            return kind, status
    return "internal", 500


def printable(text: object, limit: int = MAX_TEXT) -> str:
    """`text` clipped to `limit` characters with control characters shown as escapes."""
    raw = str(text)
    clipped = raw[:limit]
    safe = "".join(char if char.isprintable() else repr(char)[1:-1] for char in clipped)
    return safe + ("…" if len(raw) > limit else "")


def field_path(loc: tuple) -> str:
    """('body', 'fields', 0) -> 'body.fields[0]'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{printable(part, 60)}" if path else str(part))
    return path


def validation_details(error: RequestValidationError) -> list[dict[str, str]]:
    details = []
    for item in error.errors()[:MAX_DETAILS]:
        message = item.get("msg", "invalid")
        if item.get("type") == "json_invalid":
            message = f"request body is not valid JSON: {item.get('ctx', {}).get('error', 'cannot parse')}"
        details.append({"field": field_path(tuple(item.get("loc", ()))), "message": printable(message)})
    return details


def route_of(request: Request) -> str:
    return route_label(request.scope)


def install_error_handlers(app: FastAPI, refusals: Counter, audit_refused: Counter) -> None:
    """Answer every failure in the gateway's JSON shape and count it by route and kind."""

    def refuse(
        request: Request,
        status: int,
        kind: str,
        message: str,
        hint: str = "",
        headers: dict[str, str] | None = None,
        **extra,
    ) -> JSONResponse:
        refusals.labels(route=route_of(request), reason=kind).inc()
        if status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        body = {"error": kind, "message": message, "hint": hint, **extra}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(PdoError)
    async def pdo_error(request: Request, error: PdoError) -> JSONResponse:
        kind, status = error_kind(error)
        if isinstance(error, AuditLogNotAppendable):
            audit_refused.labels(route=route_of(request)).inc()
        if status == 500:
            log.error("unclassified error on %s: %s", route_of(request), error.message)
        retry_after = getattr(error, "retry_after_s", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        message, hint = printable(error.message, 2000), printable(error.hint, 2000)
        return refuse(request, status, kind, message, hint, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        if not_json(request):
            # FastAPI reads a non-JSON body as no body at all; say what is really wrong.
            return refuse(
                request,
                415,
                "unsupported_media_type",
                f"the body must be JSON, but Content-Type is {request.headers.get('content-type') or 'missing'}",
                "send the header Content-Type: application/json",
            )
        details = validation_details(error)
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "the request is invalid"
        return refuse(
            request,
            422,
            "invalid_input",
            message,
            "see /openapi.json for the expected shape; unknown fields are refused",
            details=details,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = HTTP_KINDS.get(error.status_code, "http_error")
        message = f"HTTP {error.status_code}: {printable(error.detail, 200)}"
        hint = ""
        if error.status_code == 413:
            limit = request.scope.get(LIMIT_SCOPE_KEY)
            message = f"the request body is larger than the gateway accepts ({limit} bytes)"
            hint = "send smaller bodies"
        elif error.status_code == 404:
            hint = "the API is under /v1; see /docs"
        return refuse(request, error.status_code, kind, message, hint)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, error: SQLAlchemyError) -> JSONResponse:
        log.error("database error on %s: %s", route_of(request), type(error).__name__)
        return refuse(request, 503, "unavailable", "the database did not answer", "retry later")


def not_json(request: Request) -> bool:
    """A request that carries a body under a content type other than JSON."""
    if request.method not in {"POST", "PUT", "PATCH"} or request.headers.get("content-length") in {None, "0"}:
        return False
    return "json" not in request.headers.get("content-type", "").lower()


class UnexpectedErrorMiddleware:
    """A bug answers 500 in the gateway's JSON shape, counted and logged with its traceback.

    Handled here rather than by an Exception handler: Starlette re-raises after such a handler answers,
    and uvicorn then drops the connection under the client.
    """

    def __init__(self, app, refusals: Counter) -> None:
        self.app = app
        self.refusals = refusals

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def note_start(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, note_start)
        except Exception:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            log.exception("unexpected failure on %s", route)
            if started:
                raise
            self.refusals.labels(route=route, reason="internal").inc()
            body = {
                "error": "internal",
                "message": "the gateway failed unexpectedly",
                "hint": "retry; if it persists, tell an operator",
            }
            await JSONResponse(body, status_code=500)(scope, receive, send)
