"""What a tenant receives of one published record under one grant: the record shape and its Avro schema.

Pure functions, no broker: the sharing service calls them per (record, grant).

- `shape` turns a dataset record into the tenant record: the row filter decides on the record as
  published, and may name only fields the grant delivers in clear (the scope rule in
  `pdo.authorization.row_filter`; anything else is refused, never evaluated); then only granted fields
  are kept, each masked as the grant says (`pdo.sharing.masking`), and `pdo_provenance` says where it
  came from.
- `tenant_key` is the Kafka key of the tenant record. Nothing outside the value may carry a value the
  grant masks or leaves out: the key is the `record_id` when the grant delivers it in clear, and otherwise a
  keyed pseudonym of the source record id under a key of its own per grant — stable, so the tenant's
  partitioning and per-key order hold, but neither reversible nor joinable across grants (all it tells is
  which deliveries of this grant came from the same source record id). Provenance carries positions and
  names, never a record value, and pdo writes no headers on tenant records.
- `tenant_record_schema` is the Avro schema of those records. A tenant topic carries one dataset for
  one tenant, possibly under several grants with different fields or masking, so it uses
  TopicRecordNameStrategy: each distinct (fields, masking, dataset schema) gets its own record name,
  `pdo.tenant.v1.<DatasetRecord>_<digest>`, and so its own subject.
- `masking_policy_version` names the masking a record went through; `pdo.core.provenance.delivery_id` names one delivery
  of one source record under one grant, the same on every redelivery, so metering counts it once.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import avro.schema

from pdo.authorization.public import row_filter as rows
from pdo.core.provenance import PROVENANCE_FIELD, provenance_schema
from pdo.core.vocabulary import MaskingRule
from pdo.sharing.masking import mask
from pdo.sharing.scope import GrantScope

# Bump when pdo.sharing.masking.mask changes what any rule produces: it is part of every record's
# masking_policy_version, so tenants can tell records masked the old way from the new.
MASKING_ALGORITHM_VERSION = 2  # 2: KEYED_HASH keys derived per tenant and dataset

TENANT_NAMESPACE = "pdo.tenant.v1"
# Named types a dataset schema declares without a namespace move here: inside pdo.tenant.v1 they could
# collide with Provenance or the tenant record, and Avro libraries disagree on how to reference the
# null namespace from inside a named one. Readers match named types by unqualified name, so this is safe.
UNQUALIFIED_NAMESPACE = f"{TENANT_NAMESPACE}.dataset"
NAME_DIGEST_CHARS = 8
KEY_FIELD = "record_id"  # what providers key feed records by, and so what tenant records are keyed by
TENANT_KEY_HEX_CHARS = 32
# Domain separation: a tenant key pseudonym never equals a KEYED_HASH value made with the same master key.
TENANT_KEY_PURPOSE = b"pdo tenant record key v1"

# Rules whose result is text (or null) whatever the field held.
TEXT_RULES = frozenset(
    {MaskingRule.KEEP_FIRST_LAST, MaskingRule.MASK_MIDDLE_DIGITS, MaskingRule.KEYED_HASH, MaskingRule.REDACT}
)
RULE_DESCRIPTIONS = {
    MaskingRule.KEEP_FIRST_LAST: "first and last character kept, every other character replaced by '*'",
    MaskingRule.MASK_MIDDLE_DIGITS: "at most the first 3 and last 4 characters kept, the rest replaced by '*'",
    MaskingRule.KEYED_HASH: "replaced by a keyed pseudonym (HMAC-SHA256, 16 hex characters), stable for joins",
    MaskingRule.REDACT: "always null",
    MaskingRule.TRUNCATE_DATE: "time of day removed (00:00 UTC of the day)",
    MaskingRule.ROUND_NUMBER: "rounded (integers to the nearest 10, decimals to 1 decimal place)",
}

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True)
class Provenance:
    """Where a tenant record came from; becomes its `pdo_provenance` field."""

    dataset_id: str
    source_topic: str
    source_partition: int
    source_offset: int
    grant_id: str
    masking_policy_version: str
    published_at: datetime

    def as_record(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "grant_id": self.grant_id,
            "masking_policy_version": self.masking_policy_version,
            "published_at": self.published_at,
        }


# ---------------------------------------------------------------------------------------------- records


def shape(
    record: dict[str, Any],
    scope: GrantScope,
    row_filter: rows.Filter | None,
    provenance: Provenance,
    key: bytes,
) -> dict[str, Any] | None:
    """The tenant record for `record` under `scope`, or None when `row_filter` rejects it.

    Granted fields only (in the record's order), each masked per `scope.masking`, plus `pdo_provenance`.
    A granted field the record lacks is left out, so encoding fails loudly rather than inventing it.
    """
    if provenance.grant_id != scope.grant_id or provenance.dataset_id != scope.dataset_id:
        raise ValueError(
            f"provenance names grant {provenance.grant_id} of {provenance.dataset_id}, "
            f"but the scope is grant {scope.grant_id} of {scope.dataset_id}"
        )
    if row_filter is not None:
        # Never evaluate a filter on what the tenant may not see: the rows it passes would reveal it.
        rows.require_in_scope(row_filter, scope.fields, scope.masking)
        if not row_filter.matches(record):
            return None
    granted = scope.fields
    masking = scope.masking
    shaped: dict[str, Any] = {}
    for name, value in record.items():
        if name not in granted:
            continue
        rule = masking.get(name)
        shaped[name] = value if rule is None else mask(value, rule, key)
    shaped[PROVENANCE_FIELD] = provenance.as_record()
    return shaped


def tenant_key(
    record: dict[str, Any], scope: GrantScope, key: bytes, source_key: bytes | None
) -> bytes | None:
    """The Kafka key of `record` on the tenant topic under `scope` (see the module docstring).

    `source_key` (the feed message's key) stands in for a record without a `record_id`; it is pseudonymised
    like one, because a provider's key may be any value of the record. None when there is neither.
    """
    source_id = record.get(KEY_FIELD)
    if source_id is not None and KEY_FIELD in scope.fields and KEY_FIELD not in scope.masking:
        return str(source_id).encode("utf-8")
    identity = str(source_id).encode("utf-8") if source_id is not None else source_key
    if identity is None:
        return None
    grant = scope.grant_id.encode("utf-8")
    # Length-prefixed, so no (grant, id) pair can be written the same as another.
    message = b"%s\0%d:%s%s" % (TENANT_KEY_PURPOSE, len(grant), grant, identity)
    return hmac.digest(key, message, "sha256").hex()[:TENANT_KEY_HEX_CHARS].encode("ascii")


def masking_policy_version(scope: GrantScope) -> str:
    """A short stable name of the grant's masking: `m<algorithm version>-<12 hex digits>`."""
    masking = {field: str(rule) for field, rule in sorted(scope.masking.items())}
    text = json.dumps({"algorithm": MASKING_ALGORITHM_VERSION, "masking": masking}, sort_keys=True)
    return f"m{MASKING_ALGORITHM_VERSION}-{_digest(text)[:12]}"


# ---------------------------------------------------------------------------------------------- schema


def tenant_record_schema(dataset_schema: dict[str, Any], scope: GrantScope) -> dict[str, Any]:
    """The Avro schema (a JSON object) of the records `shape` produces for `scope` on this dataset."""
    if dataset_schema.get("type") not in ("record", "error"):
        raise ValueError("a dataset schema must be an Avro record")
    record_full_name = _full_name(dataset_schema["name"], dataset_schema.get("namespace"), None)
    record_namespace = _namespace_of(record_full_name)
    granted = _granted_fields(dataset_schema, scope)
    masking = {
        field["name"]: MaskingRule(scope.masking[field["name"]])
        for field in granted
        if field["name"] in scope.masking
    }

    copier = _TypeCopier(_named_types(dataset_schema), record_full_name)
    fields = [_tenant_field(field, masking.get(field["name"]), record_namespace, copier) for field in granted]
    fields.append(_provenance_field())

    short_name = record_full_name.rsplit(".", 1)[-1]
    return {
        "type": "record",
        "name": f"{short_name}_{_name_digest(dataset_schema, granted, masking)}",
        "namespace": TENANT_NAMESPACE,
        "doc": (
            f"A record of dataset {scope.dataset_id} ({record_full_name}) as delivered to a tenant: only the "
            "granted fields, masked where the grant says, with pdo_provenance."
        ),
        "fields": fields,
    }


def _granted_fields(dataset_schema: dict[str, Any], scope: GrantScope) -> list[dict[str, Any]]:
    """The dataset's fields the grant covers, in dataset order; granted names the schema lacks are skipped."""
    granted = set(scope.fields)
    fields = [field for field in dataset_schema["fields"] if field["name"] in granted]
    if any(field["name"] == PROVENANCE_FIELD for field in fields):
        raise ValueError(f"the dataset field {PROVENANCE_FIELD!r} clashes with pdo's provenance field")
    return fields


def _tenant_field(
    field: dict[str, Any], rule: MaskingRule | None, namespace: str | None, copier: _TypeCopier
) -> dict[str, Any]:
    name = field["name"]
    original_doc = f" Dataset's description: {field['doc']}" if field.get("doc") else ""
    tenant = {
        key: value for key, value in field.items() if key not in ("type", "doc", "default", "pdo.sensitive")
    }
    if rule is None:
        tenant["type"] = copier.copy(field["type"], namespace)
        tenant["doc"] = f"From dataset field {name}, not masked.{original_doc}"
        if "default" in field:
            tenant["default"] = field["default"]
        return tenant
    if rule in TEXT_RULES:
        tenant["type"] = ["null", "string"]
    else:
        tenant["type"] = _nullable(_widen_int(copier.copy(field["type"], namespace)))
    tenant["doc"] = f"From dataset field {name}, masked with {rule}: {RULE_DESCRIPTIONS[rule]}.{original_doc}"
    tenant["default"] = None  # masking may give null; a null default also eases evolution
    tenant["pdo.masking"] = str(rule)
    return tenant


def _provenance_field() -> dict[str, Any]:
    return {
        "name": PROVENANCE_FIELD,
        "type": provenance_schema(),
        "doc": "Added by pdo, not from the dataset: source dataset, feed position, grant and masking applied.",
    }


def _nullable(avro_type: Any) -> list[Any]:
    """A union with null first (so a null default is valid); unions are not nested, per the spec."""
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    return ["null", *(branch for branch in branches if branch != "null")]


def _widen_int(avro_type: Any) -> Any:
    """int → long: rounding or day-flooring may step just past the int range; readers promote int to long."""
    if isinstance(avro_type, list):
        return [_widen_int(branch) for branch in avro_type]
    if avro_type == "int":
        return "long"
    if isinstance(avro_type, dict) and avro_type.get("type") == "int" and "logicalType" not in avro_type:
        return {**avro_type, "type": "long"}
    return avro_type


def _name_digest(
    dataset_schema: dict[str, Any], granted: Iterable[dict], masking: dict[str, MaskingRule]
) -> str:
    text = json.dumps(
        {
            "dataset": _fingerprint(dataset_schema),
            "fields": [field["name"] for field in granted],
            "masking": {field: str(rule) for field, rule in sorted(masking.items())},
        },
        sort_keys=True,
    )
    return _digest(text)[:NAME_DIGEST_CHARS]


def _fingerprint(dataset_schema: dict[str, Any]) -> str:
    """SHA-256 of the dataset schema's Parsing Canonical Form: docs and attributes do not change it."""
    return _digest(avro.schema.parse(json.dumps(dataset_schema)).canonical_form)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- named types


def _full_name(name: str, namespace: str | None, enclosing: str | None) -> str:
    if "." in name:
        return name
    space = namespace if namespace is not None else enclosing
    return f"{space}.{name}" if space else name


def _namespace_of(full_name: str) -> str | None:
    return full_name.rsplit(".", 1)[0] if "." in full_name else None


def _named_types(schema: Any, enclosing: str | None = None, table: dict | None = None) -> dict[str, tuple]:
    """Every named type the schema defines: full name -> (definition, the namespace it was defined in)."""
    table = {} if table is None else table
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, enclosing, table)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in NAMED_KINDS:
            full = _full_name(schema["name"], schema.get("namespace"), enclosing)
            table.setdefault(full, (schema, enclosing))
            for field in schema.get("fields", ()):
                _named_types(field["type"], _namespace_of(full), table)
        elif kind == "array":
            _named_types(schema["items"], enclosing, table)
        elif kind == "map":
            _named_types(schema["values"], enclosing, table)
        elif isinstance(kind, dict | list):
            _named_types(kind, enclosing, table)
    return table


class _TypeCopier:
    """Copies types of granted fields out of the dataset schema into the tenant schema.

    Named types are written with explicit full names (the tenant record lives in another namespace),
    defined at their first use in the tenant schema and referenced by full name after — also when the
    dataset defined them inside a field the grant leaves out or masks to text.
    """

    def __init__(self, table: dict[str, tuple], dataset_record: str) -> None:
        self.table = table
        self.dataset_record = dataset_record
        self.defined: set[str] = set()

    def copy(self, schema: Any, enclosing: str | None) -> Any:
        if isinstance(schema, str):
            return schema if schema in PRIMITIVES else self._reference(schema, enclosing)
        if isinstance(schema, list):
            return [self.copy(branch, enclosing) for branch in schema]
        kind = schema.get("type")
        if kind in NAMED_KINDS:
            return self._named(schema, enclosing)
        if kind == "array":
            return {**schema, "items": self.copy(schema["items"], enclosing)}
        if kind == "map":
            return {**schema, "values": self.copy(schema["values"], enclosing)}
        if isinstance(kind, str) and kind in PRIMITIVES:
            return copy.deepcopy(schema)  # a primitive with attributes, e.g. a logical type
        return self.copy(kind, enclosing)  # {"type": <a name or a type>}

    def _reference(self, name: str, enclosing: str | None) -> str:
        candidates = [name] if "." in name else [_full_name(name, None, enclosing), name]
        full = next((candidate for candidate in candidates if candidate in self.table), None)
        if full is None:
            raise ValueError(f"the dataset schema uses the undefined type {name!r}")
        definition, defined_in = self.table[full]
        return self._named(definition, defined_in)

    def _named(self, schema: dict[str, Any], enclosing: str | None) -> Any:
        full = _full_name(schema["name"], schema.get("namespace"), enclosing)
        if full == self.dataset_record:
            # Carrying the whole dataset record inside a field would carry its masked fields in clear.
            raise ValueError(
                f"a field of {full} holds {full} itself; recursive dataset records cannot be shared"
            )
        if full in self.defined:
            return self._written_name(full)
        self.defined.add(full)
        written = {"type": schema["type"], "name": self._written_name(full)}
        written.update(
            (key, value) for key, value in schema.items() if key not in ("name", "namespace", "fields")
        )
        if "fields" in schema:
            inner = _namespace_of(full)
            written["fields"] = [
                {**field, "type": self.copy(field["type"], inner)} for field in schema["fields"]
            ]
        return written

    @staticmethod
    def _written_name(full: str) -> str:
        return full if "." in full else f"{UNQUALIFIED_NAMESPACE}.{full}"
