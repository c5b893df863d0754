"""`pdo acls apply` on the real broker: a check finds a missing service ACL and changes nothing, an apply
creates it; both report in the one shape topics use (pdo.core.apply_report)."""

from __future__ import annotations

import pytest

from pdo.core import access
from pdo.core.config import Settings
from pdo.core.kafka import admin_client
from pdo.stack.declarations import apply_acls

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
