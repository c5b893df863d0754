"""`pdo products apply`: register the derived data products declared in products/*.yaml in the catalog."""

from __future__ import annotations

from pathlib import Path

from pdo.core import db
from pdo.core.config import Settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "products",
        help="derived data products declared in products/*.yaml (computed by the aggregation worker)",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    apply = actions.add_parser(
        "apply",
        help="check every declaration against its source dataset, then register new products and update "
        "changed listings (idempotent; a changed computation is refused)",
    )
    apply.add_argument(
        "--dir", type=Path, help="folder of the declarations (default: products/ of the project)"
    )
    apply.add_argument("--check", action="store_true", help="only check the declarations; change nothing")
    apply.add_argument("--by", help="who applies them, kind:name (default: operator:<your login>)")
    apply.set_defaults(func=apply_products)


def apply_products(args) -> int:
    from contextlib import ExitStack

    from pdo.catalog.public import CatalogService
    from pdo.core.access_log import operator_actor
    from pdo.core.events import EventPublisher
    from pdo.core.registry_client import RegistryClient
    from pdo.products.declaration import load_declarations
    from pdo.products.registration import apply_products as apply
    from pdo.products.registration import check_products

    settings = Settings.from_env()
    declarations = load_declarations(args.dir or settings.home / "products")
    db.upgrade(settings.database_url)
    with ExitStack() as resources:
        engine = db.make_engine(settings.database_url)
        resources.callback(engine.dispose)
        publisher = EventPublisher(settings)
        resources.callback(publisher.close)
        registry = RegistryClient.for_settings(settings)
        resources.callback(registry.close)
        catalog = CatalogService(engine, publisher, registry, settings)
        if args.check:
            check_products(catalog, declarations)
            print(f"{len(declarations)} product declaration(s) can be applied")
            return 0
        result = apply(catalog, declarations, operator_actor(args.by))
    for line in result.lines():
        print(line)
    return 0
