"""The tenant record: granted fields only, matching rows only, masked fields never in clear, and a schema that fits.

The property tests generate realistic records for the three shipped dataset schemas (Chinese names,
plates, ID-card numbers, phones) and random grant scopes over them.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdo.authorization.row_filter import FilterScopeError, clear_fields, parse
from pdo.core.config import PROJECT_ROOT
from pdo.core.provenance import PROVENANCE_FIELD, delivery_id
from pdo.core.vocabulary import MaskingRule
from pdo.sharing import transform
from pdo.sharing.masking import mask
from pdo.sharing.scope import GrantScope, GrantState
from pdo.sharing.transform import Provenance, masking_policy_version, shape, tenant_key, tenant_record_schema

KEY = b"test-masking-key"
DATASETS = Path(PROJECT_ROOT) / "schemas" / "datasets"
SCHEMAS = {
    name: json.loads((DATASETS / f"{name}.avsc").read_text())
    for name in ("TrafficFlow", "EnterpriseRegistry", "AirQuality")
}
SECRECY_RULES = {
    MaskingRule.KEEP_FIRST_LAST,
    MaskingRule.MASK_MIDDLE_DIGITS,
    MaskingRule.KEYED_HASH,
    MaskingRule.REDACT,
}

# ---------------------------------------------------------------------------------------------- data

# Name characters and enterprise-name characters are disjoint, so a name can only show up where it leaked.
NAME_CHARS = "张王李赵刘陈杨黄周吴欧阳司马三丰伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂英"
ENTERPRISE_WORDS = ["北京", "上海", "深圳", "华信", "创新", "科技", "贸易", "制造", "有限公司"]
PROVINCES = "京沪粤津渝冀晋辽吉黑苏浙皖闽赣鲁豫鄂湘琼川贵云陕甘青蒙桂宁新藏"
PLATE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
DISTRICTS = ["Haidian", "Chaoyang", "Dongcheng", "Xicheng", "Fengtai"]
MOMENTS = st.integers(min_value=946_684_800_000, max_value=2_000_000_000_000).map(
    lambda millis: datetime.fromtimestamp(millis / 1000, UTC).replace(microsecond=millis % 1000 * 1000)
)


def digits(count: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=count, max_size=count)


names = st.text(NAME_CHARS, min_size=2, max_size=4)
plates = st.builds(
    lambda province, letter, rest: province + letter + rest,
    st.sampled_from(PROVINCES),
    st.sampled_from("ABCDEFGHJKLMN"),
    st.text(PLATE_CHARS, min_size=5, max_size=6),
)
phones = st.builds(lambda second, rest: "1" + second + rest, st.sampled_from("3456789"), digits(9))
id_numbers = st.builds(
    lambda region, born, serial, check: f"{region}{born:%Y%m%d}{serial}{check}",
    st.sampled_from(["110105", "310104", "440305", "500103", "130102"]),
    st.dates(min_value=datetime(1930, 1, 1).date(), max_value=datetime(2008, 12, 31).date()),
    digits(3),
    st.sampled_from("0123456789X"),
)
enterprise_names = st.lists(st.sampled_from(ENTERPRISE_WORDS), min_size=2, max_size=4).map("".join)
record_ids = st.text("0123456789abcdef", min_size=8, max_size=8).map(lambda hexa: f"rec-{hexa}")

RECORDS = {
    "TrafficFlow": st.fixed_dictionaries(
        {
            "record_id": record_ids,
            "checkpoint_id": digits(4).map(lambda d: f"CP{d}"),
            "district": st.sampled_from(DISTRICTS),
            "plate_number": plates,
            "vehicle_type": st.sampled_from(
                ["PASSENGER_CAR", "BUS", "TRUCK", "MOTORCYCLE", "SPECIAL", "OTHER"]
            ),
            "speed_kmh": st.floats(min_value=0, max_value=220, allow_nan=False),
            "lane": st.integers(min_value=1, max_value=8),
            "direction": st.sampled_from(["NORTHBOUND", "SOUTHBOUND", "EASTBOUND", "WESTBOUND", "UNKNOWN"]),
            "observed_at": MOMENTS,
            "driver_phone": st.none() | phones,
        }
    ),
    "EnterpriseRegistry": st.fixed_dictionaries(
        {
            "record_id": record_ids,
            "credit_code": st.text(PLATE_CHARS, min_size=16, max_size=16).map(lambda code: f"91{code}"),
            "enterprise_name": enterprise_names,
            "legal_representative": names,
            "legal_rep_id_number": id_numbers,
            "contact_phone": phones,
            "registered_capital": st.decimals(min_value=0, max_value=10**12, places=2),
            "industry_code": digits(4).map(lambda d: f"C{d}"),
            "district": st.sampled_from(DISTRICTS),
            "status": st.sampled_from(["ACTIVE", "REVOKED", "CANCELLED", "MOVED_OUT", "OTHER"]),
            "established_on": st.dates(
                min_value=datetime(1949, 10, 1).date(), max_value=datetime(2030, 1, 1).date()
            ),
            "updated_at": MOMENTS,
        }
    ),
    "AirQuality": st.fixed_dictionaries(
        {
            "record_id": record_ids,
            "station_id": digits(4).map(lambda d: f"ST{d}"),
            "district": st.sampled_from(DISTRICTS),
            "pm25": st.floats(min_value=0, max_value=999, allow_nan=False),
            "pm10": st.floats(min_value=0, max_value=999, allow_nan=False),
            "no2": st.floats(min_value=0, max_value=999, allow_nan=False),
            "o3": st.floats(min_value=0, max_value=999, allow_nan=False),
            "aqi": st.integers(min_value=0, max_value=500),
            "observed_at": MOMENTS,
            "station_manager_phone": st.none() | phones,
        }
    ),
}

# (filter text, the same condition in Python): the filter must drop exactly the rows the predicate rejects.
FILTERS = {
    "TrafficFlow": [
        ("district == 'Haidian'", lambda r: r["district"] == "Haidian"),
        ("speed_kmh > 60 and lane in (1, 2)", lambda r: r["speed_kmh"] > 60 and r["lane"] in (1, 2)),
        ("driver_phone != null", lambda r: r["driver_phone"] is not None),
        ("not vehicle_type in ('BUS', 'TRUCK')", lambda r: r["vehicle_type"] not in ("BUS", "TRUCK")),
    ],
    "EnterpriseRegistry": [
        ("status == 'ACTIVE'", lambda r: r["status"] == "ACTIVE"),
        (
            "district in ('Haidian', 'Chaoyang') or established_on < '2000-01-01'",
            lambda r: r["district"] in ("Haidian", "Chaoyang") or r["established_on"].year < 2000,
        ),
    ],
    "AirQuality": [
        ("aqi >= 100", lambda r: r["aqi"] >= 100),
        ("pm25 < 35.0 and district != 'Fengtai'", lambda r: r["pm25"] < 35.0 and r["district"] != "Fengtai"),
    ],
}


def field_names(dataset: str) -> list[str]:
    return [field["name"] for field in SCHEMAS[dataset]["fields"]]


def sensitive_fields(dataset: str) -> set[str]:
    return {field["name"] for field in SCHEMAS[dataset]["fields"] if "pdo.sensitive" in field}


@st.composite
def scopes(draw, dataset: str) -> GrantScope:
    names_ = field_names(dataset)
    granted = draw(st.lists(st.sampled_from(names_), unique=True))
    # Rules for any field, granted or not: masking a field the grant leaves out must change nothing.
    masking = draw(st.dictionaries(st.sampled_from(names_), st.sampled_from(list(MaskingRule))))
    # Sensitive fields are what the guarantee is about: make each one's fate a choice of its own, so
    # every masking rule meets every sensitive field often, next to "left out" and "granted in clear".
    for name in sorted(sensitive_fields(dataset)):
        fate = draw(st.sampled_from(["left out", "clear", *MaskingRule]))
        granted = [field for field in granted if field != name]
        masking.pop(name, None)
        if fate != "left out":
            granted.append(name)
        if isinstance(fate, MaskingRule):
            masking[name] = fate
    return scope_of(dataset, tuple(granted), masking, grant_id=draw(st.sampled_from(["g-1", "g-2"])))


def scope_of(dataset: str, fields: tuple[str, ...], masking: dict, grant_id: str = "g-1") -> GrantScope:
    return GrantScope(
        grant_id=grant_id,
        tenant_id="acme",
        dataset_id=dataset.lower(),
        fields=fields,
        masking=masking,
        row_filter=None,
        valid_from=datetime(2026, 1, 1, tzinfo=UTC),
        valid_until=datetime(2027, 1, 1, tzinfo=UTC),
        state=GrantState.ACTIVE,
        version=1,
    )


def provenance_for(scope: GrantScope, offset: int = 42) -> Provenance:
    return Provenance(
        dataset_id=scope.dataset_id,
        source_topic=f"feed.{scope.dataset_id}",
        source_partition=3,
        source_offset=offset,
        grant_id=scope.grant_id,
        masking_policy_version=masking_policy_version(scope),
        published_at=datetime(2026, 3, 1, 8, 30, 0, 123000, tzinfo=UTC),
    )


def encode(schema: dict, record: dict) -> bytes:
    parsed = fastavro.parse_schema(schema)
    fastavro.validation.validate(record, parsed, raise_errors=True)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, record)
    return buffer.getvalue()


def decode(schema: dict, data: bytes) -> dict:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


def texts(value: Any) -> list[str]:
    """Every piece of text inside a shaped record, nested ones included."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in texts(item)]
    return [value] if isinstance(value, str) else []


def kept_characters(rule: MaskingRule, length: int) -> int:
    if rule is MaskingRule.KEEP_FIRST_LAST:
        return {0: 0, 1: 0, 2: 1}.get(length, 2)
    if rule is MaskingRule.MASK_MIDDLE_DIGITS:
        return 7 if length >= 11 else 2 * (length // 4)
    return 0


# ---------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("dataset", sorted(SCHEMAS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_shaped_records_deliver_granted_fields_masked_and_never_a_masked_value_in_clear(dataset, data):
    scope = data.draw(scopes(dataset))
    text, predicate = data.draw(st.sampled_from([(None, lambda r: True), *FILTERS[dataset]]))
    row_filter = parse(text, field_names(dataset)) if text else None
    record = data.draw(RECORDS[dataset])
    schema = tenant_record_schema(SCHEMAS[dataset], scope)

    if row_filter is not None and not row_filter.fields <= set(clear_fields(scope.fields, scope.masking)):
        with pytest.raises(FilterScopeError):  # never evaluated on what the tenant may not see
            shape(record, scope, row_filter, provenance_for(scope), KEY)
        return
    shaped = shape(record, scope, row_filter, provenance_for(scope), KEY)

    if not predicate(record):
        assert shaped is None
        return
    assert shaped is not None
    granted = [name for name in field_names(dataset) if name in scope.fields]
    assert set(shaped) == {*granted, PROVENANCE_FIELD}
    for name in granted:
        rule = scope.masking.get(name)
        assert shaped[name] == (record[name] if rule is None else mask(record[name], rule, KEY))

    encoded = encode(schema, shaped)
    assert decode(schema, encoded) == shaped
    shown = texts(shaped)
    for name in sensitive_fields(dataset):
        clear, rule = record[name], scope.masking.get(name)
        if clear is None or (name in scope.fields and rule not in SECRECY_RULES):
            continue  # granted in clear, or masked by a rule that keeps the value's kind
        if name in scope.fields and len(clear) <= kept_characters(rule, len(clear)):
            continue  # nothing of it is hidden (cannot happen for the realistic values generated here)
        assert not any(clear in text for text in shown), f"{name} {clear!r} appears in {shaped}"
        assert clear.encode() not in encoded, f"{name} {clear!r} appears in the Avro encoding"


@st.composite
def scopes_masking_with(draw, dataset: str, rule: MaskingRule) -> GrantScope:
    """A random grant where every granted field is either in clear or masked by `rule`; sensitive ones masked."""
    granted, masking = [], {}
    for name in field_names(dataset):
        fates = ["left out", rule] if name in sensitive_fields(dataset) else ["left out", "clear", rule]
        fate = draw(st.sampled_from(fates))
        if fate != "left out":
            granted.append(name)
        if fate == rule:
            masking[name] = rule
    return scope_of(dataset, tuple(granted), masking, grant_id=draw(st.sampled_from(["g-1", "g-2", "g-3"])))


def hidden_texts(record: dict, scope: GrantScope) -> dict[str, str]:
    """Text values of fields the grant leaves out or masks, that no clear granted value happens to contain."""
    clear_shown = [str(record[name]) for name in clear_fields(scope.fields, scope.masking)]
    hidden = {}
    for name, value in record.items():
        if name in clear_fields(scope.fields, scope.masking) or not isinstance(value, str) or len(value) < 4:
            continue
        rule = scope.masking.get(name)
        if rule is not None and len(value) <= kept_characters(rule, len(value)) + 1:
            continue  # a masking rule that shows nearly all of a short value is not what this checks
        if not any(value in shown for shown in clear_shown):
            hidden[name] = value
    return hidden


@pytest.mark.parametrize("rule", list(MaskingRule))
@pytest.mark.parametrize("dataset", sorted(SCHEMAS))
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_no_clear_value_of_a_masked_or_left_out_field_reaches_the_value_or_the_key(dataset, rule, data):
    scope = data.draw(scopes_masking_with(dataset, rule))
    record = data.draw(RECORDS[dataset])
    source_key = record["record_id"].encode()

    shaped = shape(record, scope, None, provenance_for(scope), KEY)
    value = encode(tenant_record_schema(SCHEMAS[dataset], scope), shaped)
    key = tenant_key(record, scope, KEY, source_key)

    for name, clear in hidden_texts(record, scope).items():
        assert not any(clear in text for text in texts(shaped)), f"{name} {clear!r} in the value {shaped}"
        assert clear.encode() not in value, f"{name} {clear!r} in the Avro encoding"
        assert clear.encode() not in key, f"{name} {clear!r} in the key {key!r}"
    for name in scope.masking:
        assert shaped[name] == mask(record[name], rule, KEY)  # masked as granted, kind-keeping rules too
    record_id_clear = "record_id" in scope.fields and "record_id" not in scope.masking
    assert (key == source_key) == record_id_clear
    # The pseudonym is the grant's own: another grant gets another key for the same record.
    other = replace_grant(scope, "g-other")
    assert record_id_clear or tenant_key(record, other, KEY, source_key) != key


def replace_grant(scope: GrantScope, grant_id: str) -> GrantScope:
    return GrantScope(**{**scope.__dict__, "grant_id": grant_id})


def test_the_tenant_key_of_a_record_without_record_id_is_a_pseudonym_of_the_feed_key():
    scope = scope_of("AirQuality", ("district",), {})

    key = tenant_key({"district": "Haidian"}, scope, KEY, b"provider-key-13812345678")

    assert b"13812345678" not in key and len(key) == transform.TENANT_KEY_HEX_CHARS
    assert tenant_key({"district": "Haidian"}, scope, KEY, None) is None


def test_the_tenant_key_pseudonym_is_not_the_keyed_hash_masking_of_the_record_id():
    scope = scope_of("AirQuality", ("record_id", "district"), {"record_id": MaskingRule.KEYED_HASH})
    shaped = shape(
        {"record_id": "rec-00000001", "district": "Haidian"}, scope, None, provenance_for(scope), KEY
    )

    key = tenant_key({"record_id": "rec-00000001"}, scope, KEY, None)

    # Separate domains: knowing one pseudonym tells nothing about the other.
    assert key.decode() not in shaped["record_id"] and shaped["record_id"] not in key.decode()


@pytest.mark.parametrize("dataset", sorted(SCHEMAS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_tenant_schemas_parse_with_both_avro_libraries_and_describe_every_field(dataset, data):
    scope = data.draw(scopes(dataset))

    schema = tenant_record_schema(SCHEMAS[dataset], scope)

    parsed = avro.schema.parse(json.dumps(schema))
    fastavro.parse_schema(schema)
    assert parsed.namespace == "pdo.tenant.v1"
    assert parsed.name.startswith(f"{dataset}_")
    assert all(field.get("doc") for field in schema["fields"])
    for field in schema["fields"][:-1]:
        rule = scope.masking.get(field["name"])
        assert ("not masked" in field["doc"]) == (rule is None)
        if rule is not None:
            assert str(rule) in field["doc"] and field["default"] is None
    assert tenant_record_schema(SCHEMAS[dataset], scope) == schema  # deterministic


@pytest.mark.parametrize("dataset", sorted(SCHEMAS))
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_scopes_that_deliver_differently_get_different_record_names(dataset, data):
    first, second = data.draw(scopes(dataset)), data.draw(scopes(dataset))

    def effective(scope: GrantScope) -> tuple:
        granted = tuple(name for name in field_names(dataset) if name in scope.fields)
        return granted, {name: str(scope.masking[name]) for name in granted if name in scope.masking}

    same_name = (
        tenant_record_schema(SCHEMAS[dataset], first)["name"]
        == tenant_record_schema(SCHEMAS[dataset], second)["name"]
    )
    assert same_name == (effective(first) == effective(second))


# ---------------------------------------------------------------------------------------------- examples

ZHANG = {
    "record_id": "rec-0001",
    "credit_code": "91110105MA01ABCD2X",
    "enterprise_name": "北京华信科技有限公司",
    "legal_representative": "张三丰",
    "legal_rep_id_number": "110105194912310021",
    "contact_phone": "13812345678",
    "registered_capital": Decimal("5000000.00"),
    "industry_code": "C3612",
    "district": "Haidian",
    "status": "ACTIVE",
    "established_on": datetime(2015, 6, 1).date(),
    "updated_at": datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
}


def test_a_registry_entry_as_a_tenant_sees_it():
    scope = scope_of(
        "EnterpriseRegistry",
        (
            "enterprise_name",
            "legal_representative",
            "legal_rep_id_number",
            "contact_phone",
            "registered_capital",
            "status",
        ),
        {
            "legal_representative": MaskingRule.KEEP_FIRST_LAST,
            "legal_rep_id_number": MaskingRule.KEYED_HASH,
            "contact_phone": MaskingRule.MASK_MIDDLE_DIGITS,
            "registered_capital": MaskingRule.ROUND_NUMBER,
        },
    )

    shaped = shape(
        ZHANG,
        scope,
        parse("status == 'ACTIVE'", field_names("EnterpriseRegistry")),
        provenance_for(scope),
        KEY,
    )

    assert shaped["legal_representative"] == "张*丰"
    assert shaped["contact_phone"] == "138****5678"
    assert shaped["legal_rep_id_number"] == mask("110105194912310021", MaskingRule.KEYED_HASH, KEY)
    assert shaped["enterprise_name"] == "北京华信科技有限公司"
    assert shaped["status"] == "ACTIVE"
    assert "credit_code" not in shaped and "district" not in shaped
    assert shaped[PROVENANCE_FIELD]["grant_id"] == scope.grant_id
    encoded = encode(tenant_record_schema(SCHEMAS["EnterpriseRegistry"], scope), shaped)
    assert b"110105194912310021" not in encoded and "张三丰".encode() not in encoded


@pytest.mark.parametrize("rule", [None, *MaskingRule])
def test_shape_refuses_to_evaluate_a_filter_on_a_field_left_out_or_masked(rule):
    # None: the field is left out; a rule: the field is granted but masked by it.
    fields = ("enterprise_name",) if rule is None else ("enterprise_name", "legal_rep_id_number")
    scope = scope_of("EnterpriseRegistry", fields, {} if rule is None else {"legal_rep_id_number": rule})
    # Both outcomes refused: a filter that matched and one that did not would each tell the tenant something.
    for text in ("legal_rep_id_number < '2'", "legal_rep_id_number >= '2'"):
        row_filter = parse(text, field_names("EnterpriseRegistry"))
        with pytest.raises(FilterScopeError, match="legal_rep_id_number"):
            shape(ZHANG, scope, row_filter, provenance_for(scope), KEY)


def test_shape_evaluates_a_filter_on_granted_clear_fields():
    scope = scope_of(
        "EnterpriseRegistry", ("enterprise_name", "district"), {"enterprise_name": "KEEP_FIRST_LAST"}
    )
    fields = field_names("EnterpriseRegistry")

    kept = shape(ZHANG, scope, parse("district == 'Haidian'", fields), provenance_for(scope), KEY)
    dropped = shape(ZHANG, scope, parse("district == 'Chaoyang'", fields), provenance_for(scope), KEY)

    assert kept is not None and set(kept) == {"enterprise_name", "district", PROVENANCE_FIELD}
    assert dropped is None


def test_provenance_of_another_grant_is_refused():
    scope = scope_of("EnterpriseRegistry", ("enterprise_name",), {})
    other = scope_of("EnterpriseRegistry", ("enterprise_name",), {}, grant_id="g-other")

    with pytest.raises(ValueError, match="g-other"):
        shape(ZHANG, scope, None, provenance_for(other), KEY)


def test_tenant_schema_of_traffic_flow():
    scope = scope_of(
        "TrafficFlow",
        ("driver_phone", "plate_number", "vehicle_type", "observed_at", "lane"),
        {
            "plate_number": MaskingRule.KEEP_FIRST_LAST,
            "driver_phone": MaskingRule.REDACT,
            "observed_at": MaskingRule.TRUNCATE_DATE,
            "lane": MaskingRule.ROUND_NUMBER,
            "district": MaskingRule.REDACT,  # not granted: ignored
        },
    )

    schema = tenant_record_schema(SCHEMAS["TrafficFlow"], scope)

    fields = {field["name"]: field for field in schema["fields"]}
    assert list(fields) == [
        "plate_number",
        "vehicle_type",
        "lane",
        "observed_at",
        "driver_phone",
        PROVENANCE_FIELD,
    ]
    assert fields["plate_number"]["type"] == ["null", "string"]
    assert fields["plate_number"]["pdo.masking"] == "KEEP_FIRST_LAST"
    assert "pdo.sensitive" not in fields["plate_number"]
    assert fields["driver_phone"]["type"] == ["null", "string"]
    assert fields["observed_at"]["type"] == ["null", {"type": "long", "logicalType": "timestamp-millis"}]
    assert fields["lane"]["type"] == ["null", "long"]  # int widened: rounding may step past the int range
    assert fields["vehicle_type"]["type"]["name"] == "pdo.datasets.v1.VehicleType"
    assert fields["vehicle_type"]["doc"].startswith("From dataset field vehicle_type, not masked.")
    provenance = fields[PROVENANCE_FIELD]["type"]
    assert [field["name"] for field in provenance["fields"]] == [
        "dataset_id",
        "source_topic",
        "source_partition",
        "source_offset",
        "grant_id",
        "masking_policy_version",
        "published_at",
    ]
    assert avro.schema.parse(json.dumps(schema)).fullname.startswith("pdo.tenant.v1.TrafficFlow_")


def test_the_record_name_ignores_grant_identity_and_row_filter_but_follows_the_dataset_schema():
    fields, masking = ("plate_number", "lane"), {"plate_number": MaskingRule.KEEP_FIRST_LAST}
    name = tenant_record_schema(SCHEMAS["TrafficFlow"], scope_of("TrafficFlow", fields, masking))["name"]
    other_grant = tenant_record_schema(
        SCHEMAS["TrafficFlow"], scope_of("TrafficFlow", fields, masking, "g-9")
    )["name"]
    evolved = json.loads(json.dumps(SCHEMAS["TrafficFlow"]))
    evolved["fields"].append({"name": "colour", "type": ["null", "string"], "default": None})

    assert other_grant == name
    assert tenant_record_schema(evolved, scope_of("TrafficFlow", fields, masking))["name"] != name


NESTED = {
    "type": "record",
    "name": "Outer",
    "namespace": "acme.v1",
    "fields": [
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "BLUE"]}},
        {"name": "favourite", "type": "Colour"},
        {
            "name": "origin",
            "type": {
                "type": "record",
                "name": "Point",
                "fields": [
                    {"name": "x", "type": "int"},
                    {
                        "name": "tag",
                        "type": {
                            "type": "enum",
                            "name": "Tag",
                            "namespace": "acme.tags",
                            "symbols": ["A", "B"],
                        },
                    },
                ],
            },
        },
        {"name": "path", "type": {"type": "array", "items": "Point"}},
        {"name": "last_tag", "type": ["null", "acme.tags.Tag"], "default": None},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "namespace": "other.ns", "size": 4}},
        {"name": "digests", "type": {"type": "map", "values": "other.ns.Digest"}},
    ],
}


def test_named_types_defined_in_fields_left_out_or_masked_are_defined_at_first_use():
    scope = scope_of(
        "Outer", ("favourite", "origin", "path", "last_tag", "digests"), {"origin": MaskingRule.REDACT}
    )
    record = {
        "colour": "RED",
        "favourite": "BLUE",
        "origin": {"x": 1, "tag": "A"},
        "path": [{"x": 2, "tag": "B"}],
        "last_tag": "A",
        "digest": b"abcd",
        "digests": {"k": b"wxyz"},
    }

    schema = tenant_record_schema(NESTED, scope)
    shaped = shape(record, scope, None, provenance_for(scope), KEY)

    avro.schema.parse(json.dumps(schema))
    fields = {field["name"]: field for field in schema["fields"]}
    assert fields["favourite"]["type"]["name"] == "acme.v1.Colour"  # its definition was in "colour"
    assert fields["path"]["type"]["items"]["name"] == "acme.v1.Point"  # "origin" is masked to text
    assert fields["last_tag"]["type"] == ["null", "acme.tags.Tag"]  # defined inside Point just before
    assert fields["digests"]["type"]["values"]["name"] == "other.ns.Digest"
    assert decode(schema, encode(schema, shaped)) == shaped


def test_named_types_without_a_namespace_cannot_collide_with_pdo_names():
    bare = {
        "type": "record",
        "name": "Bare",
        "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "Provenance", "symbols": ["X", "Y"]}},
            {"name": "again", "type": "Provenance"},
        ],
    }
    scope = scope_of("Bare", ("kind", "again"), {})

    schema = tenant_record_schema(bare, scope)
    shaped = shape({"kind": "X", "again": "Y"}, scope, None, provenance_for(scope), KEY)

    assert avro.schema.parse(json.dumps(schema)).fields[0].type.fullname == "pdo.tenant.v1.dataset.Provenance"
    assert decode(schema, encode(schema, shaped)) == shaped


def test_a_dataset_record_that_contains_itself_is_refused():
    recursive = {
        "type": "record",
        "name": "Node",
        "namespace": "acme.v1",
        "fields": [
            {"name": "secret", "type": "string"},
            {"name": "next", "type": ["null", "Node"], "default": None},
        ],
    }

    with pytest.raises(ValueError, match="recursive"):
        tenant_record_schema(recursive, scope_of("Node", ("next",), {}))


def test_a_dataset_field_named_like_the_provenance_field_is_refused():
    clashing = {"type": "record", "name": "X", "fields": [{"name": PROVENANCE_FIELD, "type": "string"}]}

    with pytest.raises(ValueError, match=PROVENANCE_FIELD):
        tenant_record_schema(clashing, scope_of("X", (PROVENANCE_FIELD,), {}))


# ---------------------------------------------------------------------------------------------- ids


def test_delivery_id_is_stable_and_short_hex():
    first = delivery_id("feed.traffic", 3, 1042, "g-1")

    assert first == delivery_id("feed.traffic", 3, 1042, "g-1")
    assert len(first) == 32 and set(first) <= set("0123456789abcdef")


@given(
    st.lists(
        st.tuples(st.text(max_size=12), st.integers(0, 64), st.integers(0, 2**63 - 1), st.text(max_size=12)),
        min_size=2,
        max_size=20,
        unique=True,
    )
)
def test_delivery_ids_differ_for_different_record_grant_pairs(positions):
    ids = {delivery_id(*position) for position in positions}

    assert len(ids) == len(positions)


def test_delivery_id_parts_cannot_run_into_each_other():
    assert delivery_id("feed.a1", 2, 3, "g") != delivery_id("feed.a", 12, 3, "g")
    assert delivery_id("feed", 1, 23, "g") != delivery_id("feed", 12, 3, "g")


def test_masking_policy_version_follows_the_masking_and_the_algorithm(monkeypatch):
    one = scope_of(
        "TrafficFlow",
        ("plate_number",),
        {"plate_number": MaskingRule.KEEP_FIRST_LAST, "lane": MaskingRule.ROUND_NUMBER},
    )
    reordered = scope_of(
        "TrafficFlow",
        ("lane",),
        {"lane": MaskingRule.ROUND_NUMBER, "plate_number": MaskingRule.KEEP_FIRST_LAST},
    )
    other = scope_of(
        "TrafficFlow",
        ("plate_number",),
        {"plate_number": MaskingRule.KEYED_HASH, "lane": MaskingRule.ROUND_NUMBER},
    )

    version = masking_policy_version(one)

    assert version == masking_policy_version(reordered)
    assert version != masking_policy_version(other)
    assert version.startswith(f"m{transform.MASKING_ALGORITHM_VERSION}-") and len(version) <= 20
    monkeypatch.setattr(transform, "MASKING_ALGORITHM_VERSION", transform.MASKING_ALGORITHM_VERSION + 1)
    assert masking_policy_version(one) != version


def test_provenance_lands_in_the_record_as_given():
    scope = scope_of("AirQuality", ("aqi",), {})
    provenance = provenance_for(scope, offset=7)

    shaped = shape({"aqi": 87, "district": "Haidian"}, scope, None, provenance, KEY)

    assert shaped == {
        "aqi": 87,
        PROVENANCE_FIELD: {
            "dataset_id": "airquality",
            "source_topic": "feed.airquality",
            "source_partition": 3,
            "source_offset": 7,
            "grant_id": "g-1",
            "masking_policy_version": provenance.masking_policy_version,
            "published_at": provenance.published_at,
        },
    }
    assert shaped[PROVENANCE_FIELD]["published_at"] - datetime(2026, 3, 1, 8, 30, tzinfo=UTC) < timedelta(
        seconds=1
    )
