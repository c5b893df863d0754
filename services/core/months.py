"""Billing periods: UTC calendar months written "YYYY-MM", parsed strictly so a typo never names a period."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pdo.core.errors import InvalidInput

PERIOD = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits only: \d matches other scripts' digits too


def parse_period(text: object) -> str:
    """`text` when it is a month "YYYY-MM" (year 1970-9998, month 01-12); InvalidInput saying why otherwise."""
    if not isinstance(text, str) or not (match := PERIOD.fullmatch(text)):
        shown = repr(text)[:40]
        raise InvalidInput(f"period {shown} is not a month written YYYY-MM", hint="e.g. 2026-03")
    year, month = int(match[1]), int(match[2])
    if not 1 <= month <= 12:
        raise InvalidInput(f"period {text!r} has month {month:02d}; months are 01 to 12", hint="e.g. 2026-03")
    if not 1970 <= year <= 9998:
        raise InvalidInput(f"period {text!r} is outside the years 1970 to 9998 pdo bills in")
    return text


def period_start(period: str) -> datetime:
    """The first instant of the month, UTC (inclusive)."""
    year, month = map(int, parse_period(period).split("-"))
    return datetime(year, month, 1, tzinfo=UTC)


def period_end(period: str) -> datetime:
    """The first instant of the next month, UTC (exclusive)."""
    year, month = map(int, parse_period(period).split("-"))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def period_of(moment: datetime) -> str:
    """The month `moment` falls in, UTC; a naive datetime is UTC (SQLite hands them back naive)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def previous_period(moment: datetime) -> str:
    """The month before the one `moment` falls in (the last one that can be closed), UTC."""
    return period_of(period_start(period_of(moment)) - timedelta(days=1))
