"""The request and grant state machines as data: which action moves which state where, and nothing else.

Pure functions over tables, so the service, the projection and the property tests share one definition.
An action missing from a state's row is illegal; a state with an empty row is terminal.
"""

from __future__ import annotations

from enum import StrEnum

from pdo.authorization.models import RequestStatus
from pdo.core.errors import Conflict
from pdo.core.vocabulary import GrantStatus


class GrantAction(StrEnum):
    SUSPEND = "suspend"
    RESUME = "resume"
    REVOKE = "revoke"
    EXPIRE = "expire"


class RequestAction(StrEnum):
    REVIEW = "review"
    APPROVE = "approve"
    DENY = "deny"
    WITHDRAW = "withdraw"


GRANT_TRANSITIONS: dict[GrantStatus, dict[GrantAction, GrantStatus]] = {
    GrantStatus.ACTIVE: {
        GrantAction.SUSPEND: GrantStatus.SUSPENDED,
        GrantAction.REVOKE: GrantStatus.REVOKED,
        GrantAction.EXPIRE: GrantStatus.EXPIRED,
    },
    GrantStatus.SUSPENDED: {
        GrantAction.RESUME: GrantStatus.ACTIVE,
        GrantAction.REVOKE: GrantStatus.REVOKED,
        GrantAction.EXPIRE: GrantStatus.EXPIRED,
    },
    GrantStatus.REVOKED: {},
    GrantStatus.EXPIRED: {},
}

# Approve and deny only while undecided; withdraw only before a decision (review is not a decision).
REQUEST_TRANSITIONS: dict[RequestStatus, dict[RequestAction, RequestStatus]] = {
    RequestStatus.SUBMITTED: {
        RequestAction.REVIEW: RequestStatus.PENDING_REVIEW,
        RequestAction.APPROVE: RequestStatus.APPROVED,
        RequestAction.DENY: RequestStatus.DENIED,
        RequestAction.WITHDRAW: RequestStatus.WITHDRAWN,
    },
    RequestStatus.PENDING_REVIEW: {
        RequestAction.APPROVE: RequestStatus.APPROVED,
        RequestAction.DENY: RequestStatus.DENIED,
        RequestAction.WITHDRAW: RequestStatus.WITHDRAWN,
    },
    RequestStatus.APPROVED: {},
    RequestStatus.DENIED: {},
    RequestStatus.WITHDRAWN: {},
}

_PAST_TENSE = {
    GrantAction.SUSPEND: "suspended",
    GrantAction.RESUME: "resumed",
    GrantAction.REVOKE: "revoked",
    GrantAction.EXPIRE: "expired",
    RequestAction.REVIEW: "sent to review",
    RequestAction.APPROVE: "approved",
    RequestAction.DENY: "denied",
    RequestAction.WITHDRAW: "withdrawn",
}


class IllegalTransition(Conflict):
    """The action is not allowed from the current state (HTTP 409)."""


def is_terminal_grant(status: GrantStatus) -> bool:
    return not GRANT_TRANSITIONS[status]


def is_terminal_request(status: RequestStatus) -> bool:
    return not REQUEST_TRANSITIONS[status]


def next_grant_status(grant_id: str, current: GrantStatus, action: GrantAction) -> GrantStatus:
    """The state `action` leads to, or IllegalTransition saying why not."""
    target = GRANT_TRANSITIONS[current].get(action)
    if target is None:
        raise IllegalTransition(
            f"grant {grant_id} is {current}; {_grant_phrase(current)} cannot be {_PAST_TENSE[action]}",
            hint=_grant_hint(current),
        )
    return target


def next_request_status(request_id: str, current: RequestStatus, action: RequestAction) -> RequestStatus:
    """The state `action` leads to, or IllegalTransition saying why not."""
    target = REQUEST_TRANSITIONS[current].get(action)
    if target is None:
        raise IllegalTransition(
            f"request {request_id} is {current}; {_request_phrase(current)} cannot be {_PAST_TENSE[action]}",
            hint="only undecided requests (SUBMITTED, PENDING_REVIEW) can be approved, denied or withdrawn",
        )
    return target


def _grant_phrase(status: GrantStatus) -> str:
    return {
        GrantStatus.ACTIVE: "an active grant",
        GrantStatus.SUSPENDED: "a suspended grant",
        GrantStatus.REVOKED: "a revoked grant",
        GrantStatus.EXPIRED: "an expired grant",
    }[status]


def _grant_hint(status: GrantStatus) -> str:
    if is_terminal_grant(status):
        return "revoked and expired grants are final; the tenant may submit a new request"
    return f"from {status} a grant can be: " + ", ".join(str(a) for a in GRANT_TRANSITIONS[status])


def _request_phrase(status: RequestStatus) -> str:
    return {
        RequestStatus.SUBMITTED: "a submitted request",
        RequestStatus.PENDING_REVIEW: "a request pending review",
        RequestStatus.APPROVED: "an approved request",
        RequestStatus.DENIED: "a denied request",
        RequestStatus.WITHDRAWN: "a withdrawn request",
    }[status]
