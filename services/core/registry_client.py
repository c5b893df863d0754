"""A small client of the schema registry's Confluent API: register by subject, fetch by id, both cached."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.kafka import require_credentials

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA_NOT_FOUND = 40403
ACCESS_HINTS = {
    401: "check PDO_KAFKA_USERNAME / PDO_KAFKA_PASSWORD: the registry takes this process's Kafka user and password",
    403: "this user's role or Kafka ACLs do not allow it: services register, only an operator changes "
    "compatibility or deletes, a tenant or provider reads only its topics' subjects (`pdo acls list`)",
}


class RegistryError(PdoError):
    """The registry refused a call or could not be reached; the message carries its reason and `error_code`
    the registry's own code (e.g. 40403), None when it gave none or was not reached."""

    def __init__(self, message: str, hint: str = "", error_code: int | None = None) -> None:
        super().__init__(message, hint)
        self.error_code = error_code


class SchemaIdNotFound(RegistryError):
    """The registry has no schema with this id (data written against another registry, or a bad header)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"the schema registry has no schema with id {schema_id}")
        self.schema_id = schema_id


def subject_for(topic: str, record_full_name: str) -> str:
    """Confluent's TopicRecordNameStrategy: several event types share a topic, each its own subject."""
    return f"{topic}-{record_full_name}"


class RegistryClient:
    """Thread-safe; ids never change once given, so answers are cached for the life of the client."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        http: httpx.Client | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout_s, headers={"Accept": CONTENT_TYPE}, auth=auth)
        self._user = auth[0] if auth else None
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, timeout_s: float = 5.0) -> RegistryClient:
        """A client of PDO_REGISTRY_URL that authenticates as this process's Kafka user (HTTP Basic)."""
        return cls(settings.registry_url, timeout_s, auth=require_credentials(settings))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, subject: str, schema_json: str) -> int:
        """The id of `schema_json` under `subject`, registering it if new (the registry is idempotent)."""
        key = (subject, schema_json)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        body = self._call("POST", f"/subjects/{subject}/versions", json={"schema": schema_json})
        schema_id = int(body["id"])
        with self._lock:
            self._ids[key] = schema_id
            self._schemas[schema_id] = schema_json
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text the registry holds for `schema_id`."""
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
        try:
            body = self._call("GET", f"/schemas/ids/{schema_id}")
        except RegistryError as error:
            if error.error_code == SCHEMA_NOT_FOUND:
                raise SchemaIdNotFound(schema_id) from None
            raise
        schema_json = str(body["schema"])
        with self._lock:
            self._schemas[schema_id] = schema_json
        return schema_json

    def set_compatibility(self, subject: str, level: str) -> None:
        """Set `subject`'s compatibility level (services may only set FULL_TRANSITIVE, the strictest)."""
        self._call(
            "PUT", f"/config/{subject}", json={"compatibility": level}, headers={"Content-Type": CONTENT_TYPE}
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as error:
            raise RegistryError(
                f"cannot reach the schema registry at {self.url}: {error}",
                hint="start it with `pdo registry serve`, or point PDO_REGISTRY_URL at a running one",
            ) from None
        if response.is_success:
            body: dict[str, Any] = response.json()  # every answer of the Confluent API is a JSON object
            return body
        raise self._refusal(method, path, response)

    def _refusal(self, method: str, path: str, response: httpx.Response) -> RegistryError:
        try:
            body = response.json()
            code, message = body.get("error_code"), body.get("message", response.text)
        except (json.JSONDecodeError, AttributeError):
            code, message = None, response.text
        refused = f"schema registry at {self.url} refused {method} {path}"
        if response.status_code in ACCESS_HINTS:  # name the user (never the password): it is what to fix
            refused += f" for user {self._user!r}"
        return RegistryError(
            f"{refused}: {message} (HTTP {response.status_code})",
            hint=ACCESS_HINTS.get(response.status_code, ""),
            error_code=code,
        )
