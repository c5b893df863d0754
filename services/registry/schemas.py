"""Turning a registration request's schema text into what the registry stores and compares.

Identity of a schema, as Confluent's registry has it: two registrations are "the same schema" when their
registered text is the same after JSON normalization — `json.dumps(json.loads(text), separators=(",", ":"),
ensure_ascii=False)`. Whitespace does not matter; key order, `doc` strings, aliases and every other
attribute do. So a schema that differs only in a doc string gets a new global id (and a new version when
it is registered under a subject that already holds the other one), exactly as Confluent would do.
The stored text is what GET returns, so clients see the schema as they registered it, minus whitespace.

Dedupe is by `fingerprint()` — sha256 over schema type and normalized text — with a unique index on it.
`?normalize=true` is accepted and has no further effect: the JSON normalization above always applies.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from dataclasses import dataclass

import avro.errors
import avro.schema

from pdo.registry import errors

AVRO = "AVRO"
SUPPORTED_TYPES = (AVRO,)

# avro warns (IgnoredLogicalType) about unknown logical types instead of failing; warnings.catch_warnings
# edits process-wide state, so parses that silence it take turns.
_PARSE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ParsedSchema:
    schema_type: str
    text: str  # normalized JSON text, what is stored and returned
    fingerprint: str
    avro: avro.schema.Schema


def normalize(text: str) -> str:
    """The registered text without insignificant whitespace; raises RegistryError 42201 if it is not JSON."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise errors.invalid_schema("schema JSON is nested too deeply") from None
    except ValueError as error:
        raise errors.invalid_schema(f"schema is not valid JSON: {error}") from None
    normalized = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        normalized.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.invalid_schema("schema contains a lone UTF-16 surrogate escape") from None
    return normalized


def fingerprint(schema_type: str, normalized_text: str) -> str:
    return hashlib.sha256(f"{schema_type}\n{normalized_text}".encode()).hexdigest()


def parse_avro(normalized_text: str) -> avro.schema.Schema:
    """Parse with avro's own parser; any failure is an invalid schema with avro's reason."""
    try:
        with _PARSE_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
            return avro.schema.parse(normalized_text)
    except RecursionError:
        raise errors.invalid_schema("schema is nested too deeply") from None
    except Exception as error:  # avro raises SchemaParseException, but also TypeError/KeyError on odd shapes
        reason = str(error) or type(error).__name__
        raise errors.invalid_schema(reason) from None


def parse_request(body: object) -> ParsedSchema:
    """Validate a register / lookup / compatibility request body and parse its schema."""
    if not isinstance(body, dict):
        raise errors.invalid_schema('request body must be a JSON object with a "schema" field')
    if "schema" not in body:
        raise errors.invalid_schema('request body has no "schema" field')
    text = body["schema"]
    if not isinstance(text, str):
        raise errors.invalid_schema('"schema" must be a string holding the schema\'s JSON')
    schema_type = body.get("schemaType")
    if schema_type is None:
        schema_type = AVRO
    if not isinstance(schema_type, str):
        raise errors.invalid_schema('"schemaType" must be a string')
    if schema_type.upper() not in SUPPORTED_TYPES:
        raise errors.invalid_schema(
            f"schemaType {schema_type[:40]!r} is not supported; this registry supports only AVRO"
        )
    references = body.get("references")
    if references not in (None, []):
        if not isinstance(references, list):
            raise errors.invalid_schema('"references" must be a list')
        raise errors.invalid_schema("schema references are not supported by this registry")
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported) not in (None, {}):
            raise errors.invalid_schema(f'"{unsupported}" is not supported by this registry')
    normalized = normalize(text)
    parsed = parse_avro(normalized)
    return ParsedSchema(AVRO, normalized, fingerprint(AVRO, normalized), parsed)
