"""Hard denials stay denials whoever approves, and a grant never outlives its dataset's terms: a
reclassification suspends it, a newly sensitive field is re-masked, and the tenant sees why."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import ServerThread
from gateway_support import gateway_database

from pdo.authorization import records
from pdo.authorization.lifecycle import IllegalTransition
from pdo.authorization.public import AuthorizationService, RequestSpec, RequestStatus, load_policy
from pdo.authorization.testing import Clock, RecordingPublisher, sample_catalog
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import Conflict
from pdo.core.vocabulary import (
    Classification,
    GrantStatus,
    MaskingRule,
    Openness,
    SensitiveField,
    SuspensionCause,
)
from pdo.gateway.app import create_app
from pdo.sharing.grants import GrantBook
from pdo.sharing.scope import GrantState

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tenant:acme"
OPERATOR = "operator:alice"


@pytest.fixture
def catalog():
    return sample_catalog()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def engine(database_url):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def service(engine, publisher, catalog) -> AuthorizationService:
    return AuthorizationService(
        engine, publisher, catalog, load_policy(), Settings.from_env(), clock=Clock(START)
    )


def submit(service, dataset_id="open-traffic", fields=("district", "speed_kmh")) -> str:
    spec = RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion forecasting",
        fields=tuple(fields),
        valid_from=START,
        valid_until=START + timedelta(days=30),
    )
    return service.submit_request(TENANT, spec, TENANT).request_id


def reclassify(catalog, dataset_id, **changes):
    """The provider's update as the catalog publishes it: the whole entry, one version newer."""
    current = catalog.get(dataset_id)
    return catalog.add(replace(current, version=current.version + 1, **changes))


def active_grant(service, catalog) -> str:
    request_id = submit(service)
    assert service.decide(request_id).status == RequestStatus.APPROVED
    return service.get_request(request_id).grant_id


# ---------------------------------------------------------------------------------------------- approve


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"classification": Classification.CORE}, "deny-core-data"),
        ({"openness": Openness.NOT_OPEN}, "deny-not-open"),
    ],
)
def test_an_operator_cannot_approve_what_the_policy_denies(service, catalog, publisher, changes, rule):
    request_id = submit(service, "conditional-traffic")
    assert service.decide(request_id).status == RequestStatus.PENDING_REVIEW
    reclassify(catalog, "conditional-traffic", **changes)  # reclassified while it waited for review
    with pytest.raises(Conflict, match=f"policy rule '{rule}' denies it") as refused:
        service.approve(request_id, OPERATOR)
    assert "hard denials stay denials" in refused.value.hint
    assert service.get_request(request_id).status == RequestStatus.PENDING_REVIEW
    assert service.relay.publish_all() == 0 and publisher.of(records.GRANTED) == []


def test_an_operator_cannot_approve_a_request_the_policy_has_not_decided(service, publisher):
    request_id = submit(service, "conditional-traffic")  # still SUBMITTED
    with pytest.raises(IllegalTransition, match="only requests PENDING_REVIEW"):
        service.approve(request_id, OPERATOR)
    assert service.get_request(request_id).status == RequestStatus.SUBMITTED
    assert publisher.of(records.GRANTED) == []


def test_an_operator_approves_a_request_pending_review_the_policy_allows(service):
    request_id = submit(service, "conditional-traffic", fields=("district", "plate_number"))
    service.decide(request_id)
    grant = service.approve(request_id, OPERATOR)
    assert grant.status == GrantStatus.ACTIVE and grant.masking == {
        "plate_number": MaskingRule.KEEP_FIRST_LAST
    }


# ---------------------------------------------------------------------------------------------- reclassification


@pytest.mark.parametrize(
    "changes", [{"classification": Classification.CORE}, {"openness": Openness.NOT_OPEN}]
)
def test_a_reclassified_dataset_suspends_its_live_grants_with_the_reason(
    service, catalog, publisher, changes
):
    grant_id = active_grant(service, catalog)
    changed = reclassify(catalog, "open-traffic", **changes)
    (suspended,) = service.enforce_dataset_terms(changed)
    grant = service.get_grant(grant_id)
    assert (grant.status, grant.suspension_cause, grant.version) == (
        GrantStatus.SUSPENDED,
        SuspensionCause.DATASET_CHANGED,
        2,
    )
    assert "policy rule deny-" in grant.status_reason and "open-traffic is now" in grant.status_reason
    (event,) = publisher.of(records.SUSPENDED)
    assert (event["cause"], event["reason"]) == ("DATASET_CHANGED", grant.status_reason)
    assert service.enforce_dataset_terms(changed) == []  # a redelivered update changes nothing more


def test_a_grant_suspended_by_reclassification_resumes_only_once_the_policy_allows_it(service, catalog):
    grant_id = active_grant(service, catalog)
    service.enforce_dataset_terms(reclassify(catalog, "open-traffic", classification=Classification.CORE))
    with pytest.raises(Conflict, match="cannot be resumed: policy rule 'deny-core-data'"):
        service.resume(grant_id, OPERATOR)
    reclassify(catalog, "open-traffic", classification=Classification.GENERAL)
    assert service.resume(grant_id, OPERATOR, "reclassified back to GENERAL").status == GrantStatus.ACTIVE


def test_the_quota_clock_does_not_resume_a_grant_on_a_reclassified_dataset(service, catalog):
    grant_id = active_grant(service, catalog)
    service.suspend(grant_id, "system:metering", "daily quota reached", SuspensionCause.QUOTA_EXCEEDED)
    reclassify(catalog, "open-traffic", openness=Openness.NOT_OPEN)
    assert service.resume_quota_suspended(START + timedelta(days=2)) == []
    assert service.get_grant(grant_id).status == GrantStatus.SUSPENDED


def test_a_grant_suspended_for_its_quota_is_told_the_dataset_is_now_closed(service, catalog, publisher):
    grant_id = active_grant(service, catalog)
    service.suspend(grant_id, "system:metering", "daily quota reached", SuspensionCause.QUOTA_EXCEEDED)
    closed = reclassify(catalog, "open-traffic", openness=Openness.NOT_OPEN)
    (restated,) = service.enforce_dataset_terms(closed)
    assert (restated.status, restated.suspension_cause, restated.version) == (
        GrantStatus.SUSPENDED,
        SuspensionCause.DATASET_CHANGED,
        3,
    )
    assert "deny-not-open" in restated.status_reason
    assert [event["cause"] for event in publisher.of(records.SUSPENDED)] == [
        "QUOTA_EXCEEDED",
        "DATASET_CHANGED",
    ]
    assert service.enforce_dataset_terms(closed) == []  # said once
    assert service.resume_quota_suspended(START + timedelta(days=2)) == []  # not the quota's to resume


def test_an_old_catalog_event_read_again_acts_on_the_dataset_as_it_is_now(service, catalog, publisher):
    grant_id = active_grant(service, catalog)
    old = reclassify(catalog, "open-traffic", classification=Classification.CORE)
    reclassify(catalog, "open-traffic", classification=Classification.GENERAL)  # undone since
    assert service.enforce_dataset_terms(old) == []
    assert service.get_grant(grant_id).status == GrantStatus.ACTIVE


def test_an_update_the_catalog_rows_do_not_show_yet_is_enforced_from_the_event(service, catalog):
    grant_id = active_grant(service, catalog)
    current = catalog.get("open-traffic")
    from_the_event = replace(current, version=current.version + 1, classification=Classification.CORE)
    service.enforce_dataset_terms(from_the_event)
    assert service.get_grant(grant_id).status == GrantStatus.SUSPENDED


# ---------------------------------------------------------------------------------------------- new sensitive field


def test_a_field_newly_marked_sensitive_is_re_masked_and_sharing_masks_it(service, catalog, publisher):
    grant_id = active_grant(service, catalog)  # district and speed_kmh, both clear
    current = catalog.get("open-traffic")
    marked = (*current.sensitive_fields, SensitiveField("speed_kmh", MaskingRule.REDACT))
    (remasked,) = service.enforce_dataset_terms(reclassify(catalog, "open-traffic", sensitive_fields=marked))
    assert (remasked.status, remasked.version) == (GrantStatus.ACTIVE, 3)
    assert remasked.masking == {"speed_kmh": MaskingRule.REDACT}
    grant = service.get_grant(grant_id)
    assert "speed_kmh (REDACT)" in grant.status_reason
    assert [(item.from_status, item.to_status) for item in grant.history[1:]] == [
        (GrantStatus.ACTIVE, GrantStatus.SUSPENDED),
        (GrantStatus.SUSPENDED, GrantStatus.ACTIVE),
    ]
    (resumed,) = publisher.of(records.RESUMED)
    assert resumed["grant"]["masking"] == {"speed_kmh": "REDACT"}
    book = GrantBook()
    for name, value in publisher.decoded():
        book.apply(name, value)
    scope = book.get(grant_id)
    assert (scope.state, scope.version, scope.masking) == (
        GrantState.ACTIVE,
        3,
        {"speed_kmh": MaskingRule.REDACT},
    )


def test_a_suspended_grant_resumes_with_fields_newly_sensitive_masked(service, catalog):
    grant_id = active_grant(service, catalog)
    service.suspend(grant_id, OPERATOR, "audit")
    current = catalog.get("open-traffic")
    marked = (*current.sensitive_fields, SensitiveField("district", MaskingRule.KEYED_HASH))
    reclassify(catalog, "open-traffic", sensitive_fields=marked)
    resumed = service.resume(grant_id, OPERATOR, "audit done")
    assert resumed.masking == {"district": MaskingRule.KEYED_HASH}


def test_masking_only_tightens_when_the_catalog_unmarks_a_field(service, catalog):
    request_id = submit(service, "conditional-traffic", fields=("district", "plate_number"))
    service.decide(request_id)
    grant = service.approve(request_id, OPERATOR)
    assert (
        service.enforce_dataset_terms(reclassify(catalog, "conditional-traffic", sensitive_fields=())) == []
    )
    assert service.get_grant(grant.grant_id).masking == {"plate_number": MaskingRule.KEEP_FIRST_LAST}


# ---------------------------------------------------------------------------------------------- the tenant sees why


def test_through_the_gateway_the_tenant_sees_why_and_the_operator_is_refused_with_the_rule(
    tmp_path, catalog, publisher
):
    engine, keys = gateway_database(tmp_path)
    service = AuthorizationService(
        engine, publisher, catalog, load_policy(), Settings.from_env(), clock=Clock(START)
    )
    request_id = submit(service)
    grant_id = service.decide(request_id).grant_id
    pending = submit(service, "conditional-traffic")
    service.decide(pending)
    service.enforce_dataset_terms(reclassify(catalog, "open-traffic", classification=Classification.CORE))
    reclassify(catalog, "conditional-traffic", classification=Classification.CORE)
    app = create_app(Settings.from_env(), catalog, service, engine, dead_letters=lambda limit: [])
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        seen = http.get(f"/v1/grants/{grant_id}", headers={"Authorization": f"Bearer {keys['acme']}"})
        listed = http.get("/v1/grants", headers={"Authorization": f"Bearer {keys['acme']}"})
        approval = http.post(
            f"/v1/requests/{pending}/approve", json={}, headers={"Authorization": f"Bearer {keys['alice']}"}
        )
    engine.dispose()
    assert approval.status_code == 409, approval.text
    assert "policy rule 'deny-core-data' denies it" in approval.json()["message"]
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert (body["status"], body["suspension_cause"], body["published"]) == (
        "SUSPENDED",
        "DATASET_CHANGED",
        True,
    )
    assert "Core data never leaves the platform" in body["status_reason"]
    assert body["history"][-1]["reason"] == body["status_reason"]
    assert [item["status_reason"] for item in listed.json()] == [body["status_reason"]]
