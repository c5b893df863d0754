"""The request and grant state machines: allowed moves, clear refusals, terminal states stay terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdo.authorization.lifecycle import (
    GRANT_TRANSITIONS,
    REQUEST_TRANSITIONS,
    GrantAction,
    IllegalTransition,
    RequestAction,
    is_terminal_grant,
    is_terminal_request,
    next_grant_status,
    next_request_status,
)
from pdo.authorization.public import RequestStatus
from pdo.core.errors import Conflict
from pdo.core.vocabulary import GrantStatus


def test_the_grant_lifecycle_is_active_suspended_active_revoked():
    status = GrantStatus.ACTIVE
    for action, expected in [
        (GrantAction.SUSPEND, GrantStatus.SUSPENDED),
        (GrantAction.RESUME, GrantStatus.ACTIVE),
        (GrantAction.REVOKE, GrantStatus.REVOKED),
    ]:
        status = next_grant_status("g-1", status, action)
        assert status == expected


@pytest.mark.parametrize("start", [GrantStatus.ACTIVE, GrantStatus.SUSPENDED])
def test_active_and_suspended_grants_expire(start):
    assert next_grant_status("g-1", start, GrantAction.EXPIRE) == GrantStatus.EXPIRED


def test_resuming_a_revoked_grant_is_refused_with_a_clear_message():
    with pytest.raises(IllegalTransition) as refused:
        next_grant_status("g-r-42", GrantStatus.REVOKED, GrantAction.RESUME)
    assert refused.value.message == "grant g-r-42 is REVOKED; a revoked grant cannot be resumed"
    assert isinstance(refused.value, Conflict)


def test_resuming_an_active_grant_names_what_is_possible():
    with pytest.raises(IllegalTransition) as refused:
        next_grant_status("g-1", GrantStatus.ACTIVE, GrantAction.RESUME)
    assert "an active grant cannot be resumed" in refused.value.message
    assert "suspend" in refused.value.hint


def test_approving_a_withdrawn_request_is_refused():
    with pytest.raises(IllegalTransition, match="r-1 is WITHDRAWN; a withdrawn request cannot be approved"):
        next_request_status("r-1", RequestStatus.WITHDRAWN, RequestAction.APPROVE)


@pytest.mark.parametrize("undecided", [RequestStatus.SUBMITTED, RequestStatus.PENDING_REVIEW])
@pytest.mark.parametrize("action", [RequestAction.APPROVE, RequestAction.DENY, RequestAction.WITHDRAW])
def test_undecided_requests_can_be_approved_denied_or_withdrawn(undecided, action):
    assert next_request_status("r-1", undecided, action) in {
        RequestStatus.APPROVED,
        RequestStatus.DENIED,
        RequestStatus.WITHDRAWN,
    }


def test_only_a_submitted_request_goes_to_review():
    assert (
        next_request_status("r-1", RequestStatus.SUBMITTED, RequestAction.REVIEW)
        == RequestStatus.PENDING_REVIEW
    )
    with pytest.raises(IllegalTransition):
        next_request_status("r-1", RequestStatus.PENDING_REVIEW, RequestAction.REVIEW)


def test_terminal_states_are_exactly_the_final_ones():
    assert {s for s in GrantStatus if is_terminal_grant(s)} == {GrantStatus.REVOKED, GrantStatus.EXPIRED}
    assert {s for s in RequestStatus if is_terminal_request(s)} == {
        RequestStatus.APPROVED,
        RequestStatus.DENIED,
        RequestStatus.WITHDRAWN,
    }


def test_every_state_has_a_row_in_the_tables():
    assert set(GRANT_TRANSITIONS) == set(GrantStatus)
    assert set(REQUEST_TRANSITIONS) == set(RequestStatus)


@given(st.lists(st.sampled_from(list(GrantAction)), max_size=40))
def test_random_grant_sequences_follow_the_table_and_terminal_stays_terminal(actions):
    status = GrantStatus.ACTIVE
    for action in actions:
        allowed = GRANT_TRANSITIONS[status].get(action)
        was_terminal = is_terminal_grant(status)
        try:
            after = next_grant_status("g-1", status, action)
        except IllegalTransition:
            assert allowed is None  # refused exactly when the table has no move
            continue
        assert not was_terminal, f"{status} is terminal but {action} moved it"
        assert after == allowed
        status = after
    if any(is_terminal_grant(s) for s in [status]):
        for action in GrantAction:
            with pytest.raises(IllegalTransition):
                next_grant_status("g-1", status, action)


@given(st.lists(st.sampled_from(list(RequestAction)), max_size=20))
def test_random_request_sequences_decide_at_most_once(actions):
    status = RequestStatus.SUBMITTED
    decisions = 0
    for action in actions:
        try:
            after = next_request_status("r-1", status, action)
        except IllegalTransition:
            assert REQUEST_TRANSITIONS[status].get(action) is None
            continue
        assert not is_terminal_request(status)
        decisions += is_terminal_request(after)
        status = after
    assert decisions <= 1
