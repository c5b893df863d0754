"""`pdo acls apply` on the real broker: a check finds a missing service ACL and changes nothing, an apply
creates it; both report in the one shape topics use (pdo.core.apply_report). Audited, an apply is recorded
before it changes anything, and changes nothing when it cannot be recorded."""

from __future__ import annotations

import pytest

from pdo.authorization.testing import RecordingPublisher
from pdo.core import access
from pdo.core.access_log import AccessLog
from pdo.core.config import Settings
from pdo.core.errors import Unavailable
from pdo.core.kafka import admin_client
from pdo.core.names import Event
from pdo.stack.declarations import Audit, apply_acls

pytestmark = pytest.mark.integration


def test_a_check_reports_a_missing_service_acl_and_apply_creates_it(kafka_bootstrap):
    settings = Settings.from_env()
    lines: list[str] = []
    apply_acls(settings, report=lines.append)  # as declared, whatever this broker held before
    removed = sorted(access.desired_service_acls(settings))[0]
    with admin_client(settings) as admin:
        access.revoke(admin, {removed})

    checked = apply_acls(settings, check=True, report=lines.append)
    applied = apply_acls(settings, report=lines.append)
    again = apply_acls(settings, check=True, report=lines.append)

    assert checked.missing == [removed] and checked.created == [] and not checked.clean
    assert f"  missing   {removed.describe()}" in lines
    assert applied.created == [removed] and applied.missing == []
    assert f"  created   {removed.describe()}" in lines
    assert again.missing == [] and removed in again.unchanged


def test_an_apply_that_cannot_be_recorded_changes_nothing_and_a_recorded_one_names_what_it_added(
    kafka_bootstrap,
):
    settings = Settings.from_env()
    apply_acls(settings, report=lambda line: None)
    removed = sorted(access.desired_service_acls(settings))[0]
    with admin_client(settings) as admin:
        access.revoke(admin, {removed})
    events = RecordingPublisher()
    audit = Audit(AccessLog(events), "operator:alice", "pdo acls apply", "restore a removed ACL")

    events.down = True
    with pytest.raises(Unavailable, match="nothing was changed"):
        apply_acls(settings, report=lambda line: None, audit=audit)
    assert apply_acls(settings, check=True, report=lambda line: None).missing == [removed]

    events.down = False
    applied = apply_acls(settings, report=lambda line: None, audit=audit)
    assert applied.created == [removed]
    (recorded,) = events.of(Event.ACLS_APPLIED)
    assert recorded["added"] == [removed.line()] and recorded["removed"] == []
    assert (recorded["actor"], recorded["reason"]) == ("operator:alice", "restore a removed ACL")
    apply_acls(settings, report=lambda line: None, audit=audit)  # nothing to change: nothing recorded
    assert len(events.of(Event.ACLS_APPLIED)) == 1
