"""What the sharing service knows of a grant: its scope and state, as the authorizations topic tells it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pdo.core.vocabulary import MaskingRule


class GrantState(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class GrantScope:
    """A grant as delivery needs it: who, which dataset, which fields and rows, how masked, when, in what state.

    `version` orders snapshots of one grant: a consumer keeps the highest it has seen.
    """

    grant_id: str
    tenant_id: str
    dataset_id: str
    fields: tuple[str, ...]
    masking: dict[str, MaskingRule]
    row_filter: str | None
    valid_from: datetime
    valid_until: datetime
    state: GrantState
    version: int

    def delivers_at(self, moment: datetime) -> bool:
        """Active, and `moment` (the record's publish time) inside the validity window."""
        return self.state is GrantState.ACTIVE and self.valid_from <= moment < self.valid_until
