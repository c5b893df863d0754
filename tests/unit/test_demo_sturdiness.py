"""`pdo demo` against a gateway that refuses some of its calls (an HTTP mock in the gateway's place): each
failure is reported in one line naming the step, the call, the status and the platform's message, and the
demo goes on with its next steps; the story ends only when its duration is over."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections import Counter

import httpx
import pytest
from kafka.errors import KafkaError

from pdo.audit.checkpoints import generate_private_key_pem
from pdo.core import db
from pdo.core.config import Settings
from pdo.demo import run, sample
from pdo.demo.run import Demo
from pdo.demo.story import Schedule, tell
from pdo.products.registration import ApplyResult


class FakeGateway:
    """Answers the demo's calls as the gateway would: every request approved by rule, every grant ACTIVE;
    except the calls it was told to refuse (`refuse`) or not to answer at all (`unreachable`)."""

    def __init__(self) -> None:
        self.refusals: dict[tuple[str, str], tuple[int, str, int | None]] = {}
        self.unreachable = False
        self.calls: Counter[tuple[str, str]] = Counter()
        self.numbers = itertools.count(1)
        self.bodies: dict[tuple[str, str], dict] = {}  # the latest body of each call
        self.requests: list[dict] = []  # every request submitted, in order

    def refuse(self, method: str, path: str, status: int, message: str, times: int | None = None) -> None:
        """Answer `status` with the platform's error body to `method path` (the first `times` calls, or all)."""
        self.refusals[(method, path)] = (status, message, times)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        method, path = request.method, request.url.path
        if method == "POST" and path == "/v1/datasets":  # one path for every registration: tell them apart
            path = f"/v1/datasets#{json.loads(request.content)['dataset_id']}"
        self.calls[(method, path)] += 1
        self.bodies[(method, path)] = json.loads(request.content) if request.content else {}
        if (method, path) == ("POST", "/v1/requests"):
            self.requests.append(self.bodies[(method, path)])
        status, message, times = self.refusals.get((method, path), (200, "", None))
        if status != 200 and (times is None or self.calls[(method, path)] <= times):
            return httpx.Response(status, json={"error": "refused", "message": message, "hint": "h"})
        return httpx.Response(200, json=self._answer(method, path))

    def _answer(self, method: str, path: str) -> dict:
        if (method, path) == ("POST", "/v1/requests"):
            return {"request_id": f"r-{next(self.numbers)}"}
        if method == "GET" and path.startswith("/v1/requests/"):
            request_id = path.rsplit("/", 1)[1]
            return {"status": "APPROVED", "grant_id": f"g-{request_id}", "decided_by_rule": "a-rule"}
        if method == "GET" and path.startswith("/v1/grants/"):
            return {"status": "ACTIVE", "published": True}
        if path == "/v1/usage":
            return {"usage": []}
        return {}


class NoTenantStreams:
    """The tenant topics are Kafka's: not read here."""

    codec = None

    def __init__(self, *_args) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture
def settings(sqlite_url, tmp_path) -> Settings:
    db.upgrade(sqlite_url)  # the demo issues its cast's keys straight into the principals' tables
    key = tmp_path / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    return dataclasses.replace(
        Settings.from_env(),
        database_url=sqlite_url,
        run_dir=tmp_path / "run",
        audit_signing_key_file=str(key),
    )


@pytest.fixture
def demo_on(settings, monkeypatch):
    monkeypatch.setattr(run, "TenantStreams", NoTenantStreams)
    # The operator applies the demo's products straight to the catalog (Kafka and the registry): not here.
    monkeypatch.setattr(run, "apply_folder", lambda *_args: ApplyResult(registered=[sample.PRODUCT]))
    made: list[Demo] = []

    def make(gateway: FakeGateway, lines: list[str]) -> Demo:
        demo = Demo(settings, report=lines.append, transport=httpx.MockTransport(gateway.handle))
        made.append(demo)
        return demo

    yield make
    for demo in made:
        demo.close()


class FakeClock:
    """The story's clock: time moves only when the story sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("  ! ")]


def test_a_refused_registration_and_a_refused_request_are_reported_and_the_others_still_happen(demo_on):
    gateway = FakeGateway()
    gateway.refuse("POST", "/v1/datasets#enterprise-registry", 500, "the catalog's database is restarting")
    gateway.refuse("POST", "/v1/requests", 409, "you hold too many requests on this dataset", times=1)
    lines: list[str] = []
    demo = demo_on(gateway, lines)

    demo.prepare()

    assert failures(lines) == [
        "  ! register enterprise-registry failed: POST /v1/datasets answered 500: the catalog's database is "
        "restarting; the demo carries on",
        f"  ! {sample.REQUESTS[0].tenant.name} requests {sample.REQUESTS[0].dataset_id} failed: POST /v1/requests "
        "answered 409: you hold too many requests on this dataset; the demo carries on",
    ]
    registered = {path for (method, path) in gateway.calls if path.startswith("/v1/datasets#")}
    assert registered == {f"/v1/datasets#{dataset.dataset_id}" for dataset in sample.DATASETS}
    assert len(demo.grants) == len(sample.REQUESTS) - 1  # every request after the refused one
    assert demo.failures == 2


def test_the_datasets_are_registered_for_listings_and_one_request_asks_for_aggregates_only(demo_on):
    gateway = FakeGateway()
    demo = demo_on(gateway, [])

    demo.prepare()

    for dataset in sample.DATASETS:
        body = gateway.bodies[("POST", f"/v1/datasets#{dataset.dataset_id}")]
        assert body["asset_registration_number"] and body["terms"], body
    (aggregate,) = [body for body in gateway.requests if body.get("kind") == "AGGREGATE"]
    assert aggregate["aggregate"]["group_by"] == ["district"]
    assert (
        gateway.requests[-1]["dataset_id"] == sample.PRODUCT
    )  # the derived product, requested like a dataset
    aggregate_views = [view for view in demo.grants.values() if view.request.aggregate is not None]
    assert [view.topic(demo.settings).rsplit(".", 1)[1] for view in aggregate_views] == ["aggregates"]


def test_the_story_reports_refused_calls_once_and_publishes_revokes_and_summarizes_to_its_end(
    demo_on, monkeypatch
):
    revoked = next(request for request in sample.REQUESTS if request.revoked_later)
    revoke_index = sample.REQUESTS.index(revoked) + 1  # the fake numbers requests from 1 in submission order
    gateway = FakeGateway()
    gateway.refuse("POST", "/v1/datasets/air-quality/records", 409, "dataset air-quality is retired")
    gateway.refuse("POST", f"/v1/grants/g-r-{revoke_index}/revoke", 409, "grant is already REVOKED")
    gateway.refuse("GET", "/v1/usage", 503, "metering's database did not answer")
    lines: list[str] = []
    demo = demo_on(gateway, lines)

    def kafka_unreachable(*_args):
        raise KafkaError("no broker answered")

    monkeypatch.setattr(run, "reconcile", kafka_unreachable)
    clock = FakeClock()

    tell(
        demo,
        Schedule(rate=2, duration_s=5, revoke_after_s=2, summary_every_s=3),
        lambda: None,
        clock,
        clock.sleep,
    )

    ticks = 5
    assert gateway.calls[("POST", "/v1/datasets/traffic-flow/records")] == ticks
    assert gateway.calls[("POST", "/v1/datasets/air-quality/records")] == ticks  # tried on, every tick
    assert gateway.calls[("POST", f"/v1/grants/g-r-{revoke_index}/revoke")] == 1
    assert demo.published == {"traffic-flow": 2 * ticks, "enterprise-registry": 2 * ticks, "air-quality": 0}
    assert failures(lines) == [
        "  ! publish to air-quality failed: POST /v1/datasets/air-quality/records answered 409: dataset "
        "air-quality is retired; the demo carries on",
        f"  ! revoke the grant of {revoked.tenant.name} on {revoked.dataset_id} failed: POST "
        f"/v1/grants/g-r-{revoke_index}/revoke answered 409: grant is already REVOKED; the demo carries on",
        "  ! read metering's usage failed: GET /v1/usage answered 503: metering's database did not answer; "
        "the demo carries on",
        "  ! reconcile this month failed: KafkaError: no broker answered; the demo carries on",
    ]
    summary = "\n".join(lines).split("== summary", 1)[1]
    assert "charges this month so far" in summary  # the parts that work are still shown
    # The story ends by verifying the audit log (empty here: no audit worker ran).
    assert summary.splitlines()[-2] == "  audit log verified: 0 entries; no checkpoint yet"
    rows = [line for line in summary.splitlines() if re.match(r"^  [\w-]+\s+[\w-]+\s+ACTIVE\s+0\s+\?", line)]
    row_grants = [view for view in demo.grants.values() if view.request.aggregate is None]
    assert len(rows) == len(row_grants) == len(demo.grants) - 1  # metered unknown: `?`
    # The aggregate grant has its own line, nothing received (no tenant topic read here).
    assert re.search(
        r"^  citylab\s+traffic-flow\s+ACTIVE\s+windows delivered 0, groups published 0, groups suppressed 0, "
        r"metered \?$",
        summary,
        re.M,
    ), summary
    assert f"{demo.failures} step(s) of the demo failed" in lines[-1]
    assert demo.failures == ticks + 1 + 2 + 1  # every refused batch, the revocation, usage twice, reconcile


def test_a_step_that_works_again_says_so(demo_on):
    lines: list[str] = []
    demo = demo_on(FakeGateway(), lines)
    outcomes = iter([KafkaError("down"), KafkaError("down"), "fine"])

    def flaky() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    results = [demo.attempt("scan the topics", flaky) for _ in range(3)]

    assert results == [None, None, "fine"]
    assert lines == [
        "  ! scan the topics failed: KafkaError: down; the demo carries on",
        "  scan the topics: works again after 2 failed attempt(s)",
    ]


def test_no_answer_at_all_is_reported_as_such(demo_on):
    gateway = FakeGateway()
    gateway.unreachable = True
    lines: list[str] = []
    demo = demo_on(gateway, lines)
    demo.prepare()  # keys are issued in the database; every call then finds no gateway

    assert failures(lines)[0] == (
        "  ! register traffic-flow failed: POST /v1/datasets got no answer: ConnectError: connection refused; "
        "the demo carries on"
    )
    assert len(failures(lines)) == len(sample.DATASETS) + len(sample.REQUESTS)


def test_a_decision_poll_answered_503_while_a_service_restarts_is_polled_again(demo_on, monkeypatch):
    monkeypatch.setattr(run, "POLL_S", 0)
    gateway = FakeGateway()
    gateway.refuse("GET", "/v1/requests/r-1", 503, "the authorization service is restarting", times=2)
    lines: list[str] = []
    demo = demo_on(gateway, lines)

    demo.prepare()

    assert failures(lines) == []
    assert gateway.calls[("GET", "/v1/requests/r-1")] == 3
    assert len(demo.grants) == len(sample.REQUESTS)
