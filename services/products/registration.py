"""`pdo products apply`: bring the catalog in step with products/*.yaml.

**Guarantee.** Applying is idempotent and all-or-nothing per product: every declaration is checked against
its source dataset first (`check_against_source`), so a wrong file changes nothing; then each product absent
from the catalog is registered (its schema, its feed, its DatasetRegistered event with `derived_from`), and
each present one has its listing fields (title, description, department, classification, openness, price,
terms, registration number) updated if they changed. How a product is computed never changes under its id:
a declaration whose computation differs from the registered one is refused — declare a new product id, so
no tenant's stream silently changes meaning.

Products are owned by `PRODUCTS_PROVIDER`; the catalog refuses product ids to any provider.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from pdo.catalog.public import CatalogService, Dataset, DatasetChanges
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import Conflict, InvalidInput, NotFound
from pdo.core.events import EventPublisher
from pdo.core.ids import PRODUCTS_PROVIDER
from pdo.core.registry_client import RegistryClient
from pdo.core.vocabulary import product_spec_from_schema
from pdo.products.declaration import (
    ProductDeclaration,
    check_against_source,
    load_declarations,
    registration,
)


@dataclass
class ApplyResult:
    checked: list[str] = field(default_factory=list)  # --check: could be applied as declared
    registered: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            *(f"checked {product_id}: can be applied" for product_id in self.checked),
            *(f"registered {product_id}" for product_id in self.registered),
            *(f"updated {product_id}" for product_id in self.updated),
            *(f"unchanged {product_id}" for product_id in self.unchanged),
        ]


def apply_folder(settings: Settings, folder: Path, actor: str, check_only: bool = False) -> ApplyResult:
    """Every declaration in `folder` checked, then (unless `check_only`) applied, with the operator's access
    to the catalog's tables, the broker and the registry (`pdo products apply`, `pdo demo`)."""
    declarations = load_declarations(folder)
    with ExitStack() as resources:
        engine = db.make_engine(settings.database_url)
        resources.callback(engine.dispose)
        publisher = EventPublisher(settings)
        resources.callback(publisher.close)
        registry = RegistryClient.for_settings(settings)
        resources.callback(registry.close)
        catalog = CatalogService(engine, publisher, registry, settings)
        if check_only:
            check_products(catalog, declarations)
            return ApplyResult(checked=[product.product_id for product in declarations])
        return apply_products(catalog, declarations, actor)


def check_products(catalog: CatalogService, products: list[ProductDeclaration]) -> None:
    """InvalidInput or Conflict for the first product that cannot be applied as declared; changes nothing."""
    for product in products:
        try:
            source = catalog.get(product.spec.source)
        except NotFound:
            raise InvalidInput(
                f"{product.file}: its source {product.spec.source!r} is not in the catalog",
                hint="register the source dataset first",
            ) from None
        check_against_source(product, source)
        held = _held(catalog, product.product_id)
        if held is not None and product_spec_from_schema(held.record_schema) != product.spec:
            raise Conflict(
                f"{product.file}: {product.product_id} is registered with another computation",
                hint="a product's computation is fixed under its id: declare a new product id for the new one",
            )


def apply_products(catalog: CatalogService, products: list[ProductDeclaration], actor: str) -> ApplyResult:
    """Register or update every product (after checking them all); what was done to each."""
    check_products(catalog, products)
    result = ApplyResult()
    for product in products:
        held = _held(catalog, product.product_id)
        if held is None:
            catalog.register(PRODUCTS_PROVIDER, registration(product), actor)
            result.registered.append(product.product_id)
        elif catalog.update(PRODUCTS_PROVIDER, product.product_id, _changes(product), actor) != held:
            result.updated.append(product.product_id)
        else:
            result.unchanged.append(product.product_id)
    return result


def _held(catalog: CatalogService, product_id: str) -> Dataset | None:
    try:
        return catalog.get(product_id)
    except NotFound:
        return None


def _changes(product: ProductDeclaration) -> DatasetChanges:
    """The listing fields a declaration may change (None: the field is left as the catalog holds it)."""
    return DatasetChanges(
        owner_department=product.owner_department,
        title=product.title,
        description=product.description,
        domain=product.domain,
        classification=product.classification,
        openness=product.openness,
        price_plan=product.price_plan,
        asset_registration_number=product.asset_registration_number,
        terms=product.terms,
    )
