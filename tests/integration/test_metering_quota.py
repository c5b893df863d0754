# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Quotas that act, end to end: the real sharing, metering and authorization workers as processes.

A grant with a small daily quota receives records published at a steady rate; metering sees the quota
reached and publishes QuotaExceeded once, the authorization worker suspends the grant, and sharing stops
delivering under it: the tenant got the quota plus a bounded overshoot and nothing published afterwards that
day (a second grant without a quota shows those records were processed). The authorization clock ticked at
the next UTC day resumes the grant and the tenant receives again, with no second QuotaExceeded.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from metering_support import pdo_workers  # noqa: F401
from sharing_support import (  # noqa: F401
    ACME,
    CITYLAB,
    Feed,
    db_url,
    platform,
    read_topic,
    record_ids,
    register_dataset,
    settings,
    wait_for,
)

from pdo.authorization.agents import AuthorizationHandlers
from pdo.authorization.public import RequestSpec
from pdo.authorization.testing import approved_grant
from pdo.core import topics
from pdo.core.events import utc_now
from pdo.core.topics import TopicId, tenant_topic
from pdo.core.vocabulary import GrantStatus

pytestmark = pytest.mark.integration

QUOTA = 30
RATE_PER_S = 20
# Records in flight between the quota being reached and sharing applying the suspension: at RATE_PER_S,
# three seconds of deliveries (metering's batch window, one ledger transaction, the authorization worker's
# suspension and sharing's follower take well under that when the workers are caught up).
OVERSHOOT_BOUND = 3 * RATE_PER_S
FIELDS = ("record_id", "district")


def quota_grant(service, tenant: str, dataset_id: str, quota: int | None) -> str:
    start = utc_now() - timedelta(minutes=1)
    request = service.submit_request(
        tenant,
        RequestSpec(
            dataset_id=dataset_id,
            purpose="quota test",
            fields=FIELDS,
            valid_from=start,
            valid_until=start + timedelta(days=30),
            expected_daily_records=quota,
        ),
        tenant,
    )
    return approved_grant(service, request.request_id)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_quota_suspends_the_grant_for_the_day_and_the_next_day_resumes_it(settings, platform, pdo_workers):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    limited = quota_grant(service, ACME, dataset_id, QUOTA)
    control = quota_grant(service, CITYLAB, dataset_id, None)
    assert service.get_grant(limited).daily_quota_records == QUOTA
    acme_topic, citylab_topic = (
        tenant_topic(ACME, dataset_id, settings),
        tenant_topic(CITYLAB, dataset_id, settings),
    )
    tag = uuid.uuid4().hex[:6]
    processes = [
        pdo_workers("sharing", "worker", "--group", f"sharing-{tag}"),
        pdo_workers("metering", "worker", "--group", f"metering-{tag}", "--batch-within", "0.2"),
        pdo_workers("authorization", "worker", "--group", f"authorization-{tag}"),
    ]
    feed = Feed(settings, codec, dataset_id)
    try:
        # 1. Workers up: a first record reaches both tenants.
        warmup = feed.publish(1, "warmup")
        wait_for(
            "the first delivery",
            lambda: set(warmup) <= set(record_ids(read_topic(settings, codec, citylab_topic))),
            processes,
        )
        wait_for("the first delivery to acme", lambda: read_topic(settings, codec, acme_topic), processes)

        # 2. A steady stream until the grant is suspended.
        published = list(warmup)
        deadline = time.monotonic() + 60
        while service.get_grant(limited).status is GrantStatus.ACTIVE:
            assert time.monotonic() < deadline, "the grant was never suspended"
            published += feed.publish(1, f"s{len(published)}")
            time.sleep(1 / RATE_PER_S)
        suspended = service.get_grant(limited)
        assert (suspended.status, suspended.suspension_cause.value) == (
            GrantStatus.SUSPENDED,
            "QUOTA_EXCEEDED",
        )
        assert f"daily quota of {QUOTA} records reached" in suspended.status_reason
        # Sharing stops at the suspension *event*: the row commits first, the outbox publishes it right after.
        wait_for(
            "the suspension on pdo.authorizations",
            lambda: service.get_grant(limited).published,
            processes,
        )

        # 3. Published after the suspension event: processed (the control grant has them), not delivered to acme.
        after = feed.publish(20, "after")
        wait_for(
            "the control grant to receive the records after the suspension",
            lambda: set(after) <= set(record_ids(read_topic(settings, codec, citylab_topic))),
            processes,
        )
        received = record_ids(read_topic(settings, codec, acme_topic))
        assert set(received) & set(after) == set(), "delivered after the quota suspended the grant"
        assert len(received) == len(set(received)) and set(received) <= set(published)
        overshoot = len(received) - QUOTA
        print(
            f"quota {QUOTA}, delivered {len(received)}: overshoot {overshoot} records at {RATE_PER_S} records/s"
        )
        assert 0 <= overshoot <= OVERSHOOT_BOUND
        events = [v for _, _, v in read_topic(settings, codec, topics.name(TopicId.QUOTA_EXCEEDED, settings))]
        assert [(e["grant_id"], e["quota_records"]) for e in events] == [(limited, QUOTA)]
        assert events[0]["used_records"] >= QUOTA

        # 4. The clock at the next UTC day resumes the grant; acme receives again, with no new QuotaExceeded.
        tomorrow = (utc_now() + timedelta(days=1)).replace(hour=0, minute=0, second=1)
        report = AuthorizationHandlers(service, service.publisher, codec).tick(now=tomorrow)
        assert report.resumed == [limited]
        assert service.get_grant(limited).status is GrantStatus.ACTIVE
        again = feed.publish(10, "again")
        wait_for(
            "deliveries after the resumption",
            lambda: set(again) <= set(record_ids(read_topic(settings, codec, acme_topic))),
            processes,
        )
        time.sleep(2)  # metering has counted them by now: a second QuotaExceeded would be on the topic
        events = [v for _, _, v in read_topic(settings, codec, topics.name(TopicId.QUOTA_EXCEEDED, settings))]
        assert len(events) == 1
        assert service.get_grant(limited).status is GrantStatus.ACTIVE
        assert service.get_grant(control).status is GrantStatus.ACTIVE
    finally:
        feed.close()
