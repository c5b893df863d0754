"""`pdo products apply` against the catalog service (SQLite, no broker): a product is registered once with its
lineage, applying again changes nothing, a changed listing is updated, a changed computation or a missing
source is refused before anything is written."""

# ruff: noqa: F811  (fixtures imported from test_catalog_service are parameters here)
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pdo.catalog.public import DatasetRegistration
from pdo.core.errors import Conflict, InvalidInput
from pdo.core.ids import PRODUCTS_PROVIDER
from pdo.core.vocabulary import Classification, Domain, Openness, PriceKind, PricePlan
from pdo.products.declaration import parse_declaration
from pdo.products.registration import apply_products
from tests.unit.test_catalog_service import engine, publisher, registry, service  # noqa: F401

TRAFFIC = (Path(__file__).resolve().parents[2] / "schemas/datasets/TrafficFlow.avsc").read_text()
EXAMPLE = (Path(__file__).resolve().parents[2] / "products/product-congestion-index.yaml").read_text()
PROVIDER = "provider:transport-bureau"


@pytest.fixture
def source(service):
    return service.register(
        PROVIDER,
        DatasetRegistration(
            dataset_id="traffic-flow",
            owner_department="Transport Bureau",
            title="Traffic flow",
            domain=Domain.TRANSPORT,
            classification=Classification.GENERAL,
            openness=Openness.CONDITIONAL,
            record_schema=TRAFFIC,
            sensitive_fields=(),
            price_plan=PricePlan(PriceKind.FREE),
        ),
        actor=PROVIDER,
    )


def test_a_product_is_registered_once_with_its_lineage(service, publisher, source):
    product = parse_declaration(EXAMPLE, "p.yaml")
    assert apply_products(service, [product], "operator:alice").registered == ["product-congestion-index"]
    events = len(publisher.events)
    assert apply_products(service, [product], "operator:alice").unchanged == ["product-congestion-index"]
    assert len(publisher.events) == events  # nothing published the second time
    listed = service.get("product-congestion-index")
    assert (listed.provider_id, listed.derived_from) == (PRODUCTS_PROVIDER, ("traffic-flow",))
    assert publisher.events[-1][1]["actor"] == "operator:alice"


def test_a_changed_listing_is_updated(service, source):
    product = parse_declaration(EXAMPLE, "p.yaml")
    apply_products(service, [product], "operator:alice")
    retitled = dataclasses.replace(product, title="Congestion, by district")
    assert apply_products(service, [retitled], "operator:alice").updated == ["product-congestion-index"]
    assert service.get("product-congestion-index").title == "Congestion, by district"


def test_a_changed_computation_is_refused_and_nothing_changes(service, publisher, source):
    product = parse_declaration(EXAMPLE, "p.yaml")
    apply_products(service, [product], "operator:alice")
    events = len(publisher.events)
    other = parse_declaration(EXAMPLE.replace("window_seconds: 300", "window_seconds: 600"), "p.yaml")
    with pytest.raises(Conflict, match="another computation"):
        apply_products(service, [other], "operator:alice")
    assert len(publisher.events) == events


def test_a_missing_source_refuses_every_product_before_writing_any(service, publisher, source):
    good = parse_declaration(EXAMPLE, "a.yaml")
    orphan = parse_declaration(
        EXAMPLE.replace("id: product-congestion-index", "id: product-orphan").replace(
            "source: traffic-flow", "source: no-such-dataset"
        ),
        "b.yaml",
    )
    events = len(publisher.events)
    with pytest.raises(InvalidInput, match="b.yaml: its source 'no-such-dataset' is not in the catalog"):
        apply_products(service, [good, orphan], "operator:alice")
    assert len(publisher.events) == events
