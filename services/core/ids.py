"""Ids of principals and datasets: one rule, so every name built from them is unambiguous.

Principal names (the part after `tenant:`, `provider:`, `operator:`) and dataset ids become parts of Kafka
topic names (`pdo.feed.{dataset}`, `pdo.tenant.{tenant}.{dataset}`) and of ACL prefixes
(`pdo.tenant.{tenant}.`). With '.' allowed, `acme` + `corp.sales` and `acme.corp` + `sales` would name one
topic; Kafka also treats '.' and '_' as the same character when it checks for colliding names. So an id is
1-63 lower-case letters, digits and hyphens, starting with a letter or digit: then '.' separates the parts
of a topic name and nothing else, and (tenant, dataset) → topic is injective.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from pdo.core.errors import InvalidInput

ID_RULE = r"^[a-z0-9][a-z0-9-]{0,62}$"
ID_PATTERN = re.compile(ID_RULE)
ID_HINT = (
    f"an id must match {ID_RULE}: 1 to 63 lower-case letters, digits and '-', starting with a letter or "
    "digit (no '.', '_' or capitals, so names built from ids cannot collide)"
)


def is_id(value: object) -> TypeGuard[str]:
    # fullmatch, because '$' also matches before a trailing newline.
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(what: str, value: object) -> str:
    """`value` when it is a valid id, else InvalidInput naming `what` and the rule."""
    if not is_id(value):
        shown = value[:80] if isinstance(value, str) else value
        raise InvalidInput(f"{what} {shown!r} is not a valid id", hint=ID_HINT)
    return value


# Derived data products (pdo.products) are datasets whose ids start with this prefix, owned by this provider id:
# the catalog refuses the prefix to anyone else, and only the aggregation service writes their feeds
# (topics/product-feed.yaml declares `pdo.feed.product-…`), so no provider can forge a product's records.
PRODUCT_PREFIX = "product-"
PRODUCTS_PROVIDER = "pdo:products"


def is_product_id(dataset_id: str) -> bool:
    return dataset_id.startswith(PRODUCT_PREFIX)
