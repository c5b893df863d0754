"""The reconciliation report as text lines: the grants that do not reconcile (or all), totals and notes."""

from __future__ import annotations

from pdo.billing.reconcile import GrantFigures, Reconciliation

HEADER = (
    "grant",
    "tenant",
    "dataset",
    "topic",
    "ledger",
    "set_aside",
    "billed",
    "missing_from_ledger",
    "not_on_topic",
    "ledger-billed",
)


# A topic written under another registry is unreadable record after record: name the first few, count the rest.
UNREADABLE_SHOWN = 10


def report_lines(result: Reconciliation, all_grants: bool = False) -> list[str]:
    """A table of the grants with a difference (all of them with `all_grants`), then totals and notes."""
    shown = [f for f in result.grants if all_grants or not f.clean]
    lines = []
    if shown:
        rows = [HEADER] + [_row(f) for f in shown]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        lines += [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
    state = "closed" if result.closed else "open, nothing billed yet"
    lines.append(
        f"period {result.period} ({state}): {len(result.grants)} grant(s); drift topic_vs_ledger "
        f"{result.drift('topic_vs_ledger')} record(s), ledger_vs_billed {result.drift('ledger_vs_billed')} record(s)"
    )
    expired = sum(f.past_retention for f in result.grants)
    if expired:
        lines.append(
            f"note: {expired} ledger record(s) were delivered before retention deleted them from the tenant "
            "topics; they are checked against the statements only"
        )
    aggregated = sum(f.aggregate_records for f in result.grants)
    if aggregated:
        lines.append(
            f"note: {aggregated} ledger record(s) are aggregates of aggregate grants (on the aggregates topics, "
            "which this scan does not read); they are checked against the statements only"
        )
    duplicated = sum(f.duplicates_on_topic for f in result.grants)
    if duplicated:
        lines.append(f"note: {duplicated} redelivered copy(ies) on the tenant topics, each counted once")
    lines += [f"unreadable tenant record {where}" for where in result.unreadable[:UNREADABLE_SHOWN]]
    if len(result.unreadable) > UNREADABLE_SHOWN:
        lines.append(
            f"... and {len(result.unreadable) - UNREADABLE_SHOWN} more unreadable tenant record(s) "
            f"({len(result.unreadable)} in all)"
        )
    return lines


def _row(f: GrantFigures) -> tuple[str, ...]:
    billed = "-" if f.billed is None else str(f.billed)
    billed_gap = "-" if f.billed is None else str(f.in_ledger - f.set_aside - f.billed)
    return (
        f.grant_id,
        f.tenant_id,
        f.dataset_id,
        str(f.on_topic),
        str(f.in_ledger),
        str(f.set_aside),
        billed,
        str(f.missing_from_ledger),
        str(f.not_on_topic),
        billed_gap,
    )
