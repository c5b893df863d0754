"""The names and shapes events share are declared once and agree with `schemas/`: every enum written in the
`.avsc` files is written the same way everywhere, the Python enum of the same name mirrors it, and every
event schema has its name in `pdo.core.names.Event` (and nothing else does)."""

from __future__ import annotations

import json
from collections import defaultdict
from enum import StrEnum

import pytest

from pdo.core import schemas, vocabulary
from pdo.core.names import Event
from pdo.core.provenance import PROVENANCE_TYPE, provenance_schema


def _enums_in(node, found: dict[str, list[tuple[str, ...]]]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "enum":
            found[node["name"].rsplit(".", 1)[-1]].append(tuple(node["symbols"]))
        for value in node.values():
            _enums_in(value, found)
    elif isinstance(node, list):
        for value in node:
            _enums_in(value, found)


def avsc_enums() -> dict[str, list[tuple[str, ...]]]:
    found: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for full_name in schemas.load_all():
        _enums_in(json.loads(schemas.path_of(full_name).read_text()), found)
    return found


AVSC_ENUMS = avsc_enums()
PYTHON_ENUMS = {
    name: kind
    for name, kind in vars(vocabulary).items()
    if isinstance(kind, type) and issubclass(kind, StrEnum) and kind is not StrEnum
}
# Enums only dataset records use (a provider's own vocabulary) or only the dead-letter envelope carries.
NOT_MIRRORED = {"VehicleType", "Direction", "EnterpriseStatus", "DeadLetterReason"}


@pytest.mark.parametrize("name", sorted(AVSC_ENUMS))
def test_an_enum_is_written_the_same_in_every_schema_file(name):
    assert len(set(AVSC_ENUMS[name])) == 1, f"{name} has different symbols in different .avsc files"


@pytest.mark.parametrize("name", sorted(set(AVSC_ENUMS) - NOT_MIRRORED))
def test_every_shared_avsc_enum_has_its_python_mirror_in_the_vocabulary(name):
    assert name in PYTHON_ENUMS, f"add {name} to pdo.core.vocabulary"


@pytest.mark.parametrize("name", sorted(PYTHON_ENUMS))
def test_a_python_enum_mirrors_its_avsc_symbols_in_order(name):
    assert name in AVSC_ENUMS, f"pdo.core.vocabulary.{name} mirrors no enum in schemas/"
    assert [member.name for member in PYTHON_ENUMS[name]] == list(AVSC_ENUMS[name][0])


def test_every_event_schema_is_named_in_event_and_every_event_has_a_schema():
    event_schemas = {name for name in schemas.load_all() if schemas.is_event(name)}
    assert {str(member) for member in Event} == event_schemas


def test_the_provenance_record_comes_from_its_avsc():
    assert schemas.get(PROVENANCE_TYPE).fullname == PROVENANCE_TYPE
    assert [field["name"] for field in provenance_schema()["fields"]] == [
        "dataset_id",
        "source_topic",
        "source_partition",
        "source_offset",
        "grant_id",
        "masking_policy_version",
        "published_at",
    ]


def test_the_price_plan_round_trips_through_json_and_avro():
    from decimal import Decimal

    plan = vocabulary.PricePlan(
        vocabulary.PriceKind.TIERED,
        tiers=(vocabulary.PriceTier(1000, Decimal("2")), vocabulary.PriceTier(None, Decimal("1.5"))),
    )
    assert vocabulary.price_plan_from_json(vocabulary.price_plan_to_json(plan)) == plan
    assert vocabulary.price_plan_from_mapping(vocabulary.price_plan_to_avro(plan)) == plan
