"""The Avro schemas under schemas/: convention, docs, event heads, round trips through avro and fastavro."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from decimal import Decimal
from pathlib import Path

import avro.io
import avro.schema
import fastavro
import fastavro.schema
import pytest
from avro.schema import (
    ArraySchema,
    BytesDecimalSchema,
    DateSchema,
    EnumSchema,
    MapSchema,
    PrimitiveSchema,
    RecordSchema,
    Schema,
    TimestampMillisSchema,
    UnionSchema,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pdo.core import schemas

ALL = schemas.load_all()
EVENTS = sorted(name for name in ALL if schemas.is_event(name))
DATASETS = sorted(name for name in ALL if schemas.area_of(name) == schemas.DATASETS_AREA)

REQUIRED = {
    "catalog": {"DatasetRegistered", "DatasetUpdated", "DatasetRetired"},
    "requests": {"DataRequestSubmitted", "DataRequestReferred", "DataRequestWithdrawn"},
    "authorizations": {
        "AuthorizationGranted",
        "AuthorizationDenied",
        "AuthorizationSuspended",
        "AuthorizationResumed",
        "AuthorizationRevoked",
        "AuthorizationExpired",
    },
    "sharing": {"RecordsDelivered", "RecordsDeliveredBatch"},
    "metering": {"UsageRecorded", "QuotaExceeded", "StatementIssued", "DeliveriesDigested"},
    "deadletter": {"DeadLetter"},
    "audit": {"AuditEntryLogged", "AuditCheckpointSigned"},
    "datasets": {"TrafficFlow", "EnterpriseRegistry", "AirQuality"},
    "types": {"Provenance"},
    "aggregation": {"WindowAggregated", "PrivacyBudgetExhausted"},
    "access": {
        "PrincipalCreated",
        "PrincipalDisabled",
        "PrincipalEnabled",
        "ApiKeyIssued",
        "ApiKeyRevoked",
        "KafkaCredentialsIssued",
        "KafkaCredentialsRevoked",
        "AclsApplied",
        "TopicsCreated",
        "AccessChangeFailed",
        "PolicyInForce",
        "DeadLetterReplayed",
        "PeriodClosed",
    },
}

SENSITIVE = {
    "pdo.datasets.v1.TrafficFlow": {"plate_number", "driver_phone"},
    "pdo.datasets.v1.EnterpriseRegistry": {"legal_representative", "legal_rep_id_number", "contact_phone"},
    "pdo.datasets.v1.AirQuality": {"station_manager_phone"},
}


# ---------------------------------------------------------------- example values, generated from the schema

EXAMPLE_TIME = dt.datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=dt.UTC)
STRING_HINTS = {
    "event_id": lambda: str(uuid.uuid4()),
    "actor": lambda: "operator:alice",
    "tenant_id": lambda: "tenant:acme-logistics",
    "dataset_id": lambda: "transport-traffic-flow",
    "currency": lambda: "CNY",
    "plate_number": lambda: "京A12345",
    "driver_phone": lambda: "13812345678",
}


def example(schema: Schema, name: str = "value", nulls: bool = False):
    """A plausible value of `schema`; optional fields get their non-null branch unless `nulls`."""
    if isinstance(schema, UnionSchema):
        branches = [s for s in schema.schemas if s.type != "null"]
        return None if nulls and len(branches) < len(schema.schemas) else example(branches[0], name, nulls)
    if isinstance(schema, RecordSchema):
        return {field.name: example(field.type, field.name, nulls) for field in schema.fields}
    if isinstance(schema, EnumSchema):
        return schema.symbols[0]
    if isinstance(schema, ArraySchema):
        return [example(schema.items, name, nulls)]
    if isinstance(schema, MapSchema):
        return {f"{name}-key": example(schema.values, name, nulls)}
    return _example_primitive(schema, name)


def _example_primitive(schema: Schema, name: str):
    if isinstance(schema, TimestampMillisSchema):
        return EXAMPLE_TIME
    if isinstance(schema, DateSchema):
        return EXAMPLE_TIME.date()
    if isinstance(schema, BytesDecimalSchema):
        return Decimal("1234.50")
    values = {
        "string": lambda: STRING_HINTS.get(name, lambda: f"{name}-0001")(),
        "int": lambda: 7,
        "long": lambda: 1_000_000_007,
        "double": lambda: 42.5,
        "float": lambda: 1.5,
        "boolean": lambda: True,
        "bytes": lambda: f"{name}\x00\xff".encode(),
        "null": lambda: None,
    }
    assert isinstance(schema, PrimitiveSchema), f"no example for {schema.type} at {name}"
    return values[schema.type]()


# ---------------------------------------------------------------- hypothesis strategies, from the schema

LONGS = st.integers(-(2**63), 2**63 - 1)
TIMES = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
MONEY = st.decimals(
    min_value=Decimal("-9999999999999999.99"),
    max_value=Decimal("9999999999999999.99"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)


def strategy(schema: Schema) -> st.SearchStrategy:
    """A hypothesis strategy for any value of `schema`."""
    if isinstance(schema, UnionSchema):
        return st.one_of([strategy(branch) for branch in schema.schemas])
    if isinstance(schema, RecordSchema):
        return st.fixed_dictionaries({field.name: strategy(field.type) for field in schema.fields})
    if isinstance(schema, EnumSchema):
        return st.sampled_from(schema.symbols)
    if isinstance(schema, ArraySchema):
        return st.lists(strategy(schema.items), max_size=3)
    if isinstance(schema, MapSchema):
        return st.dictionaries(st.text(max_size=8), strategy(schema.values), max_size=3)
    if isinstance(schema, TimestampMillisSchema):
        return TIMES
    if isinstance(schema, DateSchema):
        return st.dates()
    if isinstance(schema, BytesDecimalSchema):
        return MONEY
    primitives = {
        "string": st.text(max_size=20),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": LONGS,
        "double": st.floats(allow_nan=False),
        "boolean": st.booleans(),
        "bytes": st.binary(max_size=20),
        "null": st.none(),
    }
    return primitives[schema.type]


# ---------------------------------------------------------------- round trips


def avro_round_trip(schema: Schema, value):
    buffer = io.BytesIO()
    avro.io.DatumWriter(schema).write(value, avro.io.BinaryEncoder(buffer))
    encoded = buffer.getvalue()
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(encoded)))
    return encoded, decoded


def fastavro_round_trip(schema: Schema, value):
    parsed = fastavro.parse_schema(schema.to_json())
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, value)
    encoded = buffer.getvalue()
    decoded = fastavro.schemaless_reader(io.BytesIO(encoded), parsed, parsed)
    return encoded, decoded


def assert_round_trips(schema: Schema, value) -> None:
    avro_bytes, from_avro = avro_round_trip(schema, value)
    fast_bytes, from_fast = fastavro_round_trip(schema, value)
    assert from_avro == value
    assert from_fast == value
    assert avro_bytes == fast_bytes, "avro and fastavro encode the same value differently"


@pytest.mark.parametrize("full_name", sorted(ALL))
@pytest.mark.parametrize("nulls", [False, True], ids=["filled", "nulls"])
def test_example_value_round_trips_through_avro_and_fastavro(full_name, nulls):
    schema = ALL[full_name]
    assert_round_trips(schema, example(schema, nulls=nulls))


HYPOTHESIS_TYPES = [
    "pdo.authorizations.v1.AuthorizationGranted",
    "pdo.catalog.v1.DatasetRegistered",
    "pdo.deadletter.v1.DeadLetter",
    "pdo.metering.v1.StatementIssued",
    "pdo.datasets.v1.EnterpriseRegistry",
]


@pytest.mark.parametrize("full_name", HYPOTHESIS_TYPES)
def test_generated_values_round_trip(full_name):
    schema = schemas.get(full_name)

    @settings(max_examples=60, deadline=None)
    @given(strategy(schema))
    def check(value):
        assert_round_trips(schema, value)

    check()


# ---------------------------------------------------------------- convention and content


def test_every_required_type_exists_and_nothing_else():
    expected = {f"pdo.{area}.v1.{name}" for area, names in REQUIRED.items() for name in names}
    assert set(ALL) == expected


@pytest.mark.parametrize("full_name", sorted(ALL))
def test_file_path_matches_full_name(full_name):
    path = schemas.path_of(full_name)
    _, area, version, name = full_name.split(".")
    assert (path.parent.name, path.stem, version) == (area, name, "v1")
    assert json.loads(path.read_text(encoding="utf-8"))["namespace"] == f"pdo.{area}.v1"


@pytest.mark.parametrize("full_name", EVENTS)
def test_event_begins_with_event_id_occurred_at_actor(full_name):
    fields = ALL[full_name].fields
    assert [f.name for f in fields[:3]] == list(schemas.EVENT_HEAD)
    assert fields[0].type.type == "string"
    assert isinstance(fields[1].type, TimestampMillisSchema)
    assert fields[2].type.type == "string"


@pytest.mark.parametrize("full_name", DATASETS)
def test_dataset_record_has_id_and_timestamp(full_name):
    fields = {f.name: f.type for f in ALL[full_name].fields}
    assert fields["record_id"].type == "string"
    assert any(isinstance(t, TimestampMillisSchema) for n, t in fields.items() if n.endswith("_at"))


def _named_types(schema_json, where="") -> list[tuple[str, dict]]:
    """Every record/enum definition in a schema's JSON, with a path for messages."""
    found = []
    if isinstance(schema_json, list):
        for branch in schema_json:
            found += _named_types(branch, where)
    elif isinstance(schema_json, dict):
        kind = schema_json.get("type")
        if kind in ("record", "enum"):
            where = f"{where}/{schema_json['name']}"
            found.append((where, schema_json))
        for field in schema_json.get("fields", []):
            found += _named_types(field["type"], where)
        for key in ("items", "values"):
            if key in schema_json:
                found += _named_types(schema_json[key], where)
        if isinstance(kind, dict | list):
            found += _named_types(kind, where)
    return found


@pytest.mark.parametrize("full_name", sorted(ALL))
def test_every_record_enum_and_field_has_doc(full_name):
    document = json.loads(schemas.path_of(full_name).read_text(encoding="utf-8"))
    missing = []
    for where, named in _named_types(document):
        if not named.get("doc"):
            missing.append(where)
        missing += [f"{where}.{f['name']}" for f in named.get("fields", []) if not f.get("doc")]
    assert not missing, f"{full_name}: no doc on {missing}"


def _walk_types(schema: Schema):
    yield schema
    if isinstance(schema, UnionSchema):
        for branch in schema.schemas:
            yield from _walk_types(branch)
    elif isinstance(schema, RecordSchema):
        for field in schema.fields:
            yield from _walk_types(field.type)
    elif isinstance(schema, ArraySchema):
        yield from _walk_types(schema.items)
    elif isinstance(schema, MapSchema):
        yield from _walk_types(schema.values)


@pytest.mark.parametrize("full_name", sorted(ALL))
def test_optional_fields_are_null_first_with_null_default(full_name):
    for record in (s for s in _walk_types(ALL[full_name]) if isinstance(s, RecordSchema)):
        for field in record.fields:
            if isinstance(field.type, UnionSchema):
                assert field.type.schemas[0].type == "null", f"{record.fullname}.{field.name}"
                assert field.has_default and field.default is None, f"{record.fullname}.{field.name}"


@pytest.mark.parametrize("full_name", sorted(ALL))
def test_money_is_decimal_18_2_never_float(full_name):
    for schema in _walk_types(ALL[full_name]):
        assert schema.type != "float", full_name
        if isinstance(schema, BytesDecimalSchema):
            assert (schema.precision, schema.scale) == (18, 2), full_name


@pytest.mark.parametrize("full_name", sorted(SENSITIVE))
def test_dataset_sensitive_fields_are_marked(full_name):
    schema = schemas.get(full_name)
    marked = schemas.sensitive_fields(schema)
    assert set(marked) == SENSITIVE[full_name]
    masking = schemas.get("pdo.catalog.v1.DatasetRegistered").fields_dict["sensitive_fields"].type.items
    rules = set(masking.fields_dict["masking"].type.symbols)
    for name, rule in marked.items():
        assert rule in rules, f"{full_name}.{name}: unknown masking rule {rule}"
        assert "Sensitive" in schema.fields_dict[name].doc


def test_masking_rules_agree_between_catalog_and_grants():
    catalog = schemas.get("pdo.catalog.v1.DatasetRegistered").fields_dict["sensitive_fields"].type.items
    grant = schemas.get("pdo.authorizations.v1.AuthorizationGranted").fields_dict["masking"].type.values
    assert catalog.fields_dict["masking"].type.symbols == grant.symbols


# ---------------------------------------------------------------- the loader


def test_fingerprint_is_sha256_of_canonical_form():
    schema = schemas.get("pdo.deadletter.v1.DeadLetter")
    canonical = schemas.canonical_form(schema)
    assert "doc" not in canonical
    assert len(schemas.fingerprint(schema)) == 64
    assert schemas.fingerprint(avro.schema.parse(canonical)) == schemas.fingerprint(schema)


@pytest.mark.parametrize("full_name", sorted(ALL))
def test_canonical_form_agrees_with_fastavro(full_name):
    schema = ALL[full_name]
    assert schemas.canonical_form(schema) == fastavro.schema.to_parsing_canonical_form(schema.to_json())


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError) as caught:
        schemas.get("pdo.catalog.v1.DatasetRetird")
    assert isinstance(caught.value, schemas.PdoError)
    assert "pdo.catalog.v1.DatasetRetired" in str(caught.value)
    with pytest.raises(schemas.SchemaNotFound, match="pdo.deadletter.v1.DeadLetter"):
        schemas.path_of("DeadLetter")


def _write(root: Path, relative: str, name: str, namespace: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"type": "record", "name": name, "namespace": namespace, "doc": "d", "fields": []}
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_loader_reads_a_given_root(tmp_path):
    path = _write(tmp_path, "things/Thing.avsc", "Thing", "pdo.things.v1")
    assert list(schemas.load_all(tmp_path)) == ["pdo.things.v1.Thing"]
    assert schemas.path_of("pdo.things.v1.Thing", tmp_path) == path.resolve()


def test_loader_refuses_a_misnamed_file(tmp_path):
    path = _write(tmp_path, "things/Thing.avsc", "Other", "pdo.things.v1")
    with pytest.raises(schemas.SchemaError, match="pdo.things.v1.Other") as caught:
        schemas.load_all(tmp_path)
    assert str(path.name) in str(caught.value)


def test_loader_refuses_duplicates_naming_both_files(tmp_path):
    _write(tmp_path, "things/Thing.avsc", "Thing", "pdo.things.v1")
    (tmp_path / "things" / "copy").mkdir()
    _write(tmp_path, "things/copy/Thing.avsc", "Thing", "pdo.things.v1")
    with pytest.raises(schemas.SchemaError, match="copy"):
        schemas.load_all(tmp_path)


def test_loader_reports_duplicate_full_names_with_both_paths(tmp_path, monkeypatch):
    first = _write(tmp_path, "things/Thing.avsc", "Thing", "pdo.things.v1")
    second = _write(tmp_path, "things/Thing2.avsc", "Thing", "pdo.things.v1")
    monkeypatch.setattr(schemas, "_check_convention", lambda schema, path, root: schema)
    with pytest.raises(schemas.SchemaError) as caught:
        schemas.load_all(tmp_path)
    assert str(first.name) in str(caught.value) and str(second.name) in str(caught.value)


def test_loader_names_an_unparsable_file(tmp_path):
    path = tmp_path / "things" / "Broken.avsc"
    path.parent.mkdir()
    path.write_text('{"type": "record", "name": "Broken", "fields": [{"name": "x"}]}', encoding="utf-8")
    with pytest.raises(schemas.SchemaError, match="Broken.avsc"):
        schemas.load_all(tmp_path)
