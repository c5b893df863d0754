"""Time series for the console's charts: values on a fixed grid of UTC times, one line per label set.

The guarantee: every series of one answer shares the answer's `times` (Unix seconds, oldest first, one step
apart, each the start of its bucket), and holds exactly one value per time, 0 where nothing happened, so a
chart library can draw them as they are. Buckets are half-open [t, t + step). Lines are ordered by label
text, so two answers over the same data are equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Grid:
    """Bucket starts from `start`, `count` of them, `step` apart."""

    start: datetime
    step: timedelta
    count: int

    @classmethod
    def ending_at(cls, now: datetime, step: timedelta, count: int) -> Grid:
        """The `count` buckets up to and including the one `now` falls in."""
        step_s = int(step.total_seconds())
        epoch = int(now.astimezone(UTC).timestamp())
        last = datetime.fromtimestamp(epoch - epoch % step_s, UTC)
        return cls(last - step * (count - 1), step, count)

    @property
    def end(self) -> datetime:
        return self.start + self.step * self.count

    def times(self) -> list[int]:
        first = int(self.start.timestamp())
        step_s = int(self.step.total_seconds())
        return [first + i * step_s for i in range(self.count)]

    def index(self, moment: datetime) -> int | None:
        """The bucket `moment` falls in, or None outside the grid."""
        if moment < self.start or moment >= self.end:
            return None
        return int((moment - self.start) / self.step)


Labels = tuple[tuple[str, str], ...]


Point = tuple[datetime, Mapping[str, str], float]


def bucket_sums(grid: Grid, points: Iterable[Point]) -> list[dict[str, Any]]:
    """Sum `(moment, labels, value)` points into the grid's buckets, one line per distinct label set."""
    return _bucket(grid, points, lambda old, new: old + new)


def bucket_latest(grid: Grid, points: Iterable[Point]) -> list[dict[str, Any]]:
    """Levels (a gauge's samples, in time order): each bucket holds the last sample taken in it."""
    return _bucket(grid, points, lambda _old, new: new)


def _bucket(
    grid: Grid, points: Iterable[Point], combine: Callable[[float, float], float]
) -> list[dict[str, Any]]:
    lines: dict[Labels, list[float]] = defaultdict(lambda: [0.0] * grid.count)
    for moment, labels, value in points:
        slot = grid.index(moment)
        if slot is not None:
            line = lines[tuple(labels.items())]  # in the order the caller names them: the legend reads so
            line[slot] = combine(line[slot], value)
    return [
        _line(labels, values) for labels, values in sorted(lines.items(), key=lambda item: _text(item[0]))
    ]


def answer(grid: Grid, unit: str, lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The JSON a series endpoint returns."""
    return {
        "unit": unit,
        "step_s": int(grid.step.total_seconds()),
        "times": grid.times(),
        "series": lines,
        **extra,
    }


def _line(labels: Labels, values: list[float]) -> dict[str, Any]:
    return {"label": _text(labels), "labels": dict(labels), "values": [_tidy(value) for value in values]}


def _text(labels: Labels) -> str:
    return " · ".join(value for _, value in labels)


def _tidy(value: float) -> float | int:
    """Whole numbers as ints (counts stay counts in the JSON), rates to three decimals."""
    return int(value) if float(value).is_integer() else round(value, 3)
