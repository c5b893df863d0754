"""Schema compatibility by Confluent's levels, decided by avro's own reader/writer checker."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import Schema


class CompatibilityLevel(StrEnum):
    """Confluent Schema Registry's compatibility levels, with the same names on the wire."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def checks_backward(self) -> bool:
        """New schema must read data written with the old one."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def checks_forward(self) -> bool:
        """Old schema must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))


def _reader_problems(reader: Schema, writer: Schema, direction: str) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    locations = ", ".join(sorted(result.locations))
    return [f"{direction}: {message} (at {locations})" for message in sorted(result.messages)]


def incompatibilities(new: Schema, existing: Sequence[Schema], level: CompatibilityLevel) -> list[str]:
    """Why `new` may not follow `existing` (oldest first) under `level`; empty when it may.

    Non-transitive levels compare with the latest existing schema only, as Confluent's registry does.
    """
    if level is CompatibilityLevel.NONE or not existing:
        return []
    compared = existing if level.transitive else existing[-1:]
    problems: list[str] = []
    for old in compared:
        if level.checks_backward:
            problems += _reader_problems(new, old, "new schema cannot read data written by an old one")
        if level.checks_forward:
            problems += _reader_problems(old, new, "old schema cannot read data written by the new one")
    return problems
