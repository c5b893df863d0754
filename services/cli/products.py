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
    from pdo.core.access_log import operator_actor
    from pdo.products.registration import apply_folder

    settings = Settings.from_env()
    db.upgrade(settings.database_url)
    result = apply_folder(
        settings, args.dir or settings.home / "products", operator_actor(args.by), check_only=args.check
    )
    for line in result.lines():
        print(line)
    return 0
