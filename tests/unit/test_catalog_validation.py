"""The catalog's rules for dataset ids, record schemas, sensitive fields and price plans."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from pdo.catalog import validation
from pdo.core import schemas
from pdo.core.errors import InvalidInput
from pdo.core.vocabulary import MaskingRule, PriceKind, PricePlan, PriceTier, SensitiveField

RECORD = json.dumps(
    {
        "type": "record",
        "name": "Reading",
        "namespace": "test.v1",
        "fields": [
            {"name": "record_id", "type": "string"},
            {"name": "holder_name", "type": "string", "pdo.sensitive": "KEEP_FIRST_LAST"},
            {"name": "phone", "type": "string"},
            {"name": "value", "type": "double"},
        ],
    }
)


@pytest.mark.parametrize("dataset_id", ["a", "abc", "transport-traffic-flow", "a1-b2-c3", "x" * 63])
def test_good_dataset_ids_pass(dataset_id):
    assert validation.check_dataset_id(dataset_id) == dataset_id


@pytest.mark.parametrize(
    "dataset_id",
    [
        "x" * 64,
        "Traffic",
        "traffic_flow",
        "transport.traffic",
        "traffic flow",
        ".hidden",
        "-x-y",
        "..",
        "",
        "a\n",
        None,
        7,
    ],
)
def test_bad_dataset_ids_are_refused(dataset_id):
    with pytest.raises(InvalidInput, match="dataset id"):
        validation.check_dataset_id(dataset_id)


def test_a_record_schema_parses_to_its_record():
    assert validation.parse_record_schema(RECORD).fullname == "test.v1.Reading"


def test_the_shipped_dataset_schemas_are_acceptable_records():
    for full_name in ("pdo.datasets.v1.TrafficFlow", "pdo.datasets.v1.AirQuality"):
        text = schemas.path_of(full_name).read_text()
        assert validation.parse_record_schema(text).fullname == full_name


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not a valid Avro schema"),
        ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}', "not a valid Avro"),
        ('"string"', "must define an Avro record, not a string"),
        ('{"type": "enum", "name": "E", "symbols": ["A"]}', "not a enum"),
        ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}', "no field 'record_id'"),
        ("", "JSON text of an Avro record"),
    ],
)
def test_a_bad_record_schema_is_refused_with_the_reason(text, reason):
    with pytest.raises(InvalidInput, match=reason):
        validation.parse_record_schema(text)


def test_the_parsers_reason_is_passed_on():
    with pytest.raises(InvalidInput) as refused:
        validation.parse_record_schema(
            '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}'
        )
    assert "nope" in str(refused.value)


def test_a_sensitive_field_missing_from_the_schema_is_named():
    record = validation.parse_record_schema(RECORD)

    with pytest.raises(InvalidInput, match="'id_card' is not a field of test.v1.Reading"):
        validation.check_sensitive_fields(record, (SensitiveField("id_card", MaskingRule.REDACT),))


def test_sensitive_fields_come_from_the_schema_when_none_are_given():
    record = validation.parse_record_schema(RECORD)

    assert validation.check_sensitive_fields(record, ()) == (
        SensitiveField("holder_name", MaskingRule.KEEP_FIRST_LAST),
    )


def test_given_fields_are_kept_and_schema_marked_ones_added_in_schema_order():
    record = validation.parse_record_schema(RECORD)
    given = (SensitiveField("phone", MaskingRule.MASK_MIDDLE_DIGITS, "personal"),)

    assert validation.check_sensitive_fields(record, given) == (
        SensitiveField("holder_name", MaskingRule.KEEP_FIRST_LAST),
        SensitiveField("phone", MaskingRule.MASK_MIDDLE_DIGITS, "personal"),
    )


def test_a_given_rule_overrides_the_schemas_default():
    record = validation.parse_record_schema(RECORD)
    given = (SensitiveField("holder_name", MaskingRule.REDACT),)

    assert validation.check_sensitive_fields(record, given) == given


def test_a_field_listed_twice_or_an_unknown_rule_is_refused():
    record = validation.parse_record_schema(RECORD)
    twice = (SensitiveField("phone", MaskingRule.REDACT), SensitiveField("phone", MaskingRule.KEYED_HASH))

    with pytest.raises(InvalidInput, match="listed twice"):
        validation.check_sensitive_fields(record, twice)
    with pytest.raises(InvalidInput, match="masking rule of 'phone'"):
        validation.check_sensitive_fields(record, (SensitiveField("phone", "SCRAMBLE"),))


def test_plain_strings_for_enums_are_accepted():
    record = validation.parse_record_schema(RECORD)

    checked = validation.check_sensitive_fields(record, (SensitiveField("phone", "REDACT"),))

    assert checked[1].masking is MaskingRule.REDACT


# ---------------------------------------------------------------- price plans


def plan(kind, unit_price="0", tiers=(), currency="CNY") -> PricePlan:
    return PricePlan(PriceKind(kind), Decimal(unit_price), tuple(tiers), currency)


def tier(bound, price) -> PriceTier:
    return PriceTier(bound, Decimal(price))


@pytest.mark.parametrize(
    "good",
    [
        plan("FREE"),
        plan("PER_THOUSAND_RECORDS", "1.5"),
        plan("PER_MEGABYTE", "0.20"),
        plan("TIERED", "0.50", [tier(1000, "2.00"), tier(10000, "1.00"), tier(None, "0.50")]),
        plan("TIERED", "0.10", [tier(1000, "2.00")]),
    ],
)
def test_sane_price_plans_pass_with_amounts_in_cents(good):
    checked = validation.check_price_plan(good)

    assert checked == good
    assert checked.unit_price.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (plan("FREE", "1.00"), "FREE price plan has unit_price 0"),
        (plan("PER_THOUSAND_RECORDS", "-1"), "negative"),
        (plan("PER_THOUSAND_RECORDS", "1.005"), "more than two decimal places"),
        (plan("PER_THOUSAND_RECORDS", "NaN"), "not a number"),
        (plan("PER_THOUSAND_RECORDS", "1e20"), "larger than"),
        (plan("PER_MEGABYTE", "1", [tier(10, "1")]), "only a TIERED price plan has tiers"),
        (plan("TIERED", "1"), "at least one tier"),
        (
            plan("TIERED", "1", [tier(100, "2"), tier(50, "1")]),
            "tier 2 up_to_records 50 must be .* above 100",
        ),
        (plan("TIERED", "1", [tier(100, "2"), tier(100, "1")]), "tier 2 up_to_records 100"),
        (plan("TIERED", "1", [tier(None, "2"), tier(100, "1")]), "tier 1 is open-ended but is not the last"),
        (plan("TIERED", "1", [tier(0, "2")]), "above 0"),
        (plan("TIERED", "1", [tier(100, "-2")]), "tier 1 unit_price -2 is negative"),
        (plan("FREE", currency="yuan"), "ISO 4217"),
    ],
)
def test_insane_price_plans_are_refused_saying_why(bad, reason):
    with pytest.raises(InvalidInput, match=reason):
        validation.check_price_plan(bad)


def test_text_fields_must_be_present_and_bounded():
    assert validation.check_text("title", "Traffic", 10) == "Traffic"
    assert validation.check_text("description", None, 10, required=False) is None
    with pytest.raises(InvalidInput, match="title must be a non-empty string"):
        validation.check_text("title", "  ", 10)
    with pytest.raises(InvalidInput, match="at most 10"):
        validation.check_text("title", "x" * 11, 10)
