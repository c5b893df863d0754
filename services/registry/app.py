"""The Confluent Schema Registry REST API (AVRO only) as a FastAPI app over pdo's SQL store.

Endpoints are plain `def`s: FastAPI runs them in its threadpool, so SQL never blocks the event loop.
Only reading the request body is async (it is I/O, and it is where the size limit is enforced).
Unknown query parameters are accepted and ignored, as Confluent's clients send several (format=, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import fastapi
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pdo.core.compatibility import CompatibilityLevel
from pdo.core.config import Settings
from pdo.core.db import make_engine
from pdo.core.http_metrics import MetricsMiddleware
from pdo.registry import errors
from pdo.registry.auth import REALM, Caller, Guard, Role, forbidden
from pdo.registry.errors import RegistryError
from pdo.registry.schemas import SUPPORTED_TYPES, parse_request
from pdo.registry.store import RegistryStore, SubjectVersion

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_BODY_TYPES = {
    "",
    MEDIA_TYPE,
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
}
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_SUBJECT_LENGTH = 255
MAX_INT = 2**31 - 1


class RegistryJSONResponse(JSONResponse):
    media_type = MEDIA_TYPE


def _error_response(status: int, code: int, message: str) -> RegistryJSONResponse:
    return RegistryJSONResponse({"error_code": code, "message": message}, status_code=status)


# -- request parsing helpers ---------------------------------------------------------------------------


async def read_body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY_BYTES or when it is not JSON by its content type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_BODY_TYPES:
        raise RegistryError(415, 415, f"Unsupported media type {content_type[:100]!r}; send {MEDIA_TYPE}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise errors.schema_too_large(int(declared), MAX_BODY_BYTES)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise errors.schema_too_large(len(body), MAX_BODY_BYTES)
    return bytes(body)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise errors.invalid_schema("request body is nested too deeply") from None
    except ValueError as error:  # includes UnicodeDecodeError
        raise errors.invalid_schema(f"request body is not valid JSON: {error}") from None


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.strip().lower() in ("", "false", "0"):
        return False
    if raw.strip().lower() in ("true", "1"):
        return True
    raise errors.bad_request(f"query parameter {name} must be true or false, not {raw[:40]!r}")


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(f"query parameter {name} must be a whole number, not {raw[:40]!r}") from None


def _page(request: Request, items: list) -> list:
    offset = max(_int_param(request, "offset", 0), 0)
    limit = _int_param(request, "limit", -1)
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _subject(subject: str) -> str:
    if not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise errors.invalid_subject(f"a subject name has 1 to {MAX_SUBJECT_LENGTH} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in subject):
        raise errors.invalid_subject("a subject name may not contain control characters")
    return subject


def _version(version: str) -> int | None:
    """A version path segment: a number in [1, 2^31-1], or 'latest' / -1 (returned as None)."""
    if version.strip().lower() == "latest":
        return None
    try:
        number = int(version)
    except ValueError:
        raise errors.invalid_version(version[:40]) from None
    if number == -1:
        return None
    if not 1 <= number <= MAX_INT:
        raise errors.invalid_version(version[:40])
    return number


def _schema_id(schema_id: str) -> int:
    try:
        number = int(schema_id)
    except ValueError:
        raise errors.schema_not_found(f"Schema {schema_id[:40]!r} not found") from None
    if not 1 <= number <= MAX_INT:
        raise errors.schema_not_found(f"Schema {number} not found")
    return number


def _level(raw: bytes) -> CompatibilityLevel:
    try:
        body = json.loads(raw)
    except (RecursionError, ValueError):
        raise RegistryError(
            422, 42203, 'request body is not a JSON object like {"compatibility": "BACKWARD"}'
        ) from None
    if not isinstance(body, dict):
        raise errors.invalid_compatibility_level(None)
    level = body.get("compatibility", body.get("compatibilityLevel"))
    if not isinstance(level, str):
        raise errors.invalid_compatibility_level(level)
    try:
        return CompatibilityLevel(level.strip().upper())
    except ValueError:
        raise errors.invalid_compatibility_level(level[:40]) from None


def _version_body(row: SubjectVersion) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": row.subject,
        "version": row.version,
        "id": row.schema_id,
        "schema": row.schema_text,
    }
    if row.schema_type != "AVRO":  # Confluent leaves schemaType out for AVRO
        body["schemaType"] = row.schema_type
    return body


# -- metrics -------------------------------------------------------------------------------------------


# -- the caller ----------------------------------------------------------------------------------------


def current_caller(request: Request) -> Caller:
    """Who sent the request (HTTP Basic), checked by the app's Guard; 401 otherwise."""
    return request.app.state.guard.caller(request.headers.get("authorization"))


Who = Annotated[Caller, Depends(current_caller)]


# -- the app -------------------------------------------------------------------------------------------


def create_app(
    database_url: str,
    guard: Callable[[CollectorRegistry], Guard] | None = None,
    settings: Settings | None = None,
) -> fastapi.FastAPI:
    """The registry over the database at `database_url` (migrated already: see pdo.core.db.upgrade).

    `guard` makes the Guard that authenticates and authorizes every request (given the metrics registry);
    by default `Guard.for_settings`: passwords checked by logging in to Kafka, parties' reach from its ACLs.
    """
    engine = make_engine(database_url)
    store = RegistryStore(engine)
    metrics = CollectorRegistry()
    settings = settings or Settings.from_env()
    guard_of = guard(metrics) if guard is not None else Guard.for_settings(settings, metrics)

    requests_total = Counter(
        "pdo_registry_http_requests",
        "HTTP requests the schema registry answered, by method, route template and status",
        ["method", "route", "status"],
        registry=metrics,
    )
    registered_total = Counter(
        "pdo_registry_schemas_registered",
        "New subject versions the schema registry stored (idempotent repeats not counted)",
        registry=metrics,
    )

    @asynccontextmanager
    async def lifespan(_app):
        yield
        engine.dispose()

    app = fastapi.FastAPI(
        title="pdo schema registry",
        description="Confluent Schema Registry REST API (AVRO) over pdo's SQL store",
        default_response_class=RegistryJSONResponse,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.metrics = metrics
    app.state.guard = guard_of
    app.add_middleware(MetricsMiddleware, requests=requests_total)

    @app.exception_handler(RegistryError)
    async def registry_error(_request, error: RegistryError):
        response = _error_response(error.status, error.code, error.message)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = REALM
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error: StarletteHTTPException):
        return _error_response(
            error.status_code, error.status_code, f"HTTP {error.status_code} {error.detail}"
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error: RequestValidationError):
        return _error_response(422, 422, f"Unprocessable request: {error.errors()!s:.500}")

    @app.exception_handler(SQLAlchemyError)
    async def store_failure(_request, error: SQLAlchemyError):
        log.exception("schema registry store error", exc_info=error)
        failure = errors.store_error(type(error).__name__)
        return _error_response(failure.status, failure.code, failure.message)

    # -- root, types, metrics --

    @app.get("/")
    def root(_caller: Who) -> dict:
        return {}

    @app.get("/schemas/types")
    def schema_types(_caller: Who) -> list:
        return list(SUPPORTED_TYPES)

    @app.get("/mode")
    def mode(_caller: Who) -> dict:
        return {"mode": "READWRITE"}

    @app.get("/contexts")
    def contexts(_caller: Who) -> list:
        return ["."]

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    # -- subjects --

    @app.get("/subjects")
    def list_subjects(request: Request, who: Who) -> list:
        found = store.subjects(
            include_deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deleted_only"),
            prefix=request.query_params.get("subjectPrefix") or None,
        )
        return _page(request, [subject for subject in found if guard_of.may_read(who, subject)])

    @app.get("/subjects/{subject}/versions")
    def list_versions(subject: str, request: Request, who: Who) -> list:
        guard_of.require_read(who, subject)
        found = store.versions(
            _subject(subject),
            include_deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deleted_only"),
        )
        return _page(request, found)

    @app.post("/subjects/{subject}/versions")
    def register(subject: str, who: Who, body: bytes = Depends(read_body)) -> dict:
        guard_of.require_writer(who, "register schemas")
        subject = _subject(subject)
        parsed = parse_request(_json(body))
        registration = store.register(subject, parsed)
        if registration.created:
            registered_total.inc()
        # No "schema" in the answer: confluent-kafka caches the schema object it sent when none comes back,
        # so later serializations of the same object hit its cache instead of calling again.
        return {"id": registration.schema_id, "subject": subject, "version": registration.version}

    @app.get("/subjects/{subject}/versions/{version}")
    def get_version(subject: str, version: str, request: Request, who: Who) -> dict:
        guard_of.require_read(who, subject)
        row = store.version(_subject(subject), _version(version), include_deleted=_flag(request, "deleted"))
        return _version_body(row)

    @app.get("/subjects/{subject}/versions/{version}/schema")
    def get_version_schema(subject: str, version: str, request: Request, who: Who) -> Response:
        guard_of.require_read(who, subject)
        row = store.version(_subject(subject), _version(version), include_deleted=_flag(request, "deleted"))
        return Response(row.schema_text, media_type=MEDIA_TYPE)

    @app.get("/subjects/{subject}/versions/{version}/referencedby")
    def referenced_by(subject: str, version: str, who: Who) -> list:
        guard_of.require_read(who, subject)
        store.version(_subject(subject), _version(version), include_deleted=False)
        return []  # references are not supported, so nothing can refer to a version

    @app.post("/subjects/{subject}")
    def lookup(subject: str, request: Request, who: Who, body: bytes = Depends(read_body)) -> dict:
        guard_of.require_read(who, subject)
        subject = _subject(subject)
        parsed = parse_request(_json(body))
        return _version_body(store.lookup(subject, parsed, include_deleted=_flag(request, "deleted")))

    @app.delete("/subjects/{subject}")
    def delete_subject(subject: str, request: Request, who: Who) -> list:
        guard_of.require_operator(who, "delete subjects")
        return store.delete_subject(_subject(subject), permanent=_flag(request, "permanent"))

    @app.delete("/subjects/{subject}/versions/{version}")
    def delete_version(subject: str, version: str, request: Request, who: Who) -> int:
        guard_of.require_operator(who, "delete schema versions")
        return store.delete_version(
            _subject(subject), _version(version), permanent=_flag(request, "permanent")
        )

    # -- schemas by id --

    @app.get("/schemas/ids/{schema_id}")
    def get_schema(schema_id: str, who: Who) -> dict:
        readable_id(who, schema_id)
        schema_type, text = store.schema(_schema_id(schema_id))
        body = {"schema": text}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        return body

    @app.get("/schemas/ids/{schema_id}/schema")
    def get_raw_schema(schema_id: str, who: Who) -> Response:
        readable_id(who, schema_id)
        _, text = store.schema(_schema_id(schema_id))
        return Response(text, media_type=MEDIA_TYPE)

    @app.get("/schemas/ids/{schema_id}/versions")
    def schema_versions(schema_id: str, request: Request, who: Who) -> list:
        readable_id(who, schema_id)
        usages = store.schema_usages(_schema_id(schema_id), include_deleted=_flag(request, "deleted"))
        usages = [(s, v) for s, v in usages if guard_of.may_read(who, s)]
        wanted = request.query_params.get("subject")
        found = [{"subject": s, "version": v} for s, v in usages if not wanted or s == wanted]
        return _page(request, found)

    @app.get("/schemas/ids/{schema_id}/subjects")
    def schema_subjects(schema_id: str, request: Request, who: Who) -> list:
        readable_id(who, schema_id)
        usages = store.schema_usages(_schema_id(schema_id), include_deleted=_flag(request, "deleted"))
        usages = [(s, v) for s, v in usages if guard_of.may_read(who, s)]
        wanted = request.query_params.get("subject")
        found = sorted({s for s, _ in usages if not wanted or s == wanted})
        return _page(request, found)

    def readable_id(who: Caller, schema_id: str) -> None:
        """A party sees a schema by id only when a subject it may read holds it (403 otherwise). An unknown id
        stays a 404 (40403, what Confluent's deserializer expects): it tells only how many schemas exist."""
        if who.role is not Role.PARTY:
            return
        usages = store.schema_usages(_schema_id(schema_id), include_deleted=False)
        if not any(guard_of.may_read(who, subject) for subject, _ in usages):
            guard_of.refusals.labels("forbidden").inc()
            raise forbidden(who, f"read schema {schema_id[:20]!r}")

    # -- config --

    @app.get("/config")
    def get_global_config(_caller: Who) -> dict:
        return {"compatibilityLevel": store.get_level(None, default_to_global=True).value}

    @app.put("/config")
    def put_global_config(who: Who, body: bytes = Depends(read_body)) -> dict:
        guard_of.require_operator(who, "change the global compatibility")
        level = _level(body)
        store.set_level(None, level)
        return {"compatibility": level.value}

    @app.delete("/config")
    def delete_global_config(who: Who) -> dict:
        guard_of.require_operator(who, "change the global compatibility")
        return {"compatibilityLevel": store.delete_level(None).value}

    @app.get("/config/{subject}")
    def get_subject_config(subject: str, request: Request, who: Who) -> dict:
        guard_of.require_read(who, subject)
        level = store.get_level(_subject(subject), default_to_global=_flag(request, "defaultToGlobal"))
        return {"compatibilityLevel": level.value}

    @app.put("/config/{subject}")
    def put_subject_config(subject: str, who: Who, body: bytes = Depends(read_body)) -> dict:
        subject = _subject(subject)
        level = _level(body)
        guard_of.require_subject_level(who, level)
        store.set_level(subject, level)
        return {"compatibility": level.value}

    @app.delete("/config/{subject}")
    def delete_subject_config(subject: str, who: Who) -> dict:
        guard_of.require_operator(who, "change a subject's compatibility")
        return {"compatibilityLevel": store.delete_level(_subject(subject)).value}

    # -- compatibility --

    def _compatibility(subject: str, version: int | str | None, request: Request, body: bytes) -> dict:
        subject = _subject(subject)
        parsed = parse_request(_json(body))
        problems = store.check(subject, parsed, version)
        verbose = _flag(request, "verbose")
        return {"is_compatible": not problems, "messages": problems if verbose else []}

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    def check_version(
        subject: str,
        version: str,
        request: Request,
        who: Who,
        body: bytes = Depends(read_body),
    ) -> dict:
        guard_of.require_read(who, subject)
        return _compatibility(subject, _version(version), request, body)

    @app.post("/compatibility/subjects/{subject}/versions")
    def check_all(subject: str, request: Request, who: Who, body: bytes = Depends(read_body)) -> dict:
        guard_of.require_read(who, subject)
        return _compatibility(subject, "all", request, body)

    return app
