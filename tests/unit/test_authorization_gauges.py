"""The authorization gauges count what SQL holds: requests waiting for review and grants by status."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import REGISTRY
from test_authorization_projection import walk_every_path
from test_authorization_service import START

from pdo.authorization import gauges, outbox
from pdo.authorization.public import RequestStatus
from pdo.authorization.testing import sqlite_harness
from pdo.core.vocabulary import GrantStatus


def exported_grants() -> dict[str, float]:
    return {
        status.value: REGISTRY.get_sample_value("pdo_authorization_grants", {"status": status.value})
        for status in GrantStatus
    }


@pytest.fixture
def h(tmp_path):
    with sqlite_harness(tmp_path, START) as harness:
        yield harness


def test_the_gauges_match_the_requests_and_grants_the_service_lists(h):
    walk_every_path(h)
    pending = h.service.list_requests(status=RequestStatus.PENDING_REVIEW.value)
    by_status = Counter(grant.status for grant in h.service.list_grants())

    gauges.refresh(h.engine)

    assert REGISTRY.get_sample_value("pdo_authorization_pending_requests") == len(pending) == 2
    assert exported_grants() == {status.value: by_status[status.value] for status in GrantStatus}
    assert set(by_status) == {status.value for status in GrantStatus}  # the walk reaches every status


def test_an_empty_database_exports_zero_for_every_status(h):
    gauges.refresh(h.engine)

    assert REGISTRY.get_sample_value("pdo_authorization_pending_requests") == 0
    assert exported_grants() == dict.fromkeys((status.value for status in GrantStatus), 0.0)


def test_events_the_broker_has_not_taken_are_counted_until_the_relay_publishes_them(h):
    h.publisher.down = True
    walk_every_path(h)
    gauges.refresh(h.engine)
    waiting = REGISTRY.get_sample_value("pdo_authorization_outbox_pending")
    assert waiting == outbox.pending_count(h.engine) > 0 and h.publisher.events == []
    h.publisher.down = False
    h.service.relay.publish_all()
    gauges.refresh(h.engine)
    assert REGISTRY.get_sample_value("pdo_authorization_outbox_pending") == 0
