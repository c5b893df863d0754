"""Tumbling windows of event time and small-group suppression: the aggregation service's arithmetic.

**Guarantees** (property-tested in tests/unit/test_aggregation_windows.py):

- a group with fewer than `k` contributing records is never in a closed window's published rows — not as a
  row, not as a zero, not as a count; only the number of such groups (`suppressed`) is told;
- a published row carries the group key (values of the grant's group-by fields, which the authorization
  service never lets be sensitive) and aggregates (count, sum, mean, min, max), nothing else of a record;
- a record counts once, in the one window `[start, start + window)` its event time falls in (windows are
  aligned on the Unix epoch, so every worker and every restart cuts them alike);
- with differential privacy (the grant's `epsilon`), the counts of the groups of at least k records are
  released by OpenDP's Laplace mechanism with a threshold of k (`make_laplace_threshold`): a group whose noisy
  count falls below k is suppressed too, and a published count is never below k. The hard suppression comes
  first, so the guarantee above holds whatever the noise.

Nothing here does I/O; the store (store.py) keeps the state in SQL and the worker (app.py) feeds it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pdo.core.vocabulary import AggregateFunction, AggregateSpec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(moment: datetime, window_seconds: int) -> datetime:
    """Start of the tumbling window `moment` falls in (windows are aligned on the epoch)."""
    elapsed_ms = (moment - EPOCH) // timedelta(milliseconds=1)
    size_ms = window_seconds * 1000
    return EPOCH + timedelta(milliseconds=elapsed_ms - elapsed_ms % size_ms)


def group_key(record: dict[str, Any], group_by: tuple[str, ...]) -> str:
    """The group a record belongs to: its group-by values as text, as one JSON list (the key in SQL)."""
    return json.dumps([_text(record.get(name)) for name in group_by], ensure_ascii=False)


def group_of(key: str, group_by: tuple[str, ...]) -> dict[str, str | None]:
    """The published form of a group key: each group-by field and its value as text."""
    return dict(zip(group_by, json.loads(key), strict=True))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass
class FieldStats:
    """Running sum, minimum and maximum of one numeric field over the records that have a value for it."""

    n: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, value: Any) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return  # a null (or a non-number a union let through) has no value to aggregate
        number = float(value)
        if not math.isfinite(number):
            return  # NaN and infinities would poison every aggregate of the group
        self.n += 1
        self.total += number
        self.low = number if self.low is None else min(self.low, number)
        self.high = number if self.high is None else max(self.high, number)

    def value(self, function: AggregateFunction) -> float | None:
        if self.n == 0:
            return None
        if function is AggregateFunction.SUM:
            return self.total
        if function is AggregateFunction.MEAN:
            return self.total / self.n
        if function is AggregateFunction.MIN:
            return self.low
        return self.high


@dataclass
class Group:
    """One group of one window: how many records, and the statistics of each numeric field."""

    records: int = 0
    stats: dict[str, FieldStats] = field(default_factory=dict)

    def add(self, record: dict[str, Any], numeric_fields: tuple[str, ...]) -> None:
        self.records += 1
        for name in numeric_fields:
            self.stats.setdefault(name, FieldStats()).add(record.get(name))

    def to_json(self) -> str:
        return json.dumps({name: [s.n, s.total, s.low, s.high] for name, s in self.stats.items()})

    @classmethod
    def from_json(cls, records: int, text: str) -> Group:
        return cls(records, {name: FieldStats(*values) for name, values in json.loads(text).items()})


@dataclass(frozen=True)
class AggregateRow:
    """One published group of a closed window: its key and its aggregates, nothing of a single record."""

    group: dict[str, str | None]
    count: int | None
    measures: tuple[tuple[str, AggregateFunction, float | None], ...]


@dataclass(frozen=True)
class ClosedWindow:
    """What closing one window of one grant yields: the rows to publish and what was held back."""

    grant_id: str
    start: datetime
    end: datetime
    rows: tuple[AggregateRow, ...]
    suppressed: int
    records: int
    min_group_size: int
    # True when the tenant's privacy budget could not pay for this window: nothing of it is published.
    budget_exhausted: bool = False


def close_window(
    grant_id: str, start: datetime, spec: AggregateSpec, groups: dict[str, Group], k: int
) -> ClosedWindow:
    """The window's publishable rows: every group of at least `k` records, in key order; the rest counted."""
    kept = {key: group for key, group in groups.items() if group.records >= k}
    if spec.epsilon is None:
        rows = tuple(_row(key, kept[key], spec) for key in sorted(kept))
    else:
        noisy = noisy_counts({key: group.records for key, group in kept.items()}, spec.epsilon, k)
        rows = tuple(AggregateRow(group_of(key, spec.group_by), noisy[key], ()) for key in sorted(noisy))
    return ClosedWindow(
        grant_id=grant_id,
        start=start,
        end=start + timedelta(seconds=spec.window_seconds),
        rows=rows,
        suppressed=len(groups) - len(rows),
        records=sum(group.records for group in groups.values()),
        min_group_size=k,
    )


def _row(key: str, group: Group, spec: AggregateSpec) -> AggregateRow:
    measures = tuple(
        (name, function, group.stats.get(name, FieldStats()).value(function))
        for name in spec.numeric_fields
        for function in spec.functions
        if function is not AggregateFunction.COUNT
    )
    count = group.records if AggregateFunction.COUNT in spec.functions else None
    return AggregateRow(group_of(key, spec.group_by), count, measures)


def noisy_counts(counts: dict[str, int], epsilon: float, k: int) -> dict[str, int]:
    """OpenDP's Laplace threshold mechanism over the groups' counts: each record changes one count by one,
    so noise of scale 1/epsilon spends epsilon; keys whose noisy count is below k are left out."""
    if not counts:
        return {}
    import opendp.prelude as dp  # the library is large: loaded only by grants that ask for noise

    dp.enable_features("contrib")
    measurement = dp.m.make_laplace_threshold(
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int)),
        dp.l01inf_distance(dp.absolute_distance(T=int)),
        scale=1.0 / epsilon,
        threshold=k,
    )
    released: dict[str, int] = measurement(counts)
    return {key: count for key, count in released.items() if count >= k}


def min_group_size(record_schema: str, floor: int) -> int:
    """k for a dataset: its schema's `pdo.min_group_size` (the provider's), or the operator's floor if larger."""
    asked = json.loads(record_schema).get("pdo.min_group_size")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > floor:
        return asked
    return floor
