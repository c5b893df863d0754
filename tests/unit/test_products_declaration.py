"""Product declarations are read strictly: the shipped example loads; a wrong key, type or value, hostile YAML
and a product that would read a sensitive or missing field are refused with the file's name; the generated
record schema is one the catalog accepts and carries the computation back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pdo.catalog.public import Dataset
from pdo.core.errors import InvalidInput
from pdo.core.vocabulary import (
    AggregateFunction,
    Classification,
    Domain,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    SensitiveField,
    product_spec_from_schema,
)
from pdo.products.declaration import (
    check_against_source,
    load_declarations,
    parse_declaration,
    record_schema,
    registration,
)

PRODUCTS = Path(__file__).resolve().parents[2] / "products"
EXAMPLE = (PRODUCTS / "product-congestion-index.yaml").read_text()
TRAFFIC = (Path(__file__).resolve().parents[2] / "schemas/datasets/TrafficFlow.avsc").read_text()


def declared(**changes) -> str:
    data = yaml.safe_load(EXAMPLE)
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return yaml.safe_dump(data)


def source(**changes) -> Dataset:
    values = dict(
        dataset_id="traffic-flow",
        provider_id="provider:transport-bureau",
        owner_department="Transport Bureau",
        title="Traffic flow",
        domain=Domain.TRANSPORT,
        classification=Classification.GENERAL,
        openness=Openness.CONDITIONAL,
        schema_subject="s",
        schema_id=1,
        record_schema=TRAFFIC,
        price_plan=PricePlan(PriceKind.FREE),
        sensitive_fields=(
            SensitiveField("plate_number", MaskingRule.KEEP_FIRST_LAST),
            SensitiveField("driver_phone", MaskingRule.MASK_MIDDLE_DIGITS),
        ),
    )
    values.update(changes)
    return Dataset(**values)


def test_the_shipped_products_load_and_fit_their_source():
    products = load_declarations(PRODUCTS)
    assert [product.product_id for product in products] == ["product-congestion-index"]
    product = products[0]
    assert product.spec.source == "traffic-flow"
    assert product.spec.aggregate.functions == (
        AggregateFunction.COUNT,
        AggregateFunction.MEAN,
        AggregateFunction.MIN,
    )
    assert product.spec.where == (("vehicle_type", ("PASSENGER_CAR", "BUS", "TRUCK", "MOTORCYCLE")),)
    check_against_source(product, source())


def test_the_record_schema_is_a_dataset_schema_that_carries_the_computation():
    from pdo.catalog.validation import parse_record_schema  # the catalog's own check, as at registration

    product = parse_declaration(EXAMPLE, "x.yaml")
    text = record_schema(product)
    parsed = parse_record_schema(text)
    names = [field.name for field in parsed.fields]
    assert names == [
        "record_id",
        "window_start",
        "window_end",
        "district",
        "records",
        "speed_kmh_mean",
        "speed_kmh_min",
        "suppressed_groups",
    ]
    assert product_spec_from_schema(text) == product.spec
    assert registration(product).derived_from == ("traffic-flow",)
    assert registration(product).sensitive_fields == ()


def test_count_is_always_computed():
    product = parse_declaration(declared(functions=["MEAN"]), "x.yaml")
    assert product.spec.aggregate.functions == (AggregateFunction.COUNT, AggregateFunction.MEAN)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"source": None}, "missing key(s) source"),
        ({"id": "congestion"}, "is not a product id"),
        ({"id": "product-"}, "is not a product id"),
        ({"id": "product-Upper"}, "is not a product id"),
        ({"id": "product-" + "x" * 60}, "is not a product id"),
        ({"source": "product-other"}, "is not the id of a dataset"),
        ({"source": "../etc"}, "is not the id of a dataset"),
        ({"window_seconds": 0}, "window_seconds must be"),
        ({"window_seconds": True}, "window_seconds must be"),
        ({"window_seconds": "300"}, "window_seconds must be"),
        ({"min_group_size": 1}, "min_group_size must be"),
        ({"functions": ["MEDIAN"]}, "functions"),
        ({"functions": ["MEAN", "MEAN"]}, "functions"),
        ({"functions": []}, "functions"),
        ({"functions": ["SUM"], "numeric_fields": []}, "need numeric_fields"),
        ({"group_by": ["records"]}, "group_by names each field once"),
        ({"group_by": ["district", "district"]}, "group_by names each field once"),
        ({"group_by": ["bad name"]}, "field names"),
        ({"group_by": "district"}, "field names"),
        ({"where": ["vehicle_type"]}, "where maps"),
        ({"where": {"vehicle_type": []}}, "where 'vehicle_type'"),
        ({"where": {"vehicle_type": [{"nested": 1}]}}, "where 'vehicle_type'"),
        ({"domain": "SPACE"}, "domain 'SPACE' is not one of"),
        ({"price_plan": "free"}, "price_plan is a mapping"),
        ({"price_plan": {"kind": "FREE", "unit_price": "lots"}}, "unit prices are decimal"),
        ({"title": "  "}, "title must be a non-empty text"),
    ],
)
def test_a_wrong_declaration_is_refused_naming_its_file(changes, says):
    with pytest.raises(InvalidInput) as refused:
        parse_declaration(declared(**changes), "bad.yaml")
    assert refused.value.message.startswith("bad.yaml: ")
    assert says in refused.value.message


@pytest.mark.parametrize(
    "text",
    [
        "",
        "- a list\n- not a mapping\n",
        "just text",
        "id: [unclosed",
        "a: &a [*a]\n",  # a self-referencing alias
        "!!python/object/apply:os.system ['true']",  # safe_load refuses to build objects
    ],
)
def test_hostile_yaml_is_refused_not_run(text):
    with pytest.raises(InvalidInput) as refused:
        parse_declaration(text, "hostile.yaml")
    assert refused.value.message.startswith("hostile.yaml: ")


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"group_by": ["plate_number"]}, "sensitive field(s) plate_number"),
        ({"where": {"driver_phone": "13800000000"}}, "sensitive field(s) driver_phone"),
        ({"numeric_fields": ["no_such_field"]}, "no field(s) no_such_field"),
        ({"numeric_fields": ["district"]}, "not numbers: district"),
    ],
)
def test_a_product_reads_only_fields_its_source_lets_out(changes, says):
    product = parse_declaration(declared(**changes), "p.yaml")
    with pytest.raises(InvalidInput) as refused:
        check_against_source(product, source())
    assert says in refused.value.message


def test_a_retired_source_is_refused():
    product = parse_declaration(EXAMPLE, "p.yaml")
    with pytest.raises(InvalidInput, match="retired"):
        check_against_source(product, source(retired=True))


def test_a_product_declared_twice_in_the_folder_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(EXAMPLE)
    (tmp_path / "b.yaml").write_text(EXAMPLE)
    with pytest.raises(InvalidInput, match="declared in a.yaml too"):
        load_declarations(tmp_path)


def test_a_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(InvalidInput) as refused:
        load_declarations(tmp_path / "absent")
    assert "--dir" in (refused.value.hint or "")


def test_the_schema_names_every_measure_column():
    product = parse_declaration(
        declared(functions=["SUM", "MAX"], numeric_fields=["speed_kmh", "lane"]), "p.yaml"
    )
    fields = {field["name"] for field in json.loads(record_schema(product))["fields"]}
    assert {"speed_kmh_sum", "speed_kmh_max", "lane_sum", "lane_max"} <= fields
