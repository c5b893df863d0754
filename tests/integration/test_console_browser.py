"""The console's operator pages in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
an operator pastes a key, approves a request waiting for review (narrowed) and sees the grant appear,
denies another, then revokes the grant, all by clicking in the page; the API confirms each step. Hostile text from the API
(a request's purpose, a dead letter's reason) shows as text. The gateway is real, over the isolated
namespace, registry and database of sharing_support; the policy step is called as the worker would.

Playwright's own browser builds are never used (nor downloaded): only its driver, shipped in the wheel.
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are parameters here)
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from console_support import browser, gateway, publish_dead_letters, register_air_quality  # noqa: F401
from sharing_support import db_url, platform, settings  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

HOSTILE_PURPOSE = 'outreach <img src=x onerror="window.pwned = 1"> & <b>bold</b>'
HOSTILE_REASON = "<script>window.pwned = 2</script> not avro"


def submit_for_review(gateway, platform, dataset_id: str, purpose: str) -> str:
    """A tenant asks for the sensitive field too, so the policy sends the request to an operator."""
    now = datetime.now(UTC)
    body = {
        "dataset_id": dataset_id,
        "purpose": purpose,
        "fields": ["district", "aqi", "station_manager_phone"],
        "valid_from": now.isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
    }
    submitted = gateway.http.post("/v1/requests", json=body, headers=gateway.as_("tenant"))
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["request_id"]
    platform["service"].decide(request_id)
    seen = gateway.http.get(f"/v1/requests/{request_id}", headers=gateway.as_("tenant")).json()
    assert seen["status"] == "PENDING_REVIEW", seen
    return request_id


def test_operator_approves_and_revokes_in_the_console(settings, platform, gateway, browser):
    from playwright.sync_api import expect

    dataset_id = register_air_quality(gateway)
    request_id = submit_for_review(gateway, platform, dataset_id, HOSTILE_PURPOSE)
    other_id = submit_for_review(gateway, platform, dataset_id, "door-to-door marketing")
    publish_dead_letters(settings, [HOSTILE_REASON])
    operator = gateway.as_("operator")

    page = browser.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and script_errors.append(message.text))
    page.goto(f"{gateway.url}/console")

    # A key the gateway does not know is refused in words; the operator's opens the operator's pages.
    page.fill("#key", "pdo_not-a-key")
    page.click("#key-form button")
    expect(page.locator("#sign-in-status")).to_contain_text("HTTP 401")
    expect(page.locator("#panels")).to_be_hidden()
    page.fill("#key", gateway.keys["operator"])
    page.click("#key-form button")
    expect(page.locator("#whoami")).to_contain_text("(operator)")
    page.click('#nav button[data-page="requests"]')

    row = page.locator(f'#requests tr[data-request-id="{request_id}"]')
    expect(row).to_be_visible()
    expect(row.locator("td.kind")).to_have_text("ROWS")
    expect(row.locator("td.text").first).to_have_text(HOSTILE_PURPOSE)
    expect(page.locator("#dead-letters tbody")).to_contain_text(HOSTILE_REASON)
    expect(page.locator("#dead-letters tbody")).to_contain_text("UNDECODABLE")
    expect(page.locator("#usage .status")).to_contain_text("records in the latest minute")

    # A refusal from the API is shown in words, and nothing changes.
    row.locator('input[name="quota"]').fill("1.5")
    row.locator("button.approve").click()
    expect(page.locator("#requests .notice")).to_contain_text("HTTP 422 invalid_input")
    expect(page.locator("#requests .notice")).to_contain_text("daily_quota_records")
    assert (
        gateway.http.get(f"/v1/requests/{request_id}", headers=operator).json()["status"] == "PENDING_REVIEW"
    )

    # Approve, narrowed: without the sensitive field, with a daily quota.
    row.locator('input[name="field:station_manager_phone"]').uncheck()
    row.locator('input[name="quota"]').fill("1000")
    row.locator("button.approve").click()
    expect(page.locator("#requests .notice")).to_contain_text(f"approved request {request_id}")
    expect(row).to_have_count(0)
    grant_id = gateway.http.get(f"/v1/requests/{request_id}", headers=operator).json()["grant_id"]
    assert grant_id
    grant_row = page.locator(f'#grants tr[data-grant-id="{grant_id}"]')
    expect(grant_row.locator(".grant-status")).to_have_text("ACTIVE")
    expect(grant_row.locator("td.kind")).to_have_text("ROWS")  # the kind, from the real grant's JSON
    grant = gateway.http.get(f"/v1/grants/{grant_id}", headers=operator).json()
    assert grant["status"] == "ACTIVE" and grant["fields"] == ["district", "aqi"], grant
    assert grant["daily_quota_records"] == 1000

    # Denying needs a reason, which the tenant then reads.
    other_row = page.locator(f'#requests tr[data-request-id="{other_id}"]')
    other_row.locator("button.deny").click()
    expect(page.locator("#requests .notice")).to_contain_text("say why")
    other_row.locator('input[name="reason"]').fill("marketing is not a permitted purpose")
    other_row.locator("button.deny").click()
    expect(page.locator("#requests .notice")).to_contain_text(f"denied request {other_id}")
    expect(other_row).to_have_count(0)
    denied = gateway.http.get(f"/v1/requests/{other_id}", headers=gateway.as_("tenant")).json()
    assert (denied["status"], denied["decision_reason"]) == ("DENIED", "marketing is not a permitted purpose")

    # The key survives a reload of the tab.
    page.reload()
    page.click('#nav button[data-page="requests"]')
    expect(grant_row.locator(".grant-status")).to_have_text("ACTIVE")

    # Revoking needs a reason; then the grant leaves the live view and shows as REVOKED under "all".
    grant_row.locator("button.revoke").click()
    expect(page.locator("#grants .notice")).to_contain_text("say why")
    assert gateway.http.get(f"/v1/grants/{grant_id}", headers=operator).json()["status"] == "ACTIVE"
    grant_row.locator('input[name="reason"]').fill("purpose ended")
    grant_row.locator("button.revoke").click()
    expect(page.locator("#grants .notice")).to_contain_text(f"grant {grant_id} is REVOKED now")
    expect(grant_row).to_have_count(0)
    page.select_option("#grant-filter", "all")
    expect(grant_row.locator(".grant-status")).to_have_text("REVOKED")
    revoked = gateway.http.get(f"/v1/grants/{grant_id}", headers=operator).json()
    assert (revoked["status"], revoked["status_reason"]) == ("REVOKED", "purpose ended")

    assert page.evaluate("window.pwned") is None
    # Failed fetches (the usage endpoint's 404 before metering runs) are logged by the browser, not bugs.
    assert [e for e in script_errors if "Failed to load resource" not in e] == []
    page.locator("#sign-out").click()
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
