"""A row filter may read only what the grant delivers in clear: refused when requested, approved or decided.

The attack these tests close: on open data, ask for `fields: ["record_id"]` with a filter on a hidden
field (a phone, an ID-card number) — auto-approved before, and a few such requests read the hidden value
out by which rows arrive. The delivery-time half of the rule is in test_sharing_agents.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pdo.authorization import records
from pdo.authorization.public import Narrowing, RequestSpec, RequestStatus
from pdo.authorization.row_filter import (
    FilterScopeError,
    clear_fields,
    parse,
    parse_in_scope,
    require_in_scope,
)
from pdo.authorization.testing import sqlite_harness
from pdo.core.errors import InvalidInput
from pdo.core.vocabulary import MaskingRule, SensitiveField

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tenant:acme-logistics"
OPERATOR = "operator:alice"
TRAFFIC_FIELDS = ("record_id", "district", "plate_number", "driver_phone", "speed_kmh", "lane")


@pytest.fixture
def h(tmp_path):
    with sqlite_harness(tmp_path, START) as harness:
        yield harness


def spec(dataset_id="open-traffic", fields=("record_id",), row_filter=None) -> RequestSpec:
    return RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion forecasting",
        fields=fields,
        valid_from=START,
        valid_until=START + timedelta(days=30),
        row_filter=row_filter,
    )


# ---------------------------------------------------------------------------------------------- the rule


def test_clear_fields_are_the_granted_ones_without_masking():
    masking = {"plate_number": MaskingRule.KEYED_HASH, "lane": MaskingRule.ROUND_NUMBER}
    assert clear_fields(("record_id", "plate_number", "district"), masking) == ("record_id", "district")


@pytest.mark.parametrize("rule", list(MaskingRule))
def test_a_filter_on_a_field_masked_by_any_rule_is_refused_naming_field_and_rule(rule):
    parsed = parse("plate_number == '京A12345' and district == 'Haidian'", TRAFFIC_FIELDS)

    with pytest.raises(FilterScopeError) as refused:
        require_in_scope(parsed, ("district", "plate_number"), {"plate_number": rule})

    assert refused.value.fields == ("plate_number",)
    assert f"'plate_number' is delivered masked ({rule})" in refused.value.message
    assert "district" in refused.value.hint  # what the tenant may filter on instead


def test_a_filter_on_a_field_not_granted_is_refused_and_a_filter_on_clear_fields_is_kept():
    parsed = parse("driver_phone >= '138' or speed_kmh > 60", TRAFFIC_FIELDS)

    with pytest.raises(FilterScopeError, match="'driver_phone' is not granted"):
        require_in_scope(parsed, ("record_id", "speed_kmh"), {})
    assert require_in_scope(parsed, ("driver_phone", "speed_kmh"), {}) is parsed


def test_without_a_clear_field_no_filter_is_possible_and_the_hint_says_so():
    with pytest.raises(FilterScopeError) as refused:
        parse_in_scope("plate_number != null", TRAFFIC_FIELDS, ("plate_number",), {"plate_number": "REDACT"})
    assert "cannot have a row filter" in refused.value.hint


def test_scope_errors_are_invalid_input_so_the_gateway_answers_422():
    assert issubclass(FilterScopeError, InvalidInput)


# ---------------------------------------------------------------------------------------------- request time


def test_the_attack_on_open_data_is_refused_at_submission_and_nothing_is_recorded(h):
    attack = spec(
        fields=("record_id",), row_filter="driver_phone >= '13800000000' and driver_phone < '13900000000'"
    )

    with pytest.raises(FilterScopeError) as refused:
        h.service.submit_request(TENANT, attack, TENANT)

    assert "'driver_phone' is not granted" in refused.value.message
    assert "record_id" in refused.value.hint
    assert h.publisher.events == [] and h.service.list_requests() == []


def test_asking_for_the_sensitive_field_too_does_not_make_a_filter_on_it_acceptable(h):
    with pytest.raises(FilterScopeError, match=r"'plate_number' is delivered masked \(KEEP_FIRST_LAST\)"):
        h.service.submit_request(
            TENANT,
            spec(fields=("record_id", "plate_number"), row_filter="plate_number == '京A12345'"),
            TENANT,
        )


def test_a_filter_on_requested_clear_fields_is_auto_approved_as_before(h):
    request = h.service.submit_request(
        TENANT, spec(fields=("record_id", "district"), row_filter="district == 'Haidian'"), TENANT
    )
    grant = h.service.get_grant(h.service.decide(request.request_id).grant_id)
    assert grant.row_filter == "district == 'Haidian'" and grant.masking == {}


# ---------------------------------------------------------------------------------------------- approval


def pending(h, fields, row_filter=None) -> str:
    request = h.service.submit_request(TENANT, spec("conditional-traffic", fields, row_filter), TENANT)
    assert h.service.decide(request.request_id).status == RequestStatus.PENDING_REVIEW
    return request.request_id


@pytest.mark.parametrize(
    ("fields", "row_filter", "narrowing", "message"),
    [
        # The operator drops the field the tenant's filter reads: the filter would read a hidden field.
        (
            ("district", "speed_kmh"),
            "district == 'Haidian'",
            Narrowing(fields=("speed_kmh",)),
            "'district' is not granted",
        ),
        # The operator's own filter is held to the same rule.
        (
            ("district", "plate_number"),
            None,
            Narrowing(row_filter="plate_number == '京A12345'"),
            "delivered masked",
        ),
        (("district",), None, Narrowing(row_filter="driver_phone != null"), "'driver_phone' is not granted"),
    ],
)
def test_an_approval_whose_filter_would_read_a_hidden_field_is_refused(
    h, fields, row_filter, narrowing, message
):
    request_id = pending(h, fields, row_filter)

    with pytest.raises(FilterScopeError, match=message):
        h.service.approve(request_id, OPERATOR, narrowing)

    assert h.service.get_request(request_id).status == RequestStatus.PENDING_REVIEW
    assert h.publisher.of(records.GRANTED) == []


def test_a_field_marked_sensitive_after_the_request_makes_the_operator_approval_fail(h):
    request_id = pending(h, ("district", "speed_kmh"), "speed_kmh > 60")
    mark_sensitive(h, "conditional-traffic", "speed_kmh", MaskingRule.ROUND_NUMBER)

    with pytest.raises(FilterScopeError, match=r"'speed_kmh' is delivered masked \(ROUND_NUMBER\)"):
        h.service.approve(request_id, OPERATOR)
    assert h.publisher.of(records.GRANTED) == []


def test_a_field_marked_sensitive_before_the_decision_denies_the_request_with_the_reason(h):
    request = h.service.submit_request(
        TENANT, spec(fields=("record_id", "speed_kmh"), row_filter="speed_kmh > 60"), TENANT
    )
    mark_sensitive(h, "open-traffic", "speed_kmh", MaskingRule.ROUND_NUMBER)

    decided = h.service.decide(request.request_id)

    assert decided.status == RequestStatus.DENIED
    assert "'speed_kmh' is delivered masked (ROUND_NUMBER)" in decided.decision_reason
    assert h.publisher.of(records.GRANTED) == []


def mark_sensitive(h, dataset_id: str, field: str, rule: MaskingRule) -> None:
    dataset = h.catalog.get(dataset_id)
    h.catalog.add(replace(dataset, sensitive_fields=(*dataset.sensitive_fields, SensitiveField(field, rule))))
