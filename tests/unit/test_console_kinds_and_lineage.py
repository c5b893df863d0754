"""The console marks derived data products with their lineage and names each grant's and request's kind.

The page is the gateway's own (its files, its Content-Security-Policy) in Debian's headless Chromium driven by
Playwright; the API it reads is answered in the browser with fixed JSON of the shapes the OpenAPI document
declares (checked here too), so no platform runs. Hostile text in that JSON must show as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerThread, _unavailable
from gateway_support import gateway_database

from pdo.core.config import Settings
from pdo.gateway.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000
HOSTILE = '<img src=x onerror="window.pwned = 1">'

SPEED = {
    "window_seconds": 300,
    "group_by": ["district"],
    "numeric_fields": ["speed_kmh"],
    "functions": ["COUNT", "MEAN"],
    "epsilon": 0.5,
}
TERMS = {
    "tenant_id": "tenant:acme",
    "fields": ["district", "speed_kmh"],
    "row_filter": None,
    "valid_from": "2026-03-01T00:00:00Z",
    "valid_until": "2026-04-01T00:00:00Z",
}


def grant(grant_id: str, kind: str, aggregate: dict | None = None) -> dict[str, Any]:
    return {
        **TERMS,
        "grant_id": grant_id,
        "request_id": grant_id.replace("g-", "r-"),
        "dataset_id": "traffic",
        "masking": {},
        "daily_quota_records": None,
        "price_plan": {"kind": "FREE", "unit_price": "0.00", "tiers": [], "currency": "CNY"},
        "status": "ACTIVE",
        "status_reason": None,
        "version": 1,
        "created_at": "2026-03-01T00:00:00Z",
        "updated_at": "2026-03-01T00:00:00Z",
        "kind": kind,
        "aggregate": aggregate,
    }


def request(request_id: str, kind: str, aggregate: dict | None = None) -> dict[str, Any]:
    return {
        **TERMS,
        "request_id": request_id,
        "tenant_kind": "COMPANY",
        "dataset_id": "traffic",
        "purpose": "congestion statistics",
        "expected_daily_records": None,
        "status": "PENDING_REVIEW",
        "created_at": "2026-03-01T00:00:00Z",
        "updated_at": "2026-03-01T00:00:00Z",
        "kind": kind,
        "aggregate": aggregate,
        "grant_id": None,
    }


def dataset(dataset_id: str, *sources: str) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "provider_id": "provider:transport",
        "owner_department": "Transport Bureau",
        "title": dataset_id.title(),
        "domain": "TRANSPORT",
        "classification": "GENERAL",
        "openness": "OPEN",
        "record_schema": json.dumps(
            {"type": "record", "name": "R", "fields": [{"name": "district", "type": "string"}]}
        ),
        "sensitive_fields": [],
        "price_plan": {"kind": "FREE", "unit_price": "0.00", "tiers": [], "currency": "CNY"},
        "retired": False,
        "derived_from": list(sources),
    }


GRANTS = [
    grant("g-rows", "ROWS"),
    grant("g-private", "AGGREGATE", SPEED),
    grant("g-plain", "AGGREGATE", {**SPEED, "window_seconds": 90, "group_by": [], "epsilon": None}),
]
REQUESTS = [request("r-rows", "ROWS"), request("r-agg", "AGGREGATE", {**SPEED, "window_seconds": 3600})]
DATASETS = [
    dataset("air"),
    dataset("traffic"),
    dataset("congestion", "air", "traffic"),
    dataset("odd", HOSTILE),
]


def api_answer(path: str, kind: str) -> Any:
    """What the gateway would answer the console; None for what these tests do not read (a 404)."""
    answers = {
        "/v1/me": {"principal_id": f"{kind}:someone", "kind": kind},
        "/v1/grants": GRANTS,
        "/v1/requests": REQUESTS,
        "/v1/datasets": DATASETS,
    }
    return answers.get(path)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Any]:
    """The gateway over a database with nobody in it: the console's API is answered in the browser."""
    engine, _ = gateway_database(tmp_path_factory.mktemp("console-kinds"), ())
    yield create_app(Settings.from_env(), None, None, engine)
    engine.dispose()


@pytest.fixture(scope="module")
def console_url(app) -> Iterator[str]:
    with ServerThread(app) as server:
        yield f"{server.url}/console"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"Debian's chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect.set_options(timeout=WAIT_MS)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def signed_in(browser, console_url) -> Iterator[Any]:
    """Opens the console as `kind` (operator or tenant) on its page `page_name`; the page, script errors
    checked after the test."""
    pages: list[tuple[Any, list[str]]] = []

    def open_as(kind: str, page_name: str) -> Any:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def answer(route) -> None:
            path = httpx.URL(route.request.url).path
            body = api_answer(path, kind)
            if body is None:
                route.fulfill(
                    status=404, json={"error": "not_found", "message": f"{path} is not in this test"}
                )
            else:
                route.fulfill(status=200, json=body)

        page.route("**/v1/**", answer)
        page.goto(console_url)
        page.fill("#key", "pdo_test-key")
        page.click("#key-form button")
        page.click(f'#nav button[data-page="{page_name}"]')
        pages.append((page, errors))
        return page

    yield open_as
    for page, errors in pages:
        assert page.evaluate("window.pwned") is None, "API text ran as markup"
        assert errors == []
        page.close()


def kind_cell(page: Any, row_selector: str) -> Any:
    from playwright.sync_api import expect

    row = page.locator(row_selector)
    expect(row).to_be_visible()
    return row.locator("td.kind")


def header_and_cells(page: Any, table: str, row_selector: str) -> tuple[int, int]:
    headers = page.locator(f"{table} thead th")
    return headers.count(), page.locator(f"{row_selector} > td").count()


def column_of(page: Any, table: str, name: str) -> int:
    return page.locator(f"{table} thead th").all_inner_texts().index(name)


# -- the data the console reads ------------------------------------------------------------------------


def test_the_api_declares_the_kind_the_aggregate_and_the_lineage_the_console_shows(app) -> None:
    schemas = app.openapi()["components"]["schemas"]
    for name in ("Grant", "DataRequest"):
        assert {"kind", "aggregate"} <= set(schemas[name]["properties"]), name
    assert {"window_seconds", "functions", "group_by", "epsilon"} <= set(
        schemas["AggregateSpec"]["properties"]
    )
    assert "derived_from" in schemas["Dataset"]["properties"]


# -- the pages ---------------------------------------------------------------------------------------


def test_the_catalog_marks_a_product_and_names_what_it_derives_from(signed_in) -> None:
    from playwright.sync_api import expect

    page = signed_in("operator", "catalog")
    product = page.locator('#catalog tr[data-dataset-id="congestion"]')
    expect(product).to_contain_text("PRODUCT")
    expect(product.locator(".lineage")).to_have_text("derived from: air, traffic")
    expect(page.locator('#catalog tr[data-dataset-id="traffic"]')).not_to_contain_text("PRODUCT")
    expect(page.locator('#catalog tr[data-dataset-id="traffic"] .lineage')).to_have_count(0)
    # a hostile source id is text on the page, not an element
    expect(page.locator('#catalog tr[data-dataset-id="odd"] .lineage')).to_have_text(
        f"derived from: {HOSTILE}"
    )
    expect(page.locator("#catalog img")).to_have_count(0)


def test_the_operators_grants_name_their_kind_with_the_aggregates_terms(signed_in) -> None:
    from playwright.sync_api import expect

    page = signed_in("operator", "requests")
    expect(kind_cell(page, '#grants tr[data-grant-id="g-rows"]')).to_have_text("ROWS")
    private = kind_cell(page, '#grants tr[data-grant-id="g-private"]')
    expect(private.locator("div")).to_have_text(
        ["window 5 min", "COUNT, MEAN by district", "ε 0.5 per window"]
    )
    expect(private.locator("span")).to_have_text("AGGREGATE")
    plain = kind_cell(page, '#grants tr[data-grant-id="g-plain"]')
    expect(plain.locator("div")).to_have_text(["window 90 s", "COUNT, MEAN"])  # no epsilon: no DP line
    assert column_of(page, "#grants", "Kind") == 3
    assert header_and_cells(page, "#grants", '#grants tr[data-grant-id="g-rows"]') == (9, 9)


def test_the_operators_pending_requests_name_their_kind(signed_in) -> None:
    from playwright.sync_api import expect

    page = signed_in("operator", "requests")
    expect(kind_cell(page, '#requests tr[data-request-id="r-rows"]')).to_have_text("ROWS")
    hourly = kind_cell(page, '#requests tr[data-request-id="r-agg"]')
    expect(hourly).to_contain_text("AGGREGATE")
    expect(hourly).to_contain_text("window 1 h")
    assert column_of(page, "#requests", "Kind") == 3
    assert header_and_cells(page, "#requests", '#requests tr[data-request-id="r-agg"]') == (9, 9)


def test_a_tenants_grants_name_their_kind(signed_in) -> None:
    from playwright.sync_api import expect

    page = signed_in("tenant", "mine")
    expect(kind_cell(page, '#my-grants tr[data-grant-id="g-rows"]')).to_have_text("ROWS")
    expect(kind_cell(page, '#my-grants tr[data-grant-id="g-private"]')).to_contain_text("ε 0.5 per window")
    assert column_of(page, "#my-grants", "Kind") == 2
    assert header_and_cells(page, "#my-grants", '#my-grants tr[data-grant-id="g-private"]') == (7, 7)
