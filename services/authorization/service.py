"""The authorization service: data requests, their decision by policy or operator, and the grant lifecycle.

Every change is one database transaction that writes the row(s), the history row and the event into the
outbox (outbox.py): the event is published if and only if the change commits, and grant versions are never
reused. Right after the commit the service publishes the outbox itself, waiting at most PROMPT_PUBLISH_WAIT_S
(normally the event is on the topic before the caller gets its answer); whatever is left — the broker was
down — the authorization worker's relay publishes once the broker is back, in order. Rows are locked
(PostgreSQL) and version-checked while they change, so several workers and API processes may act on the same
request or grant safely.

**Hard denials stay denials.** An operator approves only a request PENDING_REVIEW, and only when the policy
would not deny it with the dataset as it is now; a grant is resumed only under the same condition. When the
catalog changes a dataset (`enforce_dataset_terms`, called by the worker for every catalog update), each
ACTIVE grant the policy would now deny is suspended (cause DATASET_CHANGED, the rule and its reason as the
grant's status reason; a grant already suspended gets a new version saying so), and each ACTIVE grant
holding a newly sensitive field in clear is re-masked: a suspension and a resumption carrying the field's
default masking, in one transaction, so the tenant keeps receiving the field, masked, and the grant's
history says why. Masking only ever tightens.

**Failing closed toward less access.** A change that widens access (an approval, the policy's or an
operator's; a resumption, an operator's or the clock's) first asks the audit log whether it can be
appended to (pdo.audit.public.require_appendable) and raises AuditLogNotAppendable (an Unavailable: 503 on
the gateway, retried by the worker until the log is back) when it cannot, before anything is written.
Changes that narrow access (deny, suspend, revoke, withdraw, expire) never ask: their events are in the
outbox and reach the audit log when it is back, and refusing a revocation would keep data flowing to
someone who must be cut off.

Government tenants: pass `tenant_is_government=True` to submit_request; their grants are FREE, and policy
rules may test `tenant_kind: [government]`. The kind travels on DataRequestSubmitted, and a referral to
operator review is a DataRequestReferred event, so the tables can be rebuilt from the topics exactly.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pdo.audit.public import require_appendable
from pdo.authorization import outbox, records, row_filter
from pdo.authorization import tables as t
from pdo.authorization.lifecycle import (
    GrantAction,
    IllegalTransition,
    RequestAction,
    next_grant_status,
    next_request_status,
)
from pdo.authorization.models import (
    DataRequest,
    Grant,
    GrantTransition,
    Narrowing,
    RequestSpec,
    RequestStatus,
    grant_id_for,
)
from pdo.authorization.policy import Decision, Outcome, Policy, RequestFacts
from pdo.catalog.public import Dataset
from pdo.core.config import Settings
from pdo.core.errors import Conflict, InvalidInput, NotFound
from pdo.core.events import EventPublisher, utc, utc_now
from pdo.core.topics import TopicId
from pdo.core.vocabulary import (
    AggregateFunction,
    AggregateSpec,
    GrantKind,
    GrantStatus,
    MaskingRule,
    SuspensionCause,
    TenantKind,
    free_plan,
)

log = logging.getLogger(__name__)

POLICY_ACTOR = "system:policy"
CLOCK_ACTOR = "system:clock"
QUOTA_ACTOR = "system:metering"
# The longest tumbling window an aggregate grant may fix: one day.
MAX_WINDOW_SECONDS = 86_400
# The most privacy loss one window of a differentially private aggregate grant may spend.
MAX_EPSILON = 10.0
CATALOG_ACTOR = "system:catalog"
OPERATOR_RULE = "operator"  # the `rule` of a denial a person made
# Decisions the service takes before the policy: a request for a dataset that is gone cannot be granted.
DATASET_UNAVAILABLE_RULE = "dataset-unavailable"

REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
MAX_PURPOSE = 4000
MAX_REASON = 2000
# How long a caller (an operator's HTTP request) waits for its change's event to reach the broker; the
# change is committed either way, and the worker's relay publishes what is left.
PROMPT_PUBLISH_WAIT_S = 2.0


class DatasetLookup(Protocol):
    """Where the service reads datasets: in the gateway the catalog's own read of its table
    (`CatalogService`), in the worker its projection of pdo.catalog (`pdo.authorization.datasets`)."""

    def get(self, dataset_id: str) -> Dataset:
        """The dataset as it stands; NotFound when there is none."""
        ...


class AuthorizationService:
    """Public API of the authorization service; the gateway and the stream agents call these methods."""

    def __init__(
        self,
        engine: Engine,
        publisher: EventPublisher,
        datasets: DatasetLookup,
        policy: Policy,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.datasets = datasets
        self.policy = policy
        self.settings = settings
        self.clock = clock
        lease = timedelta(seconds=3 * settings.kafka_timeout_s + 5)
        self.relay = outbox.OutboxRelay(engine, publisher, lease)
        self._prompt = outbox.PromptPublisher(self.relay, PROMPT_PUBLISH_WAIT_S)

    # ------------------------------------------------------------------------------------------ requests

    def submit_request(
        self, tenant_id: str, spec: RequestSpec, actor: str, tenant_is_government: bool = False
    ) -> DataRequest:
        """Validate and record a tenant's request (SUBMITTED) and publish DataRequestSubmitted.

        The authorization worker decides it from the event. InvalidInput for bad input, NotFound for an
        unknown dataset, Conflict for a retired dataset or a request id already used.
        """
        _require_text(tenant_id, "tenant_id")
        request_id = _request_id(spec.request_id)
        dataset = self._dataset(spec.dataset_id)
        if dataset.retired:
            raise Conflict(f"dataset {dataset.dataset_id} is retired; it cannot be requested any more")
        now = self.clock()
        valid_from, valid_until = _period(spec.valid_from, spec.valid_until, now)
        fields = _fields(spec.fields, dataset)
        kind, aggregate = _kind_and_aggregate(spec.kind, spec.aggregate, dataset, fields)
        request = DataRequest(
            request_id=request_id,
            tenant_id=tenant_id,
            tenant_kind=TenantKind.GOVERNMENT if tenant_is_government else TenantKind.COMPANY,
            dataset_id=dataset.dataset_id,
            purpose=_purpose(spec.purpose),
            fields=fields,
            row_filter=_row_filter(spec.row_filter, dataset, fields),
            valid_from=valid_from,
            valid_until=valid_until,
            expected_daily_records=_positive(spec.expected_daily_records, "expected_daily_records"),
            status=RequestStatus.SUBMITTED,
            created_at=now,
            updated_at=now,
            kind=kind,
            aggregate=aggregate,
        )
        try:
            with self._change() as conn:
                if conn.execute(_request_query(request_id)).first() is not None:
                    raise _duplicate(request_id)
                conn.execute(t.requests.insert().values(records.request_to_row(request)))
                event = records.submitted_event(request, _event_id(), actor)
                outbox.stage(conn, TopicId.REQUESTS, records.SUBMITTED, event, request_id)
        except IntegrityError:
            raise _duplicate(request_id) from None  # another caller inserted the same id concurrently
        return request

    def withdraw_request(
        self, tenant_id: str, request_id: str, reason: str | None, actor: str
    ) -> DataRequest:
        """The tenant takes back a request not decided yet (SUBMITTED or PENDING_REVIEW)."""
        reason = _optional_text(reason, "reason")
        with self._change() as conn:
            request = self._locked_request(conn, request_id, tenant_id)
            next_request_status(request_id, request.status, RequestAction.WITHDRAW)
            withdrawn = replace(
                request,
                status=RequestStatus.WITHDRAWN,
                decided_by_rule=None,
                decision_reason=reason,
                decided_by=actor,
                updated_at=self.clock(),
            )
            self._save_request(conn, request, withdrawn)
            event = {
                **records.head(_event_id(), withdrawn.updated_at, actor),
                "request_id": request_id,
                "tenant_id": request.tenant_id,
                "reason": reason,
            }
            outbox.stage(conn, TopicId.REQUESTS, records.WITHDRAWN, event, request_id)
        return withdrawn

    def decide(self, request_id: str) -> DataRequest:
        """Run the policy on a SUBMITTED request: APPROVE grants, DENY refuses, REVIEW waits for an operator.

        Idempotent: a request already past SUBMITTED is returned as it stands, so a redelivered event
        changes nothing.
        """
        request = self.get_request(request_id)
        if request.status != RequestStatus.SUBMITTED:
            return request
        decision, dataset = self._evaluate(request)
        if decision.outcome == Outcome.APPROVE:
            self._require_audit_log()
        with self._change() as conn:
            request = self._locked_request(conn, request_id)
            if request.status != RequestStatus.SUBMITTED:
                return request  # another worker decided it while we looked at the catalog
            if decision.outcome == Outcome.APPROVE and dataset is not None:
                scope = _Scope.requested(request)
                self._grant(conn, request, dataset, scope, POLICY_ACTOR, decision.rule_id, decision.reason)
            elif decision.outcome == Outcome.DENY:
                self._deny(conn, request, POLICY_ACTOR, decision.rule_id, decision.reason)
            else:
                reviewed = self._move(
                    request, RequestAction.REVIEW, POLICY_ACTOR, decision.rule_id, decision.reason
                )
                self._save_request(conn, request, reviewed)
                # The referral is an event too, so a rebuilt database has it PENDING_REVIEW, not SUBMITTED.
                event = records.referred_event(reviewed, _event_id(), POLICY_ACTOR)
                outbox.stage(conn, TopicId.REQUESTS, records.REFERRED, event, request_id)
            return self._request(conn, request_id)

    def decide_stale(self, older_than: timedelta) -> list[DataRequest]:
        """Decide requests still SUBMITTED after `older_than`: a safety net should an event go unhandled."""
        cutoff = self.clock() - older_than
        query = (
            sa.select(t.requests.c.request_id)
            .where(t.requests.c.status == RequestStatus.SUBMITTED.value)
            .where(t.requests.c.updated_at <= cutoff)
            .order_by(t.requests.c.created_at)
        )
        with self.engine.connect() as conn:
            request_ids = list(conn.execute(query).scalars())
        return [self.decide(request_id) for request_id in request_ids]

    def record_submitted(self, event: dict[str, Any]) -> bool:
        """Make sure the request a DataRequestSubmitted event describes has a row; True if one was added.

        Through the outbox an event is published only after its row committed, so a row is added only for
        an event written by an earlier version (which published before committing) or a database restored
        from an older backup: the topic is the record of what happened.
        """
        request = records.request_from_submitted(event)
        try:
            with self.engine.begin() as conn:
                if conn.execute(_request_query(request.request_id)).first() is not None:
                    return False
                conn.execute(t.requests.insert().values(records.request_to_row(request)))
        except IntegrityError:
            return False
        log.warning(
            "request %s was on the topic but not in SQL; recorded it from the event", request.request_id
        )
        return True

    def approve(
        self, request_id: str, operator_id: str, narrowing: Narrowing | None = None, reason: str | None = None
    ) -> Grant:
        """An operator approves a request PENDING_REVIEW, optionally narrowing its scope; returns the grant.

        Refused (Conflict) for a request in any other state — a SUBMITTED one is the policy's to decide
        first — and when the policy's rules deny the narrowed request with the dataset as it is now: no
        operator can approve what the policy denies (e.g. CORE or NOT_OPEN data).
        """
        reason = _optional_text(reason, "reason")
        narrowing = narrowing or Narrowing()
        self._require_audit_log()
        request = self.get_request(request_id)
        dataset = self._dataset(request.dataset_id)
        if dataset.retired:
            raise Conflict(f"dataset {dataset.dataset_id} is retired; deny request {request_id} instead")
        scope = _Scope.requested(request).narrowed(narrowing, dataset)
        denial = self._hard_denial(scope.fields, dataset, request.tenant_kind, request.kind)
        if denial is not None:
            raise Conflict(
                f"request {request_id} cannot be approved: policy rule {denial.rule_id!r} denies it "
                f"({denial.reason})",
                hint="hard denials stay denials whoever approves; deny the request with that reason",
            )
        with self._change() as conn:
            request = self._locked_request(conn, request_id)
            _require_pending_review(request)
            return self._grant(conn, request, dataset, scope, operator_id, None, reason)

    def deny(self, request_id: str, operator_id: str, reason: str) -> DataRequest:
        """An operator refuses an undecided request; the reason is shown to the tenant."""
        reason = _required_reason(reason, "a denial")
        with self._change() as conn:
            request = self._locked_request(conn, request_id)
            return self._deny(conn, request, operator_id, OPERATOR_RULE, reason)

    # ------------------------------------------------------------------------------------------ grants

    def suspend(
        self, grant_id: str, actor: str, reason: str, cause: SuspensionCause | str = SuspensionCause.OPERATOR
    ) -> Grant:
        reason = _required_reason(reason, "a suspension")
        try:
            cause = SuspensionCause(cause)
        except ValueError:
            raise InvalidInput(f"cause must be OPERATOR or QUOTA_EXCEEDED, not {cause!r}") from None
        return self._transition(grant_id, GrantAction.SUSPEND, actor, reason, records.SUSPENDED, cause=cause)

    def resume(self, grant_id: str, actor: str, reason: str | None = None) -> Grant:
        """Resume a SUSPENDED grant, under the dataset's terms as they are now: Conflict while the policy
        denies it (the dataset was reclassified), and every granted field the catalog now marks sensitive
        comes back masked by its default."""
        reason = _optional_text(reason, "reason")
        self._require_audit_log()
        grant = self.get_grant(grant_id)
        dataset = self._dataset(grant.dataset_id)
        denial = self._hard_denial(grant.fields, dataset, self._tenant_kind(grant), grant.kind)
        if denial is not None:
            raise Conflict(
                f"grant {grant_id} cannot be resumed: policy rule {denial.rule_id!r} now denies it "
                f"({denial.reason})",
                hint="it can be resumed once the dataset's classification and openness allow it again",
            )
        return self._transition(
            grant_id,
            GrantAction.RESUME,
            actor,
            reason,
            records.RESUMED,
            amend=lambda resumed: replace(resumed, masking=_tightened_masking(resumed, dataset)),
        )

    def revoke(self, grant_id: str, actor: str, reason: str) -> Grant:
        reason = _required_reason(reason, "a revocation")
        return self._transition(grant_id, GrantAction.REVOKE, actor, reason, records.REVOKED)

    def expire_due(self, now: datetime) -> list[Grant]:
        """Expire every ACTIVE or SUSPENDED grant whose validity ended by `now`; returns those expired here."""
        query = (
            sa.select(t.grants.c.grant_id)
            .where(t.grants.c.status.in_([GrantStatus.ACTIVE.value, GrantStatus.SUSPENDED.value]))
            .where(t.grants.c.valid_until <= utc(now))
            .order_by(t.grants.c.valid_until)
        )
        return self._each(query, self._expire)

    def resume_quota_suspended(self, now: datetime) -> list[Grant]:
        """Resume grants suspended for their daily quota on an earlier UTC day: the quota counts per day."""
        day_start = utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
        query = (
            sa.select(t.grants.c.grant_id)
            .where(t.grants.c.status == GrantStatus.SUSPENDED.value)
            .where(t.grants.c.suspension_cause == SuspensionCause.QUOTA_EXCEEDED.value)
            .where(t.grants.c.updated_at < day_start)
        )
        return self._each(
            query,
            lambda grant_id: self.resume(
                grant_id, CLOCK_ACTOR, "a new UTC day began; the daily quota resets"
            ),
        )

    def suspend_for_quota(self, grant_id: str, day: Any, quota: int, used: int) -> Grant | None:
        """Suspend an ACTIVE grant that reached today's quota; None when there is nothing to do.

        A report for an earlier day is stale (the grant has been resumed since), and a grant that is not
        ACTIVE is already not delivering: both are ignored, so redelivered reports are harmless.
        """
        if day != utc(self.clock()).date():
            return None
        grant = self.get_grant(grant_id)
        if grant.status != GrantStatus.ACTIVE:
            return None
        reason = f"daily quota of {quota} records reached on {day} ({used} delivered)"
        try:
            return self.suspend(grant_id, QUOTA_ACTOR, reason, SuspensionCause.QUOTA_EXCEEDED)
        except IllegalTransition:
            return None

    # ------------------------------------------------------------------------------------------ reads

    def get_request(self, request_id: str, tenant_id: str | None = None) -> DataRequest:
        with self.engine.connect() as conn:
            return self._request(conn, request_id, tenant_id)

    def list_requests(self, tenant_id: str | None = None, status: str | None = None) -> list[DataRequest]:
        query = sa.select(t.requests).order_by(t.requests.c.created_at, t.requests.c.request_id)
        if tenant_id is not None:
            query = query.where(t.requests.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(t.requests.c.status == _status(RequestStatus, status).value)
        with self.engine.connect() as conn:
            return [records.request_from_row(row) for row in conn.execute(query).mappings()]

    def get_grant(self, grant_id: str, tenant_id: str | None = None) -> Grant:
        """The grant with its history of transitions; NotFound when absent or not the tenant's."""
        with self.engine.connect() as conn:
            row = conn.execute(_grant_query(grant_id, tenant_id)).mappings().first()
            if row is None:
                raise NotFound(f"no grant {grant_id}" + (f" for {tenant_id}" if tenant_id else ""))
            history = conn.execute(
                sa.select(t.grant_transitions)
                .where(t.grant_transitions.c.grant_id == grant_id)
                .order_by(t.grant_transitions.c.at, t.grant_transitions.c.id)
            ).mappings()
            grant = records.grant_from_row(row, tuple(records.transition_from_row(item) for item in history))
            return _with_published(grant, outbox.unpublished_grant_versions(conn, grant_id))

    def list_grants(
        self, tenant_id: str | None = None, dataset_id: str | None = None, status: str | None = None
    ) -> list[Grant]:
        query = sa.select(t.grants).order_by(t.grants.c.created_at, t.grants.c.grant_id)
        if tenant_id is not None:
            query = query.where(t.grants.c.tenant_id == tenant_id)
        if dataset_id is not None:
            query = query.where(t.grants.c.dataset_id == dataset_id)
        if status is not None:
            query = query.where(t.grants.c.status == _status(GrantStatus, status).value)
        with self.engine.connect() as conn:
            unpublished = outbox.unpublished_grant_versions(conn)
            return [
                _with_published(records.grant_from_row(row), unpublished)
                for row in conn.execute(query).mappings()
            ]

    # ------------------------------------------------------------------------------------------ catalog

    def enforce_dataset_terms(self, changed: Dataset) -> list[Grant]:
        """Bring every ACTIVE grant on a changed dataset under its new terms; the grants changed here.

        `changed` is the entry a catalog event carries; the dataset as the lookup holds it is used instead
        when it is newer, so an old event read again (a new consumer group, a replay) acts on the dataset as it is now
        and changes nothing that is already right. A grant the policy now denies is suspended (cause
        DATASET_CHANGED); one holding a newly sensitive field in clear is re-masked.
        """
        dataset = self._newest(changed)
        query = (
            sa.select(t.grants.c.grant_id)
            .where(t.grants.c.dataset_id == dataset.dataset_id)
            .where(t.grants.c.status.in_([GrantStatus.ACTIVE.value, GrantStatus.SUSPENDED.value]))
            .order_by(t.grants.c.grant_id)
        )
        with self.engine.connect() as conn:
            grant_ids = list(conn.execute(query).scalars())
        changed_grants: list[Grant] = []
        for grant_id in grant_ids:
            try:
                grant = self._enforce_on(grant_id, dataset)
            except (IllegalTransition, Conflict) as error:  # another process moved it meanwhile
                log.info("skipped grant %s: %s", grant_id, error.message)
                continue
            if grant is not None:
                changed_grants.append(grant)
        return changed_grants

    def _enforce_on(self, grant_id: str, dataset: Dataset) -> Grant | None:
        with self._change() as conn:
            grant = self._locked_grant(conn, grant_id)
            denial = self._hard_denial(grant.fields, dataset, self._tenant_kind(grant, conn))
            if denial is not None:
                reason = (
                    f"dataset {dataset.dataset_id} is now {dataset.classification.value} and "
                    f"{dataset.openness.value} (catalog version {dataset.version}): {denial.reason} "
                    f"(policy rule {denial.rule_id})"
                )
                if grant.status == GrantStatus.SUSPENDED:
                    return self._restate_suspension(conn, grant, reason)
                return self._move_grant(
                    conn,
                    grant,
                    GrantAction.SUSPEND,
                    CATALOG_ACTOR,
                    reason,
                    records.SUSPENDED,
                    SuspensionCause.DATASET_CHANGED,
                )
            if grant.status != GrantStatus.ACTIVE:
                return None  # a suspended grant is re-masked when it is resumed
            masking = _tightened_masking(grant, dataset)
            if masking == grant.masking:
                return None
            newly = ", ".join(
                f"{name} ({rule.value})"
                for name, rule in sorted(masking.items())
                if grant.masking.get(name) != rule
            )
            # A suspension then a resumption with the new masking: both events in this one transaction,
            # so no record is ever shaped by the old masking after this point in stream order.
            stopped = self._move_grant(
                conn,
                grant,
                GrantAction.SUSPEND,
                CATALOG_ACTOR,
                f"the catalog now marks {newly} sensitive (dataset version {dataset.version}); re-masking",
                records.SUSPENDED,
                SuspensionCause.DATASET_CHANGED,
            )
            return self._move_grant(
                conn,
                stopped,
                GrantAction.RESUME,
                CATALOG_ACTOR,
                f"re-masked: {newly} delivered masked from version {stopped.version + 1} on, "
                f"because the catalog marks them sensitive since dataset version {dataset.version}",
                records.RESUMED,
                amend=lambda resumed: replace(resumed, masking=masking),
            )

    def _restate_suspension(self, conn: Connection, grant: Grant, reason: str) -> Grant | None:
        """A grant already suspended (by an operator, for its quota) now stays suspended for the dataset's
        new terms: a new version saying so, so the tenant is not told it resumes tomorrow."""
        if grant.suspension_cause == SuspensionCause.DATASET_CHANGED:
            return None
        return self._move_grant(
            conn,
            grant,
            None,
            CATALOG_ACTOR,
            reason,
            records.SUSPENDED,
            SuspensionCause.DATASET_CHANGED,
        )

    def _newest(self, changed: Dataset) -> Dataset:
        try:
            current = self.datasets.get(changed.dataset_id)
        except NotFound:
            return changed
        return current if current.version >= changed.version else changed

    # ------------------------------------------------------------------------------------------ internals

    @contextmanager
    def _change(self) -> Iterator[Connection]:
        """One transaction of state, history and outbox rows; after it commits, publish the outbox promptly."""
        with self.engine.begin() as conn:
            yield conn
        self._prompt.publish_soon()

    def _require_audit_log(self) -> None:
        """Before a change that widens access: AuditLogNotAppendable unless the audit log takes entries."""
        require_appendable(self.engine, self.settings.audit_fail_closed_after_s)

    def _hard_denial(
        self,
        fields: Sequence[str],
        dataset: Dataset,
        tenant_kind: TenantKind,
        grant_kind: GrantKind = GrantKind.ROWS,
    ) -> Decision | None:
        """The policy's decision when it denies these fields of this dataset to this kind of tenant and grant;
        else None."""
        decision = self.policy.decide(_facts(fields, dataset, tenant_kind, grant_kind))
        return decision if decision.outcome == Outcome.DENY else None

    def _tenant_kind(self, grant: Grant, conn: Connection | None = None) -> TenantKind:
        if conn is None:
            return self.get_request(grant.request_id).tenant_kind
        return self._request(conn, grant.request_id).tenant_kind

    def _dataset(self, dataset_id: str) -> Dataset:
        _require_text(dataset_id, "dataset_id")
        return self.datasets.get(dataset_id)

    def _evaluate(self, request: DataRequest) -> tuple[Decision, Dataset | None]:
        """The policy's decision and the dataset, unless the dataset is gone or changed beyond the request."""
        try:
            dataset = self._dataset(request.dataset_id)
        except NotFound:
            return _unavailable(f"dataset {request.dataset_id} does not exist"), None
        if dataset.retired:
            return _unavailable(f"dataset {dataset.dataset_id} is retired"), None
        missing = [name for name in request.fields if name not in dataset.field_names]
        if missing:
            return _unavailable(
                f"dataset {dataset.dataset_id} no longer has the fields {', '.join(missing)}"
            ), None
        try:
            _row_filter(request.row_filter, dataset, request.fields)
        except InvalidInput as error:  # a filtered field became sensitive since the request was made
            return _unavailable(f"dataset {dataset.dataset_id} changed: {error.message}"), None
        if request.kind is GrantKind.AGGREGATE:
            try:
                _kind_and_aggregate(request.kind, request.aggregate, dataset, request.fields)
            except InvalidInput as error:  # a grouped field became sensitive, a numeric one changed type
                return _unavailable(f"dataset {dataset.dataset_id} changed: {error.message}"), None
        facts = _facts(request.fields, dataset, request.tenant_kind, request.kind)
        return self.policy.decide(facts), dataset

    def _request(self, conn: Connection, request_id: str, tenant_id: str | None = None) -> DataRequest:
        row = conn.execute(_request_query(request_id, tenant_id)).mappings().first()
        if row is None:
            raise NotFound(f"no data request {request_id}" + (f" for {tenant_id}" if tenant_id else ""))
        return records.request_from_row(row)

    def _locked_request(self, conn: Connection, request_id: str, tenant_id: str | None = None) -> DataRequest:
        row = conn.execute(_request_query(request_id, tenant_id).with_for_update()).mappings().first()
        if row is None:
            raise NotFound(f"no data request {request_id}" + (f" for {tenant_id}" if tenant_id else ""))
        return records.request_from_row(row)

    def _move(
        self, request: DataRequest, action: RequestAction, actor: str, rule: str | None, reason: str | None
    ) -> DataRequest:
        status = next_request_status(request.request_id, request.status, action)
        return replace(
            request,
            status=status,
            decided_by_rule=rule,
            decision_reason=reason,
            decided_by=actor,
            updated_at=self.clock(),
        )

    def _save_request(self, conn: Connection, before: DataRequest, after: DataRequest) -> None:
        # The status in the WHERE clause makes a concurrent change (SQLite has no row locks) a Conflict.
        done = conn.execute(
            t.requests.update()
            .where(t.requests.c.request_id == before.request_id)
            .where(t.requests.c.status == before.status.value)
            .values(records.request_to_row(after))
        )
        if done.rowcount != 1:
            raise Conflict(f"request {before.request_id} changed while being updated; try again")

    def _deny(
        self, conn: Connection, request: DataRequest, actor: str, rule: str, reason: str
    ) -> DataRequest:
        denied = self._move(
            request, RequestAction.DENY, actor, None if rule == OPERATOR_RULE else rule, reason
        )
        self._save_request(conn, request, denied)
        event = {
            **records.head(_event_id(), denied.updated_at, actor),
            "request_id": request.request_id,
            "tenant_id": request.tenant_id,
            "dataset_id": request.dataset_id,
            "rule": rule,
            "reason": reason,
        }
        # A denial has no grant: it is keyed by the request, so compaction keeps one per request.
        outbox.stage(conn, TopicId.AUTHORIZATIONS, records.DENIED, event, request.request_id)
        return denied

    def _grant(
        self,
        conn: Connection,
        request: DataRequest,
        dataset: Dataset,
        scope: _Scope,
        actor: str,
        rule: str | None,
        reason: str | None,
    ) -> Grant:
        approved = self._move(request, RequestAction.APPROVE, actor, rule, reason)
        self._save_request(conn, request, approved)
        plan = dataset.price_plan
        grant = Grant(
            grant_id=grant_id_for(request.request_id),
            request_id=request.request_id,
            tenant_id=request.tenant_id,
            dataset_id=request.dataset_id,
            fields=scope.fields,
            # Every granted sensitive field is masked by its catalog default; nothing sensitive goes clear.
            masking={name: dataset.sensitive[name] for name in scope.fields if name in dataset.sensitive},
            row_filter=scope.row_filter,
            daily_quota_records=scope.daily_quota_records,
            valid_from=scope.valid_from,
            valid_until=scope.valid_until,
            price_plan=free_plan(plan) if request.tenant_kind == TenantKind.GOVERNMENT else plan,
            status=GrantStatus.ACTIVE,
            version=1,
            created_at=approved.updated_at,
            updated_at=approved.updated_at,
            kind=request.kind,
            aggregate=_narrowed_aggregate(request.aggregate, scope.fields),
        )
        event_id = _event_id()
        conn.execute(t.grants.insert().values(records.grant_to_row(grant)))
        transition = GrantTransition(
            grant.grant_id, None, GrantStatus.ACTIVE, actor, reason, grant.created_at, event_id
        )
        conn.execute(t.grant_transitions.insert().values(records.transition_to_row(transition)))
        event = records.granted_event(grant, event_id, actor, rule, reason)
        outbox.stage(conn, TopicId.AUTHORIZATIONS, records.GRANTED, event, grant.grant_id, grant.version)
        return replace(grant, history=(transition,))

    def _transition(
        self,
        grant_id: str,
        action: GrantAction,
        actor: str,
        reason: str | None,
        schema_name: str,
        cause: SuspensionCause | None = None,
        amend: Callable[[Grant], Grant] | None = None,
    ) -> Grant:
        with self._change() as conn:
            before = self._locked_grant(conn, grant_id)
            return self._move_grant(conn, before, action, actor, reason, schema_name, cause, amend)

    def _locked_grant(self, conn: Connection, grant_id: str) -> Grant:
        row = conn.execute(_grant_query(grant_id).with_for_update()).mappings().first()
        if row is None:
            raise NotFound(f"no grant {grant_id}")
        return records.grant_from_row(row)

    def _move_grant(
        self,
        conn: Connection,
        before: Grant,
        action: GrantAction | None,
        actor: str,
        reason: str | None,
        schema_name: str,
        cause: SuspensionCause | None = None,
        amend: Callable[[Grant], Grant] | None = None,
    ) -> Grant:
        """One version more of a grant: its row, its history row and its event (into the outbox).

        `action` None keeps the status and restates why (a new reason or cause, a new version)."""
        grant_id = before.grant_id
        status = before.status if action is None else next_grant_status(grant_id, before.status, action)
        after = replace(
            before,
            status=status,
            status_reason=reason,
            suspension_cause=cause if status == GrantStatus.SUSPENDED else None,
            version=before.version + 1,
            updated_at=self.clock(),
        )
        after = amend(after) if amend is not None else after
        done = conn.execute(
            t.grants.update()
            .where(t.grants.c.grant_id == grant_id)
            .where(t.grants.c.version == before.version)
            .values(records.grant_to_row(after))
        )
        if done.rowcount != 1:
            raise Conflict(f"grant {grant_id} changed while being updated; try again")
        event_id = _event_id()
        transition = GrantTransition(
            grant_id, before.status, status, actor, reason, after.updated_at, event_id
        )
        conn.execute(t.grant_transitions.insert().values(records.transition_to_row(transition)))
        event = records.transition_event(after, event_id, actor, **_event_extras(schema_name, after, reason))
        outbox.stage(conn, TopicId.AUTHORIZATIONS, schema_name, event, grant_id, after.version)
        return after

    def _expire(self, grant_id: str) -> Grant:
        grant = self.get_grant(grant_id)
        reason = f"validity ended at {grant.valid_until.isoformat()}"
        return self._transition(grant_id, GrantAction.EXPIRE, CLOCK_ACTOR, reason, records.EXPIRED)

    def _each(self, query: sa.Select, act: Callable[[str], Grant]) -> list[Grant]:
        """Apply `act` to each grant the query finds; one another worker changed meanwhile is skipped."""
        with self.engine.connect() as conn:
            grant_ids = list(conn.execute(query).scalars())
        done = []
        for grant_id in grant_ids:
            try:
                done.append(act(grant_id))
            except (IllegalTransition, Conflict) as error:
                log.info("skipped grant %s: %s", grant_id, error.message)
        return done


# ---------------------------------------------------------------------------------------------- scope


class _Scope:
    """What a grant covers: the requested scope, possibly narrowed by the operator."""

    def __init__(
        self,
        fields: tuple[str, ...],
        row_filter: str | None,
        daily_quota_records: int | None,
        valid_from: datetime,
        valid_until: datetime,
    ) -> None:
        self.fields = fields
        self.row_filter = row_filter
        self.daily_quota_records = daily_quota_records
        self.valid_from = valid_from
        self.valid_until = valid_until

    @classmethod
    def requested(cls, request: DataRequest) -> _Scope:
        # The expected daily volume is what the tenant asked for, so it is the quota unless narrowed.
        return cls(
            request.fields,
            request.row_filter,
            request.expected_daily_records,
            request.valid_from,
            request.valid_until,
        )

    def narrowed(self, narrowing: Narrowing, dataset: Dataset) -> _Scope:
        """The scope with the operator's narrowing applied; InvalidInput if it would widen anything."""
        fields = self.fields
        if narrowing.fields is not None:
            fields = _fields(narrowing.fields, dataset)
            extra = [name for name in fields if name not in self.fields]
            if extra:
                raise InvalidInput(
                    f"narrowing may only drop fields; {', '.join(extra)} were not requested",
                    hint=f"requested fields: {', '.join(self.fields)}",
                )
        filter_text = self.row_filter
        if narrowing.row_filter is not None and narrowing.row_filter.strip():
            _row_filter(narrowing.row_filter, dataset, fields)
            # Both filters apply: a record must match the tenant's and the operator's, so rows only drop.
            filter_text = row_filter.conjunction(self.row_filter, narrowing.row_filter)
        # Checked whole and against the fields kept: dropping a field the tenant's filter reads hides it too.
        filter_text = _row_filter(filter_text, dataset, fields)
        quota = self.daily_quota_records
        if narrowing.daily_quota_records is not None:
            quota = _positive(narrowing.daily_quota_records, "daily_quota_records")
            if (
                quota is not None
                and self.daily_quota_records is not None
                and quota > self.daily_quota_records
            ):
                raise InvalidInput(
                    f"daily_quota_records {quota} is more than the {self.daily_quota_records} requested"
                )
        valid_from = self.valid_from if narrowing.valid_from is None else utc(narrowing.valid_from)
        valid_until = self.valid_until if narrowing.valid_until is None else utc(narrowing.valid_until)
        if valid_from < self.valid_from or valid_until > self.valid_until:
            raise InvalidInput(
                f"the narrowed period {valid_from.isoformat()} – {valid_until.isoformat()} is not within "
                f"the requested {self.valid_from.isoformat()} – {self.valid_until.isoformat()}"
            )
        if valid_until <= valid_from:
            raise InvalidInput(
                f"the narrowed period ends ({valid_until.isoformat()}) before it starts ({valid_from.isoformat()})"
            )
        return _Scope(fields, filter_text, quota, valid_from, valid_until)


# ---------------------------------------------------------------------------------------------- validation


def _require_text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must not be empty")
    return value


def _optional_text(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text")
    value = value.strip()
    if len(value) > MAX_REASON:
        raise InvalidInput(f"{name} is longer than {MAX_REASON} characters")
    return value or None


def _required_reason(reason: str | None, what: str) -> str:
    text = _optional_text(reason, "reason")
    if text is None:
        raise InvalidInput(f"{what} needs a reason", hint="the tenant is shown why; say it in a sentence")
    return text


def _request_id(request_id: str | None) -> str:
    if request_id is None:
        return f"r-{uuid.uuid4().hex}"
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise InvalidInput(
            f"request_id {request_id!r} is not a valid id",
            hint="1–100 characters: letters, digits, '.', '_', ':' and '-', starting with a letter or digit",
        )
    return request_id


def _purpose(purpose: Any) -> str:
    text = _require_text(purpose, "purpose").strip()
    if len(text) > MAX_PURPOSE:
        raise InvalidInput(f"purpose is longer than {MAX_PURPOSE} characters")
    return text


def _fields(fields: Sequence[str] | None, dataset: Dataset) -> tuple[str, ...]:
    if fields is None or isinstance(fields, str) or not all(isinstance(name, str) for name in fields):
        raise InvalidInput("fields must be a list of field names")
    fields = tuple(fields)
    if not fields:
        raise InvalidInput(
            "fields must name at least one field",
            hint=f"{dataset.dataset_id} has: {', '.join(dataset.field_names)}",
        )
    repeated = sorted({name for name in fields if fields.count(name) > 1})
    if repeated:
        raise InvalidInput(f"fields names {', '.join(repeated)} more than once")
    unknown = [name for name in fields if name not in dataset.field_names]
    if unknown:
        raise InvalidInput(
            f"dataset {dataset.dataset_id} has no field {', '.join(repr(name) for name in unknown)}",
            hint=f"its fields are: {', '.join(dataset.field_names)}",
        )
    return fields


def _row_filter(text: str | None, dataset: Dataset, fields: Sequence[str]) -> str | None:
    """The filter if it parses and names only `fields` the dataset does not mark sensitive (the scope rule)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    masking = {name: rule for name, rule in dataset.sensitive.items() if name in fields}
    row_filter.parse_in_scope(text, dataset.field_names, fields, masking)
    return text


def _period(valid_from: Any, valid_until: Any, now: datetime) -> tuple[datetime, datetime]:
    if not isinstance(valid_from, datetime) or not isinstance(valid_until, datetime):
        raise InvalidInput("valid_from and valid_until must both be date-times")
    valid_from, valid_until = utc(valid_from), utc(valid_until)
    if valid_until <= valid_from:
        raise InvalidInput(
            f"the period ends ({valid_until.isoformat()}) before it starts ({valid_from.isoformat()})"
        )
    if valid_until <= now:
        raise InvalidInput(f"the period ended already ({valid_until.isoformat()}); ask for a period to come")
    return valid_from, valid_until


def _positive(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


def _status(kind: type[Enum], value: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidInput(
            f"status {value!r} is not one of {', '.join(member.value for member in kind)}"
        ) from None


def _facts(
    fields: Sequence[str], dataset: Dataset, tenant_kind: TenantKind, grant_kind: GrantKind
) -> RequestFacts:
    """What the policy sees of a request (or of a grant, re-checked) for these fields of this dataset."""
    return RequestFacts(
        classification=dataset.classification,
        openness=dataset.openness,
        has_sensitive_fields_requested=any(name in dataset.sensitive for name in fields),
        tenant_kind=tenant_kind,
        grant_kind=grant_kind,
    )


def _kind_and_aggregate(
    kind: GrantKind, aggregate: AggregateSpec | None, dataset: Dataset, fields: Sequence[str]
) -> tuple[GrantKind, AggregateSpec | None]:
    """The request's kind and aggregate spec if they fit the dataset and the fields asked for.

    An AGGREGATE request groups by and computes on requested fields only; it never groups by a sensitive field
    (a group key is published as it is, so it would hand out the very value the catalog protects), and it
    computes only on numeric fields. A ROWS request carries no aggregate spec."""
    kind = GrantKind(kind)
    if kind is GrantKind.ROWS:
        if aggregate is not None:
            raise InvalidInput(
                "an aggregate spec is given for a ROWS request", hint='set "kind": "AGGREGATE"'
            )
        return kind, None
    if aggregate is None:
        raise InvalidInput(
            "an AGGREGATE request needs an aggregate spec",
            hint="give window_seconds, group_by, numeric_fields and functions (COUNT, SUM, MEAN, MIN, MAX)",
        )
    if not 1 <= aggregate.window_seconds <= MAX_WINDOW_SECONDS:
        raise InvalidInput(
            f"window_seconds must be 1 to {MAX_WINDOW_SECONDS}, not {aggregate.window_seconds}"
        )
    if not aggregate.functions or len(set(aggregate.functions)) != len(aggregate.functions):
        raise InvalidInput(
            "functions must name each aggregate once, at least one of COUNT, SUM, MEAN, MIN, MAX"
        )
    outside = [name for name in aggregate.fields_read() if name not in fields]
    if outside:
        raise InvalidInput(
            f"the aggregate reads {', '.join(outside)}, which the request does not ask for",
            hint="group_by and numeric_fields must be among fields",
        )
    sensitive = [name for name in aggregate.group_by if name in dataset.sensitive]
    if sensitive:
        raise InvalidInput(
            f"cannot group by the sensitive field(s) {', '.join(sensitive)}: a group key is published as it is",
            hint="group by fields the catalog does not mark sensitive",
        )
    numeric = dataset.numeric_fields()
    not_numeric = [name for name in aggregate.numeric_fields if name not in numeric]
    if not_numeric:
        raise InvalidInput(f"numeric_fields names fields that are not numbers: {', '.join(not_numeric)}")
    if aggregate.epsilon is not None:
        if not 0 < aggregate.epsilon <= MAX_EPSILON:
            raise InvalidInput(f"epsilon must be above 0 and at most {MAX_EPSILON}, not {aggregate.epsilon}")
        if aggregate.functions != (AggregateFunction.COUNT,):
            raise InvalidInput(
                "differential privacy covers counts only",
                hint='ask for "functions": ["COUNT"] with an epsilon, or leave epsilon out for sums and means',
            )
    wants_numbers = set(aggregate.functions) - {AggregateFunction.COUNT}
    if wants_numbers and not aggregate.numeric_fields:
        raise InvalidInput(
            f"{', '.join(sorted(wants_numbers))} need numeric_fields to compute on",
            hint="name the numeric fields, or ask only for COUNT",
        )
    return kind, aggregate


def _narrowed_aggregate(aggregate: AggregateSpec | None, fields: Sequence[str]) -> AggregateSpec | None:
    """The aggregate spec without the fields an operator's narrowing dropped (an aggregate only narrows)."""
    if aggregate is None:
        return None
    return replace(
        aggregate,
        group_by=tuple(name for name in aggregate.group_by if name in fields),
        numeric_fields=tuple(name for name in aggregate.numeric_fields if name in fields),
    )


def _tightened_masking(grant: Grant, dataset: Dataset) -> dict[str, MaskingRule]:
    """The grant's masking plus the catalog default of every granted field now sensitive and still clear.

    Masking only tightens: a field the catalog no longer marks sensitive stays masked as granted.
    """
    added = {
        name: dataset.sensitive[name]
        for name in grant.fields
        if name in dataset.sensitive and name not in grant.masking
    }
    return {**grant.masking, **added}


def _with_published(grant: Grant, unpublished: set[tuple[str, int]]) -> Grant:
    return replace(grant, published=(grant.grant_id, grant.version) not in unpublished)


def _require_pending_review(request: DataRequest) -> None:
    next_request_status(request.request_id, request.status, RequestAction.APPROVE)
    if request.status != RequestStatus.PENDING_REVIEW:
        raise IllegalTransition(
            f"request {request.request_id} is {request.status}; an operator approves only requests "
            "PENDING_REVIEW",
            hint="the policy decides a SUBMITTED request first; approve it once it waits for review",
        )


def _unavailable(reason: str) -> Decision:
    return Decision(Outcome.DENY, DATASET_UNAVAILABLE_RULE, reason)


def _duplicate(request_id: str) -> Conflict:
    return Conflict(f"a data request with id {request_id} exists already", hint="use a new request_id")


def _event_id() -> str:
    return str(uuid.uuid4())


def _request_query(request_id: str, tenant_id: str | None = None) -> sa.Select:
    query = sa.select(t.requests).where(t.requests.c.request_id == request_id)
    return query if tenant_id is None else query.where(t.requests.c.tenant_id == tenant_id)


def _grant_query(grant_id: str, tenant_id: str | None = None) -> sa.Select:
    query = sa.select(t.grants).where(t.grants.c.grant_id == grant_id)
    return query if tenant_id is None else query.where(t.grants.c.tenant_id == tenant_id)


def _event_extras(schema_name: str, grant: Grant, reason: str | None) -> dict[str, Any]:
    """The fields a transition event has beyond the common ones."""
    if schema_name == records.SUSPENDED:
        return {"reason": reason, "cause": (grant.suspension_cause or SuspensionCause.OPERATOR).value}
    if schema_name == records.EXPIRED:
        return {"expired_at": utc(grant.valid_until)}
    return {"reason": reason}
