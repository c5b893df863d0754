"""The event codec: Confluent framing, round trips, and a typed error for every kind of bad bytes."""

from __future__ import annotations

import json
import struct

import avro.schema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdo.core.codec import (
    AvroCodec,
    CodecError,
    SchemaMismatchError,
    UndecodableError,
    UnknownSchemaError,
)
from pdo.core.registry_client import SchemaIdNotFound, subject_for

READING = avro.schema.parse(
    json.dumps(
        {
            "type": "record",
            "name": "Reading",
            "namespace": "pdo.test.v1",
            "fields": [
                {"name": "station", "type": "string"},
                {"name": "pm25", "type": "double"},
                {"name": "note", "type": ["null", "string"], "default": None},
            ],
        }
    )
)


class InMemoryRegistry:
    """Stands in for the HTTP registry so codec logic is tested alone; the real one is in integration."""

    def __init__(self) -> None:
        self.subjects: dict[tuple[str, str], int] = {}
        self.schemas: dict[int, str] = {}

    def register(self, subject: str, schema_json: str) -> int:
        key = (subject, schema_json)
        if key not in self.subjects:
            schema_id = next((i for i, s in self.schemas.items() if s == schema_json), len(self.schemas) + 1)
            self.subjects[key] = schema_id
            self.schemas[schema_id] = schema_json
        return self.subjects[key]

    def schema_by_id(self, schema_id: int) -> str:
        if schema_id not in self.schemas:
            raise SchemaIdNotFound(schema_id)
        return self.schemas[schema_id]


@pytest.fixture
def registry() -> InMemoryRegistry:
    return InMemoryRegistry()


@pytest.fixture
def codec(registry) -> AvroCodec:
    return AvroCodec(registry)


def test_encoded_bytes_carry_the_confluent_header_and_the_registered_id(codec, registry):
    data = codec.encode("pdo.air", READING, {"station": "S1", "pm25": 12.5, "note": None})

    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert registry.subjects[(subject_for("pdo.air", "pdo.test.v1.Reading"), registry.schemas[schema_id])]


def test_subject_follows_topic_record_name_strategy():
    assert (
        subject_for("pdo.catalog", "pdo.catalog.v1.DatasetRetired")
        == "pdo.catalog-pdo.catalog.v1.DatasetRetired"
    )


@given(
    station=st.text(max_size=40),
    pm25=st.floats(allow_nan=False),
    note=st.none() | st.text(max_size=20),
)
def test_any_valid_value_round_trips(station, pm25, note):
    codec = AvroCodec(InMemoryRegistry())
    value = {"station": station, "pm25": pm25, "note": note}

    decoded = codec.decode(codec.encode("pdo.air", READING, value))

    assert decoded.value == value
    assert decoded.schema_name == "pdo.test.v1.Reading"


def test_a_decoder_that_never_saw_the_schema_fetches_it_by_id(registry):
    data = AvroCodec(registry).encode("pdo.air", READING, {"station": "S9", "pm25": 1.0, "note": "x"})

    decoded = AvroCodec(registry).decode(data)

    assert decoded.value["station"] == "S9"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\x00\x00", "too few"),
        (b"\x01\x00\x00\x00\x01abc", "magic byte is 1"),
        (b'{"station": "S1"}', "magic byte"),
    ],
)
def test_bytes_that_are_not_framed_avro_are_undecodable(codec, data, says):
    with pytest.raises(UndecodableError, match=says) as caught:
        codec.decode(data)
    assert caught.value.reason_code == "UNDECODABLE"


def test_an_unknown_schema_id_is_its_own_error(codec):
    with pytest.raises(UnknownSchemaError, match="no schema with id 4242") as caught:
        codec.decode(struct.pack(">bI", 0, 4242) + b"\x02S")
    assert caught.value.reason_code == "UNKNOWN_SCHEMA"


def test_truncated_avro_body_is_a_schema_mismatch(codec):
    data = codec.encode("pdo.air", READING, {"station": "Station-7", "pm25": 3.0, "note": "fine"})

    for cut in range(5, len(data)):
        with pytest.raises(SchemaMismatchError):
            codec.decode(data[:cut])


def test_trailing_bytes_are_a_schema_mismatch(codec):
    data = codec.encode("pdo.air", READING, {"station": "S1", "pm25": 3.0, "note": None})

    with pytest.raises(SchemaMismatchError, match="left over"):
        codec.decode(data + b"\x00\x01")


@pytest.mark.parametrize(
    "value",
    [
        {"station": "S1"},
        {"station": 7, "pm25": 1.0, "note": None},
        {"station": "S1", "pm25": "high", "note": None},
    ],
)
def test_a_value_that_does_not_fit_the_schema_is_refused_on_encode(codec, value):
    with pytest.raises(SchemaMismatchError, match="does not fit pdo.test.v1.Reading"):
        codec.encode("pdo.air", READING, value)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_anything_but_a_codec_error(data):
    registry = InMemoryRegistry()
    codec = AvroCodec(registry)
    codec.encode("pdo.air", READING, {"station": "S", "pm25": 0.0, "note": None})
    try:
        decoded = codec.decode(data)
    except CodecError as error:
        assert error.reason_code in {"UNDECODABLE", "UNKNOWN_SCHEMA", "SCHEMA_MISMATCH"}
    else:
        # Only bytes that really are a framed Reading may decode.
        assert data[:5] == struct.pack(">bI", 0, 1)
        assert set(decoded.value) == {"station", "pm25", "note"}
