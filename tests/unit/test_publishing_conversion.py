"""Records checked against a dataset's schema: JSON converted to Avro values, and reasons a provider can act on.

Every accepted value must also encode with fastavro and read back equal: the checks may be stricter than
the encoder (unknown fields, NaN, naive timestamps) but never looser.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdo.core import schemas
from pdo.core.errors import InvalidInput
from pdo.publishing.conversion import RecordError, conform, from_json, parse_schema

ROOT = Path(__file__).resolve().parents[2]
AIR_QUALITY = json.loads((ROOT / "deploy/examples/air-quality.dataset.json").read_text())["record_schema"]
ENTERPRISE = schemas.path_of("pdo.datasets.v1.EnterpriseRegistry").read_text()
TRAFFIC = schemas.path_of("pdo.datasets.v1.TrafficFlow").read_text()

READING = {
    "record_id": "aq-1",
    "station_id": "hz-xh-001",
    "district": "Xihu",
    "pm25": 36.7,
    "pm10": 57.7,
    "no2": 31.9,
    "o3": 43.9,
    "aqi": 54,
    "observed_at": "2026-03-01T05:00:00Z",
    "station_manager_phone": "13905710231",
}
ENTRY = {
    "record_id": "ent-1",
    "credit_code": "91330100MA2XXXXX0A",
    "enterprise_name": "Hangzhou Example Tech Co., Ltd.",
    "legal_representative": "Zhang San",
    "legal_rep_id_number": "330102199001011234",
    "contact_phone": "0571-88888888",
    "registered_capital": "10000000.00",
    "industry_code": "I6510",
    "district": "Binjiang",
    "status": "ACTIVE",
    "established_on": "2016-05-03",
    "updated_at": "2026-02-27T09:30:00+08:00",
}
# Every type and logical type the converter knows, for the round-trip and hostile-input tests.
EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "test.v1",
    "fields": [
        {"name": "record_id", "type": "string"},
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "amount", "type": "double"},
        {"name": "blob", "type": "bytes"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "money", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {
            "name": "place",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Place",
                    "fields": [{"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}],
                },
            ],
            "default": None,
        },
        {"name": "second_colour", "type": ["null", "Colour"], "default": None},
        {"name": "note", "type": "string", "default": "none"},
        {"name": "raw", "type": "bytes", "default": "\u00ff\u0001"},
    ],
}
EVERYTHING_JSON = {
    "record_id": "e-1",
    "flag": True,
    "small": -5,
    "big": 2**40,
    "ratio": 0.5,
    "amount": 3,
    "blob": "aGVsbG8=",
    "digest": "AAECAw==",
    "money": "12.3",
    "day": "2026-03-01",
    "clock": "08:30:00.250",
    "at": "2026-03-01T08:30:00.123456+08:00",
    "local": "2026-03-01T08:30:00",
    "uid": "12345678-1234-5678-1234-567812345678",
    "colour": "RED",
    "tags": ["a", "b"],
    "counts": {"x": 1},
    "place": {"lat": 30.25, "lon": 120.16},
    "second_colour": "GREEN",
}


def fails(schema, value, convert=from_json) -> str:
    with pytest.raises(RecordError) as caught:
        convert(schema, value)
    return str(caught.value)


def round_trip(schema, value):
    """Encode with fastavro and read back: what a consumer will see."""
    parsed = parse_schema(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, value)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, parsed, None)


# -- conversion -----------------------------------------------------------------------------------------


def test_a_json_reading_becomes_avro_values():
    value = from_json(AIR_QUALITY, READING)

    assert value["observed_at"] == datetime(2026, 3, 1, 5, tzinfo=UTC)
    assert value["pm25"] == 36.7
    assert round_trip(AIR_QUALITY, value) == value


def test_a_missing_nullable_field_takes_its_default():
    reading = {k: v for k, v in READING.items() if k != "station_manager_phone"}

    assert from_json(AIR_QUALITY, reading)["station_manager_phone"] is None


def test_epoch_millis_are_a_timestamp_too():
    value = from_json(AIR_QUALITY, {**READING, "observed_at": 1_772_341_200_000})

    assert value["observed_at"] == datetime(2026, 3, 1, 5, tzinfo=UTC)


def test_an_offset_timestamp_is_the_same_instant():
    value = from_json(AIR_QUALITY, {**READING, "observed_at": "2026-03-01T13:00:00+08:00"})

    assert value["observed_at"] == datetime(2026, 3, 1, 5, tzinfo=UTC)


def test_decimals_dates_and_enums_of_the_enterprise_register():
    value = from_json(ENTERPRISE, ENTRY)

    assert value["registered_capital"] == Decimal("10000000.00")
    assert value["established_on"] == date(2016, 5, 3)
    assert value["updated_at"] == datetime(2026, 2, 27, 1, 30, tzinfo=UTC)
    assert round_trip(ENTERPRISE, value) == value


def test_every_type_converts_and_round_trips():
    value = from_json(EVERYTHING, EVERYTHING_JSON)

    assert value["blob"] == b"hello"
    assert value["digest"] == b"\x00\x01\x02\x03"
    assert value["money"] == Decimal("12.30")
    assert value["clock"] == time(8, 30, 0, 250000)
    assert value["at"] == datetime(2026, 3, 1, 0, 30, 0, 123456, tzinfo=UTC)
    assert value["local"] == datetime(2026, 3, 1, 8, 30)
    assert value["amount"] == 3.0 and isinstance(value["amount"], float)
    assert value["note"] == "none"
    assert value["raw"] == b"\xff\x01"  # a bytes default is text of code points, per the Avro spec
    assert round_trip(EVERYTHING, value) == value


def test_avro_tagged_unions_from_standard_tools_are_read():
    value = from_json(EVERYTHING, {**EVERYTHING_JSON, "second_colour": {"test.v1.Colour": "GREEN"}})

    assert value["second_colour"] == "GREEN"


def test_python_values_are_checked_as_they_are():
    reading = {**READING, "observed_at": datetime(2026, 3, 1, 5, tzinfo=UTC)}

    assert conform(AIR_QUALITY, reading)["observed_at"] == reading["observed_at"]
    entry = {
        **ENTRY,
        "registered_capital": Decimal("10000000"),
        "established_on": date(2016, 5, 3),
        "updated_at": datetime(2026, 2, 27, tzinfo=UTC),
    }
    assert conform(ENTERPRISE, entry)["registered_capital"] == Decimal("10000000.00")


def test_python_mode_wants_python_types_not_json_text():
    assert "expected timestamp-millis (a datetime or epoch milliseconds)" in fails(
        AIR_QUALITY, READING, conform
    )
    assert "a Decimal" in fails(ENTERPRISE, {**ENTRY, "updated_at": 0, "established_on": 0}, conform)


# -- reasons for records that do not fit -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"pm25": "high"}, "pm25: expected double, got 'high'"),
        ({"aqi": 54.5}, "aqi: expected int, got 54.5"),
        ({"aqi": True}, "aqi: expected int, got true"),
        ({"aqi": 2**31}, "aqi: 2147483648 is out of range for int"),
        ({"aqi": 10**5000}, "aqi: a whole number of 16610 bits is out of range for int"),
        ({"pm25": 10**400}, "pm25: a whole number of 1329 bits is too large for double"),
        ({"aqi": None}, "aqi: expected int, got null"),
        ({"district": ["Xihu"]}, "district: expected string, got a list of 1"),
        ({"station_manager_phone": 13905710231}, "station_manager_phone: expected string, got 13905710231"),
        ({"observed_at": "yesterday"}, "observed_at: 'yesterday' is not an ISO 8601 timestamp"),
        ({"observed_at": "2026-03-01T05:00:00"}, "has no UTC offset"),
        ({"observed_at": 10**20}, "out of range for timestamp-millis"),
        ({"observed_at": 9 * 10**18}, "milliseconds since 1970 is out of range"),
        ({"record_id": {"id": 1}}, "record_id: expected string, got an object"),
    ],
)
def test_a_wrong_value_names_the_field_and_what_was_wrong(change, reason):
    assert reason in fails(AIR_QUALITY, {**READING, **change})


def test_an_unknown_field_is_refused_not_dropped():
    reason = fails(AIR_QUALITY, {**READING, "pm2_5": 30.0})

    assert reason.startswith("pm2_5: is not a field of AirQuality (its fields: record_id, station_id")


def test_a_missing_required_field_is_refused():
    reading = {k: v for k, v in READING.items() if k != "pm25"}

    assert fails(AIR_QUALITY, reading) == "pm25: is missing (the schema requires it: no default)"


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused(number):
    assert "is not a finite number" in fails(AIR_QUALITY, {**READING, "pm10": number})
    assert "is not a finite number" in fails(AIR_QUALITY, {**READING, "pm10": number}, conform)


def test_a_record_that_is_not_an_object_is_refused():
    assert fails(AIR_QUALITY, [READING]) == "expected record AirQuality (a JSON object), got a list of 1"
    assert fails(AIR_QUALITY, None) == "expected record AirQuality (a JSON object), got null"


def test_a_huge_string_is_quoted_only_in_part():
    reason = fails(AIR_QUALITY, {**READING, "aqi": "9" * 1_000_000})

    assert len(reason) < 200
    assert "(1000000 characters)" in reason


def test_a_lone_surrogate_is_not_text():
    assert "not valid Unicode" in fails(AIR_QUALITY, {**READING, "district": "X\ud800"})


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"registered_capital": 1.5}, "send decimals as text"),
        ({"registered_capital": "1.005"}, "more than 2 decimal places (decimal(18, 2))"),
        ({"registered_capital": "1e16"}, "more than 16 digits before the point"),
        ({"registered_capital": "1e-999999999"}, "more than 2 decimal places"),
        ({"registered_capital": "NaN"}, "is not a finite number"),
        ({"registered_capital": "ten"}, "'ten' is not a decimal number"),
        (
            {"status": "GONE"},
            "status: expected one of ACTIVE, REVOKED, CANCELLED, MOVED_OUT, OTHER, got 'GONE'",
        ),
        ({"established_on": "2016-13-01"}, "is not a date (YYYY-MM-DD)"),
        ({"established_on": "2016-05-03T00:00:00Z"}, "is not a date"),
    ],
)
def test_enterprise_register_reasons(change, reason):
    assert reason in fails(ENTERPRISE, {**ENTRY, **change})


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"blob": "not base64!"}, "blob: 'not base64!' is not base64 text"),
        ({"digest": "AAEC"}, "digest: test.v1.Digest takes exactly 4 bytes, got 3"),
        ({"clock": "25:00"}, "is not a time of day"),
        ({"clock": 86_400_000}, "is not a time of day"),
        ({"local": "2026-03-01T08:30:00Z"}, "local-timestamp-millis is a local time"),
        ({"uid": "nope"}, "uid: 'nope' is not a UUID"),
        ({"ratio": 1e39}, "too large for a 32-bit float"),
        ({"tags": ["a", 1]}, "tags[1]: expected string, got 1"),
        ({"counts": {"x": "1"}}, "counts['x']: expected long, got '1'"),
        ({"place": {"lat": 1.0}}, "place.lon: is missing"),
        ({"place": {"lat": 1.0, "lon": 2.0, "alt": 3.0}}, "place.alt: is not a field of Place"),
        ({"place": "here"}, "place: expected record Place (a JSON object), got 'here'"),
        ({"second_colour": "BLUE"}, "second_colour: expected one of RED, GREEN, got 'BLUE'"),
    ],
)
def test_every_type_has_a_reason(change, reason):
    assert reason in fails(EVERYTHING, {**EVERYTHING_JSON, **change})


def test_a_union_with_several_branches_lists_them():
    schema = {"type": "record", "name": "U", "fields": [{"name": "v", "type": ["null", "int", "string"]}]}

    assert fails(schema, {"v": 1.5}) == "v: expected null or int or string, got 1.5"


def test_deep_nesting_is_refused_not_a_crash():
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"], "default": None}],
    }
    value: dict = {}
    for _ in range(500):
        value = {"next": value}

    assert "nested more than" in fails(schema, value)


def test_a_record_error_is_invalid_input_with_path_and_problem():
    with pytest.raises(InvalidInput) as caught:
        from_json(AIR_QUALITY, {**READING, "pm25": "high"})

    assert caught.value.path == "pm25"
    assert caught.value.problem == "expected double, got 'high'"


def test_python_datetimes_without_offset_and_dates_as_datetimes_are_refused():
    naive = {**READING, "observed_at": datetime(2026, 3, 1, 5)}
    assert "has no UTC offset" in fails(AIR_QUALITY, naive, conform)
    moment = {**ENTRY, "registered_capital": Decimal(1), "established_on": datetime(2016, 5, 3, tzinfo=UTC)}
    assert "expected date" in fails(ENTERPRISE, moment, conform)


def test_an_aware_datetime_in_any_zone_is_kept_as_that_instant():
    beijing = timezone(timedelta(hours=8))
    reading = {**READING, "observed_at": datetime(2026, 3, 1, 13, tzinfo=beijing)}

    assert round_trip(AIR_QUALITY, conform(AIR_QUALITY, reading))["observed_at"] == datetime(
        2026, 3, 1, 5, tzinfo=UTC
    )


# -- properties ---------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from([f["name"] for f in EVERYTHING["fields"]]), junk=JSON_VALUES)
def test_any_junk_in_any_field_is_refused_or_encodes(field, junk):
    """Never an exception other than RecordError; whatever is accepted, fastavro can write."""
    try:
        value = from_json(EVERYTHING, {**EVERYTHING_JSON, field: junk})
    except RecordError as error:
        assert error.path.startswith(field)
        return
    round_trip(EVERYTHING, value)


READINGS = st.fixed_dictionaries(
    {
        "record_id": st.text(min_size=1, max_size=30),
        "station_id": st.text(max_size=20),
        "district": st.text(max_size=20),
        "pm25": st.floats(allow_nan=False, allow_infinity=False),
        "pm10": st.floats(0, 1000),
        "no2": st.integers(0, 2000),
        "o3": st.floats(0, 1000),
        "aqi": st.integers(0, 500),
        "observed_at": st.datetimes(
            min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)),
        "station_manager_phone": st.none() | st.text(max_size=15),
    }
).filter(
    lambda reading: all(
        not (0xD800 <= ord(c) <= 0xDFFF) for v in reading.values() if isinstance(v, str) for c in v
    )
)


@settings(max_examples=150, deadline=None)
@given(reading=READINGS)
def test_any_valid_reading_survives_json_and_avro(reading):
    as_json = json.loads(json.dumps({**reading, "observed_at": reading["observed_at"].isoformat()}))

    value = from_json(AIR_QUALITY, as_json)

    assert round_trip(AIR_QUALITY, value) == {**reading, "no2": float(reading["no2"])}


def test_uuid_objects_are_accepted_in_python_mode():
    value = conform(EVERYTHING, {**from_json(EVERYTHING, EVERYTHING_JSON), "uid": uuid.UUID(int=7)})

    assert value["uid"] == uuid.UUID(int=7)
