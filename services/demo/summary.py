"""The demo's summary: per row grant, what the tenant received and what masking made of a sensitive value
(for the derived product, what its latest record says); per aggregate grant, the windows delivered and the
groups published and suppressed."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache, partial
from pathlib import Path

from pdo.demo import sample
from pdo.demo.run import Demo, GrantView


@cache
def sensitive_fields(home: Path, schema_file: str) -> dict[str, str]:
    """Field -> masking rule, from the dataset schema's `pdo.sensitive` markings."""
    schema = json.loads((home / "schemas" / "datasets" / schema_file).read_text())
    return {item["name"]: item["pdo.sensitive"] for item in schema["fields"] if "pdo.sensitive" in item}


def masked_example(demo: Demo, view: GrantView) -> str:
    """`field (RULE): value` for each masked field of the tenant's latest record, or why there is none."""
    dataset = next((item for item in sample.DATASETS if item.dataset_id == view.request.dataset_id), None)
    if dataset is None:
        return product_example(view)
    masked = {
        name: rule
        for name, rule in sensitive_fields(demo.settings.home, dataset.schema_file).items()
        if name in view.request.fields
    }
    if not masked:
        return "no sensitive field granted"
    if view.latest is None:
        return "(nothing received yet)"
    return ", ".join(f"{name} ({rule}): {view.latest.get(name)}" for name, rule in masked.items())


def product_example(view: GrantView) -> str:
    """A derived product's latest record in a few words: it holds a group of a window, not a source row."""
    latest = view.latest
    if latest is None:
        return "derived product (nothing received yet)"
    return (
        f"derived product: {latest.get('district')} {latest.get('records')} vehicles, mean "
        f"{latest.get('speed_kmh_mean') or 0:.1f} km/h in the window from {latest.get('window_start')}"
    )


def table(demo: Demo, metered: dict[str, int] | None) -> list[str]:
    """One line per grant: tenant, dataset, status, records received, metered (`?` when metering's usage
    could not be read), masking."""
    lines = [
        f"  {'tenant':<15} {'dataset':<20} {'grant status':<12} {'received':>8} {'metered':>8}  masked in the latest record"
    ]
    for view in demo.grants.values():
        if view.request.aggregate is not None:
            continue  # shown by `aggregates`
        received = len(view.received)
        note = (
            f"; revoked {_clock(view.revoked_at)}, newest record received published {_clock(view.last_published)}"
            if view.revoked_at and view.last_published
            else ""
        )
        metered_text = "?" if metered is None else str(metered.get(view.grant_id, 0))
        lines.append(
            f"  {view.request.tenant.name:<15} {view.request.dataset_id:<20} {view.status:<12} {received:>8} "
            f"{metered_text:>8}  {masked_example(demo, view)}{note}"
        )
    for request in demo.denied:
        lines.append(
            f"  {request.tenant.name:<15} {request.dataset_id:<20} {'DENIED':<12} {0:>8} {'-':>8}  (no grant)"
        )
    published = ", ".join(f"{dataset} {count}" for dataset, count in demo.published.items())
    lines.append(f"  published: {published}")
    return lines


def aggregates(demo: Demo, metered: dict[str, int] | None) -> list[str]:
    """One line per aggregate grant: windows delivered, groups published and suppressed (in the windows
    delivered: a window whose groups were all suppressed is not published), and what metering counted (the
    aggregates published)."""
    lines = []
    for view in demo.grants.values():
        if view.request.aggregate is None:
            continue
        spec = view.request.aggregate
        metered_text = "?" if metered is None else str(metered.get(view.grant_id, 0))
        lines += [
            f"  aggregate grant of {view.request.tenant.name} on {view.request.dataset_id}: "
            f"{', '.join(spec['functions'])} of {', '.join(spec['numeric_fields'])} "
            f"per {', '.join(spec['group_by'])} per {spec['window_seconds']} s, no row",
            f"  {view.request.tenant.name:<15} {view.request.dataset_id:<20} {view.status:<12} "
            f"windows delivered {len(view.windows)}, groups published {len(view.groups)}, "
            f"groups suppressed {sum(view.windows.values())}, metered {metered_text}",
        ]
    return lines


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S.%f")[:-3]


def charges(demo: Demo) -> list[str]:
    """Per tenant: this month's charges so far, with a line per dataset and grant."""
    lines = [
        "  charges this month so far (statements as they would be issued now; government grants are free):"
    ]
    for statement in demo.charges():
        lines.append(f"  {statement.tenant_id:<24} {statement.total:>10} {statement.currency}")
        for line in statement.lines:
            lines.append(
                f"      {line.dataset_id:<20} {line.records:>7} records {line.bytes:>9} bytes {line.amount:>9}  {line.plan}"
            )
    return lines


def reconciliation(demo: Demo) -> list[str]:
    return ["  reconciliation (tenant topics, ledger, statements):"] + [
        f"  {line}" for line in demo.reconciliation()
    ]


def audit(demo: Demo) -> list[str]:
    return [f"  {demo.audit().summary()}"]


def print_summary(demo: Demo, final: bool = False) -> None:
    """The grants table with metering's counts; at the end, this month's charges, the reconciliation and the
    audit log's verification too.
    Each part is a step of its own: one that fails is reported and the others are still shown."""
    metered = demo.attempt("read metering's usage", demo.metered)
    for line in table(demo, metered) + aggregates(demo, metered):
        demo.report(line)
    if final:
        for part, lines in (
            ("price this month's charges", charges),
            ("reconcile this month", reconciliation),
            ("verify the audit log", audit),
        ):
            for line in demo.attempt(part, partial(lines, demo)) or []:
                demo.report(line)
