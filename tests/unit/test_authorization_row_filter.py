"""The row-filter language: what it accepts, how it matches, and how it refuses hostile or broken text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdo.authorization import row_filter
from pdo.authorization.row_filter import MAX_DEPTH, MAX_LENGTH, RowFilterError, parse
from pdo.core.errors import InvalidInput

FIELDS = ["district", "speed_kmh", "lane", "vehicle_type", "observed_at", "driver_phone"]
CAR = {
    "district": "Haidian",
    "speed_kmh": 72.5,
    "lane": 2,
    "vehicle_type": "PASSENGER_CAR",
    "observed_at": datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
    "driver_phone": None,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("district == 'Haidian'", True),
        ("district != 'Haidian'", False),
        ("speed_kmh > 60", True),
        ("speed_kmh >= 72.5", True),
        ("speed_kmh < 72.5", False),
        ("lane <= 2", True),
        ("lane in (1, 2, 3)", True),
        ("vehicle_type in ('BUS', 'TRUCK')", False),
        ("vehicle_type not in ('BUS', 'TRUCK')", True),
        ("district == 'Haidian' and speed_kmh > 100", False),
        ("district == 'Chaoyang' or speed_kmh > 70", True),
        ("not (district == 'Chaoyang')", True),
        ("NOT district == 'Haidian' OR lane == 2", True),
        ("(district == 'Haidian' and (lane == 1 or lane == 2)) and not vehicle_type == 'BUS'", True),
        ("driver_phone == null", True),
        ("driver_phone != null", False),
        ("observed_at >= '2026-03-01T00:00:00+00:00'", True),
        ("observed_at < '2026-03-01'", False),
        ("district > 'A'", True),
    ],
)
def test_filters_match_records(text, expected):
    assert parse(text, FIELDS).matches(CAR) is expected


def test_a_filter_knows_the_fields_it_reads():
    assert parse("district == 'x' or (lane > 1 and not lane in (4))", FIELDS).fields == {"district", "lane"}


def test_strings_keep_doubled_quotes_as_one():
    assert parse("district == 'O''Hare'", FIELDS).matches({"district": "O'Hare"})


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("lane == '2'", {"lane": 2}),  # text never equals a number
        ("lane == true", {"lane": 1}),  # nor does a boolean
        ("speed_kmh > 'fast'", {"speed_kmh": 90.0}),  # mixed kinds have no order
        ("speed_kmh > 10", {}),  # a missing field is null, and null has no order
        ("district == 'Haidian'", {"district": None}),
    ],
)
def test_values_of_different_kinds_never_match(text, record):
    assert not parse(text, FIELDS).matches(record)


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("district == 'Haidian", 12, "string is never closed"),
        ("(district == 'x'", 16, "expected ')' to close the '(' at position 0"),
        ("district == 'x')", 15, "expected 'and', 'or' or the end"),
        ("district = 'x'", 9, "unexpected character '='"),
        ("district == ", 12, "expected a value"),
        ("district == Haidian", 12, "expected a value"),
        ("== 'x'", 0, "expected a field name"),
        ("district 'x'", 9, "expected a comparison"),
        ("lane in 1, 2", 8, "expected '(' to start the list"),
        ("lane in (1 2)", 11, "expected ',' or ')'"),
        ("lane not 3", 9, "expected 'in'"),
        ("district == 'x' and", 19, "expected a field name"),
        ("", 0, "the filter is empty"),
        ("   ", 3, "the filter is empty"),
    ],
)
def test_parse_errors_say_where_and_why(text, position, reason):
    with pytest.raises(RowFilterError) as refused:
        parse(text, FIELDS)
    assert refused.value.position == position
    assert reason in refused.value.reason
    assert f"at position {position}" in refused.value.message


def test_an_unknown_field_is_refused_with_suggestions():
    with pytest.raises(RowFilterError) as refused:
        parse("district == 'x' and speed > 3", FIELDS)
    assert refused.value.position == 20
    assert "unknown field 'speed'" in refused.value.message
    assert "speed_kmh" in refused.value.hint
    assert isinstance(refused.value, InvalidInput)


@pytest.mark.parametrize(
    "hostile",
    [
        "district == 'x'; DROP TABLE authz_grants; --",
        "district == 'x' or 1 == 1",
        "__import__('os').system('rm -rf /')",
        "district.__class__ == 'x'",
        "district == 'x' /* comment */",
        "lane == 0x10",
        "lane == 1e999999 and",
        'district == "Haidian"',
        "district == 'x' \x00",
        "exec('1')",
    ],
)
def test_injection_like_text_is_just_a_syntax_error(hostile):
    with pytest.raises(InvalidInput):
        parse(hostile, FIELDS)


def test_deep_nesting_is_refused_before_the_stack_runs_out():
    with pytest.raises(RowFilterError, match=f"nested more than {MAX_DEPTH} levels"):
        parse("(" * 500 + "lane == 1" + ")" * 500, FIELDS)
    with pytest.raises(RowFilterError, match="nested"):
        parse("not " * 200 + "lane == 1", FIELDS)


def test_nesting_up_to_the_limit_is_fine():
    depth = MAX_DEPTH
    assert parse("(" * depth + "lane == 2" + ")" * depth, FIELDS).matches(CAR)


def test_huge_input_is_refused_quickly():
    with pytest.raises(RowFilterError, match=f"longer than {MAX_LENGTH}"):
        parse("lane == 1 or " * 100_000 + "lane == 2", FIELDS)


def test_long_flat_chains_within_the_limit_parse_and_match():
    text = " or ".join(f"lane == {n}" for n in range(250))
    assert len(text) < MAX_LENGTH
    assert parse(text, FIELDS).matches({"lane": 249})


def test_a_filter_that_is_not_text_is_refused():
    with pytest.raises(InvalidInput, match="must be text"):
        parse(42, FIELDS)  # type: ignore[arg-type]


def test_conjunction_keeps_both_filters():
    combined = row_filter.conjunction("lane == 1 or lane == 2", "district == 'Haidian'")
    assert combined == "(lane == 1 or lane == 2) and (district == 'Haidian')"
    assert parse(combined, FIELDS).matches({"lane": 2, "district": "Haidian"})
    assert not parse(combined, FIELDS).matches({"lane": 2, "district": "Chaoyang"})
    assert row_filter.conjunction(None, "lane == 1") == "lane == 1"
    assert row_filter.conjunction("lane == 1", None) == "lane == 1"


@given(st.text(max_size=200))
def test_any_text_either_parses_or_is_refused_as_invalid_input(text):
    try:
        parsed = parse(text, FIELDS)
    except InvalidInput:
        return
    parsed.matches(CAR)  # and whatever parsed can be evaluated without error
