"""What applying a declaration (topics/ topics, the services' ACLs) to the broker found and did.

Guarantee: one shape for every declared thing pdo makes the broker hold, so a command reports topics and ACLs
alike and `clean` means the same for both: the broker holds what is declared and nothing it differs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")  # a topic name, or an ACL (pdo.core.access.Grant)


@dataclass
class ApplyReport(Generic[Item]):
    """Item by item: what was created, what a check found missing, what was already as declared, what
    differs from the declaration (reported, never changed by itself) and what was removed on purpose."""

    created: list[Item] = field(default_factory=list)
    missing: list[Item] = field(default_factory=list)  # only when checking: would have been created
    unchanged: list[Item] = field(default_factory=list)
    drift: list[Item] = field(default_factory=list)
    removed: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing is missing and nothing differs from the declaration (anything created now is as declared)."""
        return not self.missing and not self.drift
