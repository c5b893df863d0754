"""Every page of the console with each role, in a real headless Chromium over a running platform: real
`pdo sharing worker`, `pdo metering worker` and `pdo audit-worker` processes on an isolated namespace, a real
gateway, records published over HTTP.

- tenant: asks for data with the form and reads the policy's answer in words; sees its grant, its usage
  chart with points once records flowed, and its Kafka credentials (issued, then revoked);
- operator: the charts have points after records flowed; the tenant's request waiting for review appears in
  the operator's list; the operator revokes the tenant's grant, and the tenant's page shows it REVOKED with
  the reason; the catalog names who holds grants;
- auditor: entries about the tenant, the latest checkpoint, and a proof checked in the browser.

Screenshots of each page are saved to run/screenshots/ in the worktree (SCREENSHOTS), the test's artifacts;
the README shows them from docs/console/.
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are parameters here)
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from audit_support import Worker, signing_key
from conftest import free_port
from console_support import browser, gateway, publish_dead_letters, register_air_quality  # noqa: F401
from sharing_support import PdoProcesses, db_url, platform, settings  # noqa: F401

from pdo.core.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

SCREENSHOTS = PROJECT_ROOT / "run" / "screenshots"
WAIT_S = 180
CHART_WAIT_MS = 60_000
RECORDS = PROJECT_ROOT / "deploy" / "examples" / "air-quality.records.jsonl"


@pytest.fixture(autouse=True)
def worker_metrics_ports(monkeypatch) -> None:
    """The sharing and metering workers serve metrics on free ports, where the gateway reads their lag
    (before the settings fixture reads the environment: autouse fixtures come first)."""
    for service in ("SHARING", "METERING"):
        monkeypatch.setenv(f"PDO_{service}_METRICS_PORT", str(free_port()))


@pytest.fixture
def running(settings, tmp_path) -> Iterator[Callable[..., object]]:
    """The sharing, metering and audit workers on this test's namespace; stopped (logs shown) after."""
    processes = PdoProcesses(settings, tmp_path)
    processes.start("sharing", "worker", "--group", f"sharing-{uuid.uuid4().hex[:8]}")
    processes.start("metering", "worker", "--group", f"metering-{uuid.uuid4().hex[:8]}")
    audited = dataclasses.replace(
        settings, audit_signing_key_file=str(signing_key(tmp_path)), audit_checkpoint_interval_s=1
    )
    audit = Worker(audited, tmp_path)
    audit.start(f"audit-{uuid.uuid4().hex[:8]}")
    alive = [process for process, _ in processes.started] + [audit.process]

    def check() -> None:
        for process in alive:
            assert process.poll() is None, f"a worker exited with {process.returncode}: {process.args}"

    yield check
    audit.stop()
    for log in audit.logs:
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
    processes.stop()


def signed_in(browser, gateway, role: str, errors: list[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("pageerror", lambda error: errors.append(f"{role}: {error}"))
    page.on("console", lambda m: m.type == "error" and errors.append(f"{role}: {m.text}"))
    page.goto(f"{gateway.url}/console")
    page.fill("#key", gateway.keys[role])
    page.click("#key-form button")
    from playwright.sync_api import expect

    expect(page.locator("#whoami")).to_contain_text(f"({role})")
    return page


def wait_until(what: str, check: Callable[[], object], alive: Callable[[], None]) -> object:
    """Poll `check` until it gives something, while the workers live; fails after WAIT_S saying what."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        alive()
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


def chart_points(page, chart_id: str) -> None:
    """Wait until the chart `chart_id` has drawn at least one point above zero."""
    page.wait_for_function(
        "id => Number((document.getElementById(id) || {dataset: {}}).dataset.points || 0) > 0",
        arg=chart_id,
        timeout=CHART_WAIT_MS,
    )


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def ask_in_form(page, dataset_id: str, purpose: str, extra_fields: tuple[str, ...] = ()) -> None:
    page.select_option('#request-form select[name="dataset_id"]', dataset_id)
    for field in extra_fields:
        page.check(f'#request-form input[name="field"][value="{field}"]')
    page.fill('#request-form input[name="purpose"]', purpose)
    page.click('#request-form button[type="submit"]')


def request_with_purpose(gateway, purpose: str) -> dict | None:
    mine = gateway.http.get("/v1/requests", headers=gateway.as_("tenant")).json()
    return next((r for r in mine if r["purpose"] == purpose), None)


def publish_records(gateway, dataset_id: str, round_: int) -> None:
    records = [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]
    for record in records:
        record["record_id"] = f"{record['record_id']}-{round_}"
    sent = gateway.http.post(
        f"/v1/datasets/{dataset_id}/records", json={"records": records}, headers=gateway.as_("provider")
    )
    assert sent.status_code == 200 and sent.json()["accepted"] == len(records), sent.text


def test_each_role_drives_its_pages(settings, platform, gateway, browser, running):
    from playwright.sync_api import expect

    errors: list[str] = []
    decide = platform["service"].decide  # the policy step, as the authorization worker would run it
    dataset_id = register_air_quality(gateway)
    publish_dead_letters(settings, ["not avro"])

    # ---- tenant: the form, and the policy's answer in words
    tenant = signed_in(browser, gateway, "tenant", errors)
    ask_in_form(tenant, dataset_id, "air quality research")
    answer = tenant.locator("#policy-answer")
    expect(answer).to_contain_text("the policy has not answered yet")
    open_request = wait_until(
        "the first request", lambda: request_with_purpose(gateway, "air quality research"), running
    )
    decide(open_request["request_id"])
    expect(answer).to_contain_text(
        "Approved automatically by the policy (rule auto-approve-open-non-sensitive)"
    )
    grant_id = gateway.http.get(
        f"/v1/requests/{open_request['request_id']}", headers=gateway.as_("tenant")
    ).json()["grant_id"]
    assert grant_id
    ask_in_form(tenant, dataset_id, "station outreach", extra_fields=("station_manager_phone",))
    expect(answer).to_contain_text("the policy has not answered yet")
    review = wait_until(
        "the second request", lambda: request_with_purpose(gateway, "station outreach"), running
    )
    decide(review["request_id"])
    expect(answer).to_contain_text(
        "The policy sent it to an operator for review (rule review-everything-else)"
    )

    # A refusal from the API is shown in words (and counted: the operator's refusals chart shows it).
    tenant.fill('#request-form input[name="row_filter"]', "no_such_field = 1")
    ask_in_form(tenant, dataset_id, "a filter on a field that does not exist")
    expect(answer).to_contain_text("HTTP 422")
    tenant.fill('#request-form input[name="row_filter"]', "")

    # ---- records flow: the sharing worker delivers them, metering counts them into its minute windows
    publish_records(gateway, dataset_id, 1)
    operator_headers = gateway.as_("operator")
    wait_until(
        "metered deliveries",
        lambda: any(
            v > 0
            for line in gateway.http.get("/v1/series/deliveries", headers=operator_headers).json()["series"]
            for v in line["values"]
        ),
        running,
    )

    expect(tenant.locator(f'#my-grants tr[data-grant-id="{grant_id}"] .grant-status')).to_have_text("ACTIVE")
    chart_points(tenant, "chart-my-deliveries")
    expect(tenant.locator("#chart-my-deliveries .u-legend")).to_contain_text(f"tenant:acme · {dataset_id}")
    tenant.click("#kafka-issue")
    expect(tenant.locator("#kafka-credentials")).to_contain_text("username")
    expect(tenant.locator("#my-kafka .notice")).to_contain_text("issued: user")
    tenant.click("#kafka-revoke")
    expect(tenant.locator("#my-kafka .notice")).to_contain_text("revoked")
    expect(tenant.locator("#kafka-credentials")).to_be_hidden()
    assert tenant.locator("#kafka-credentials").inner_text() == ""  # the password has left the page

    # ---- operator: charts with points, the tenant's request in the list, revoke the tenant's grant
    operator = signed_in(browser, gateway, "operator", errors)
    chart_points(operator, "chart-deliveries")
    chart_points(operator, "chart-dead-letters")
    chart_points(operator, "chart-decisions")
    chart_points(operator, "chart-refusals")
    expect(operator.locator("#chart-lag .u-legend")).to_contain_text("metering")
    expect(operator.locator("#chart-lag .u-legend")).to_contain_text("sharing")
    expect(operator.locator("#chart-deliveries .u-legend")).to_contain_text(f"tenant:acme · {dataset_id}")
    expect(operator.locator("#revenue .headline")).to_contain_text("CNY")
    shoot(operator, "operator-overview")

    operator.click('#nav button[data-page="catalog"]')
    catalog_row = operator.locator(f'#catalog tr[data-dataset-id="{dataset_id}"]')
    expect(catalog_row).to_contain_text("station_manager_phone (MASK_MIDDLE_DIGITS)")
    expect(catalog_row).to_contain_text("1.50 CNY per thousand records")
    expect(catalog_row.locator(".holders")).to_have_text("tenant:acme (ACTIVE)")
    shoot(operator, "catalog")

    operator.click('#nav button[data-page="requests"]')
    waiting = operator.locator(f'#requests tr[data-request-id="{review["request_id"]}"]')
    expect(waiting).to_be_visible()
    expect(waiting.locator("td.text").first).to_have_text("station outreach")
    grant_row = operator.locator(f'#grants tr[data-grant-id="{grant_id}"]')
    grant_row.locator('input[name="reason"]').fill("research ended")
    shoot(operator, "operator-requests")
    grant_row.locator("button.revoke").click()
    expect(operator.locator("#grants .notice")).to_contain_text(f"grant {grant_id} is REVOKED now")
    operator.click('#nav button[data-page="catalog"]')
    expect(catalog_row.locator(".holders")).to_have_text("none")  # its only grant is revoked now

    # ---- the tenant sees the revocation and its reason
    revoked = tenant.locator(f'#my-grants tr[data-grant-id="{grant_id}"]')
    expect(revoked.locator(".grant-status")).to_have_text("REVOKED")
    expect(revoked).to_contain_text("research ended")
    shoot(tenant, "tenant")

    # ---- auditor: entries about the tenant, the latest checkpoint, a proof checked in the browser
    wait_until(
        "a checkpoint covering the revocation",
        lambda: (
            any(
                e["action"] == "grant.revoked"
                for e in gateway.http.get(
                    "/v1/audit/entries",
                    params={"subject": f"grant:{grant_id}"},
                    headers=gateway.as_("auditor"),
                ).json()["entries"]
            )
            and gateway.http.get("/v1/audit/checkpoints/latest", headers=gateway.as_("auditor")).status_code
            == 200
        ),
        running,
    )
    auditor = signed_in(browser, gateway, "auditor", errors)
    expect(auditor.locator("#nav button")).to_have_count(1)
    expect(auditor.locator("#checkpoint dl")).to_contain_text("entries signed")
    auditor.fill('#audit-form input[name="subject"]', f"grant:{grant_id}")
    auditor.click('#audit-form button[type="submit"]')
    rows = auditor.locator("#audit tbody tr[data-seq]")
    expect(rows.first).to_be_visible()
    expect(auditor.locator("#audit tbody")).to_contain_text("research ended")
    wait_until(
        "a checkpoint covering every entry shown",
        lambda: (
            gateway.http.get("/v1/audit/checkpoints/latest", headers=gateway.as_("auditor")).json()["size"]
            > max(int(seq) for seq in rows.evaluate_all("rows => rows.map(r => r.dataset.seq)"))
        ),
        running,
    )
    verdict = auditor.locator("#proof .verdict")
    rows.first.locator("button.prove").click()  # the oldest entry: the longest audit path
    expect(verdict).to_contain_text(f"verified in this browser: entry {rows.first.get_attribute('data-seq')}")
    rows.last.locator("button.prove").click()
    expect(verdict).to_contain_text(f"verified in this browser: entry {rows.last.get_attribute('data-seq')}")
    shoot(auditor, "auditor")

    # A proof whose entry was altered on the way does not verify, and the page says so.
    def altered(route) -> None:
        proof = route.fetch().json()
        proof["entry"]["body"] = proof["entry"]["body"].replace("research ended", "research goes on")
        route.fulfill(json=proof)

    auditor.route("**/v1/audit/proof?*", altered)
    rows.last.locator("button.prove").click()
    expect(verdict).to_contain_text("does NOT lead to the signed root")

    assert [e for e in errors if "Failed to load resource" not in e] == []
