"""The grant book: every grant the sharing service knows, as the authorizations topic tells it.

Each sharing worker keeps one book for ALL grants (feed partitions are spread over workers, grants are
keyed by grant id, so a worker cannot rely on its share of pdo.authorizations). The book is filled from
authorization events in topic order:

- AuthorizationGranted creates the grant: ACTIVE, version 1, with the event's scope;
- Suspended / Resumed / Revoked / Expired carry a GrantSnapshot: it replaces what the book holds only
  when its version is newer, so a redelivered or stale snapshot changes nothing;
- AuthorizationDenied creates no grant and is ignored, and so is every event of an AGGREGATE grant (kind
  AGGREGATE, or one this version does not know): such a grant never delivers a row.

A transition event without a snapshot (written before snapshots existed) errs on the safe side: a
suspension, revocation or expiry still stops the grant; a resumption without a scope is ignored.

**Which records a grant delivers** (`active_for(dataset_id, moment)`, `moment` = the record's publish
time): the grant's CURRENT state must be ACTIVE — once a suspension, revocation or expiry is in the book,
nothing more is delivered under it, whenever the record was published — and `moment` must be inside the
validity window and outside every suspension the book knows of: a record published while the grant was
suspended is not delivered even if it is processed after the resumption (a worker catching up on a
backlog). Transition times are the events' `occurred_at`. Before a grant's first known transition only
the validity window counts (after compaction the book may know only the latest snapshot of a grant).

`apply` (the follower's task) and `active_for` (the feed handler, in a thread) may run concurrently: a
lock keeps each call atomic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pdo.core.names import Event
from pdo.core.vocabulary import GrantKind, MaskingRule, grant_kind_from_avro
from pdo.sharing.scope import GrantScope, GrantState

log = logging.getLogger(__name__)

TRANSITIONS: dict[str, GrantState] = {
    Event.AUTHORIZATION_SUSPENDED: GrantState.SUSPENDED,
    Event.AUTHORIZATION_RESUMED: GrantState.ACTIVE,
    Event.AUTHORIZATION_REVOKED: GrantState.REVOKED,
    Event.AUTHORIZATION_EXPIRED: GrantState.EXPIRED,
}


class GrantBook:
    """GrantScopes by grant id and by dataset id; newest version wins."""

    def __init__(self) -> None:
        self._by_grant: dict[str, GrantScope] = {}
        # Per grant, (since, state) of every version the book applied, in version order.
        self._history: dict[str, list[tuple[datetime, GrantState]]] = {}
        self._by_dataset: dict[str, dict[str, GrantScope]] = {}
        self._lock = threading.Lock()

    def apply(self, schema_name: str, value: Mapping[str, Any]) -> GrantScope | None:
        """Apply one authorization event; returns the grant as it now stands if the event changed it."""
        since = _utc(value["occurred_at"])
        if grant_kind_from_avro((value.get("grant") or value).get("kind")) is not GrantKind.ROWS:
            return None  # an AGGREGATE grant delivers no row: the aggregation service serves it
        if schema_name == Event.AUTHORIZATION_GRANTED:
            return self._keep_if_newer(scope_from_granted(value), since)
        if schema_name in TRANSITIONS:
            snapshot = value.get("grant")
            if snapshot is not None:
                return self._keep_if_newer(scope_from_snapshot(snapshot), since)
            return self._transition_without_snapshot(value["grant_id"], TRANSITIONS[schema_name], since)
        return None  # a denial, or an event this version does not know: no grant changes

    def get(self, grant_id: str) -> GrantScope | None:
        with self._lock:
            return self._by_grant.get(grant_id)

    def active_for(self, dataset_id: str, moment: datetime) -> list[GrantScope]:
        """Grants on `dataset_id` that deliver a record published at `moment`, in grant id order."""
        with self._lock:
            grants = [
                grant
                for grant in self._by_dataset.get(dataset_id, {}).values()
                if grant.delivers_at(moment) and self._state_at(grant.grant_id, moment) is GrantState.ACTIVE
            ]
        return sorted(grants, key=lambda g: g.grant_id)

    def _state_at(self, grant_id: str, moment: datetime) -> GrantState:
        """The grant's state at `moment` by its transition times; ACTIVE before the first one known."""
        state = GrantState.ACTIVE
        for since, then in self._history.get(grant_id, ()):
            if since > moment:
                break
            state = then
        return state

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_grant)

    def _keep_if_newer(self, scope: GrantScope, since: datetime) -> GrantScope | None:
        with self._lock:
            held = self._by_grant.get(scope.grant_id)
            if held is not None and held.version >= scope.version:
                return None  # a duplicate or a stale snapshot: the book already knows better
            self._store(scope, since)
            return scope

    def _transition_without_snapshot(
        self, grant_id: str, state: GrantState, since: datetime
    ) -> GrantScope | None:
        with self._lock:
            held = self._by_grant.get(grant_id)
            if held is None or state is GrantState.ACTIVE:
                # Without a scope a resumption cannot safely reopen anything; an unknown grant delivers nothing.
                log.warning("grant %s: %s event without a snapshot ignored", grant_id, state)
                return None
            stopped = replace(held, state=state)
            self._store(stopped, since)
            return stopped

    def _store(self, scope: GrantScope, since: datetime) -> None:
        self._by_grant[scope.grant_id] = scope
        self._history.setdefault(scope.grant_id, []).append((since, scope.state))
        self._by_dataset.setdefault(scope.dataset_id, {})[scope.grant_id] = scope


def scope_from_granted(value: Mapping[str, Any]) -> GrantScope:
    """An AuthorizationGranted event: the grant exists, ACTIVE, version 1."""
    return _scope(value, GrantState.ACTIVE, 1)


def scope_from_snapshot(snapshot: Mapping[str, Any]) -> GrantScope:
    """A GrantSnapshot; a status this version does not know reads as REVOKED, the safe side."""
    try:
        state = GrantState(snapshot["status"])
    except ValueError:
        state = GrantState.REVOKED
    return _scope(snapshot, state, int(snapshot["version"]))


def _scope(value: Mapping[str, Any], state: GrantState, version: int) -> GrantScope:
    return GrantScope(
        grant_id=value["grant_id"],
        tenant_id=value["tenant_id"],
        dataset_id=value["dataset_id"],
        fields=tuple(value["fields"]),
        masking={name: _rule(rule) for name, rule in value["masking"].items()},
        row_filter=value.get("row_filter"),
        valid_from=_utc(value["valid_from"]),
        valid_until=_utc(value["valid_until"]),
        state=state,
        version=version,
    )


def _rule(symbol: str) -> MaskingRule:
    # The schema says a reader meeting an unknown rule treats it as REDACT, the strictest.
    try:
        return MaskingRule(symbol)
    except ValueError:
        return MaskingRule.REDACT


def _utc(moment: datetime | int) -> datetime:
    """Avro timestamp-millis as an aware UTC datetime (fastavro gives datetimes; raw millis are accepted)."""
    if isinstance(moment, int):
        return datetime.fromtimestamp(moment / 1000, UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
