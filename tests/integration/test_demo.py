"""`pdo demo` in a topic namespace of its own, stopped with Ctrl-C (SIGINT to its process group, as a
terminal sends it) some seconds after the operator revoked a grant: it stops cleanly and its final summary must
show: every approved grant ACTIVE and receiving, the denied request without a grant, masked values and no
clear plate, the revoked grant receiving nothing published after its revocation was acknowledged, metering
counting exactly what each tenant received, and charges priced by the plans (free for government).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest
from conftest import free_port
from process_support import default_sigint

from pdo.authorization.testing import isolated_home
from pdo.core.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

ROW = re.compile(
    r"^  (?P<tenant>[\w-]+)\s+(?P<dataset>[\w-]+)\s+(?P<status>[A-Z]+)\s+(?P<received>\d+)\s+(?P<metered>\S+)\s+(?P<rest>.*)$"
)


def _wait_for_text(log, text: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert process.poll() is None, f"the demo exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s:\n{log.read_text()}"
        time.sleep(0.5)


def test_a_demo_stopped_with_ctrl_c_tells_the_whole_story_and_its_summary_is_right(kafka_bootstrap, tmp_path):
    registry_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "PDO_HOME": str(isolated_home(tmp_path, f"t-{uuid.uuid4().hex[:10]}")),
        "PDO_RUN_DIR": str(tmp_path / "run"),
        # The suite's broker: the demo uses it as a broker it did not start, and leaves it running.
        "PDO_KAFKA_PORT": kafka_bootstrap.split(",")[0].rpartition(":")[2],
        "PDO_REGISTRY_PORT": str(registry_port),
        "PDO_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
        "PDO_GATEWAY_PORT": str(gateway_port),
        "PDO_DATABASE_URL": f"sqlite:///{tmp_path / 'pdo.db'}",
        "PDO_REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
    }
    log = tmp_path / "demo.log"
    with log.open("w") as output_file:
        # Its own session, like a terminal's foreground job: Ctrl-C goes to the whole process group.
        demo = subprocess.Popen(
            [sys.executable, "-m", "pdo.cli.main", "demo", "--rate", "4", "--revoke-after", "8"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=output_file,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
        try:
            _wait_for_text(log, "operator revoked", demo)
            time.sleep(8)  # records keep flowing after the revocation
            os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            returncode = demo.wait(timeout=180)
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
    output = log.read_text()
    assert returncode == 0, output
    assert "interrupted: the final summary follows" in output
    assert "stopped registry" in output  # every service stopped by the demo, the registry last
    assert "already answers" in output  # it did not start a broker of its own
    summary = output.split("== summary", 1)[1]
    rows = {(m["tenant"], m["dataset"]): m for m in map(ROW.match, summary.splitlines()) if m}

    assert rows[("acme-logistics", "enterprise-registry")]["status"] == "DENIED"
    for key in [
        ("acme-logistics", "traffic-flow"),
        ("citylab", "air-quality"),
        ("credit-bureau", "enterprise-registry"),
        ("urban-planning", "air-quality"),
    ]:
        assert rows[key]["status"] == "ACTIVE", summary
        assert int(rows[key]["received"]) > 0, summary
    published = dict(re.findall(r"([\w-]+) (\d+)", summary.split("published:", 1)[1].splitlines()[0]))
    # Every record of a grant without a row filter arrived (counted once each); one district of six for
    # the government department's filtered grant.
    assert int(rows[("acme-logistics", "traffic-flow")]["received"]) == int(published["traffic-flow"])
    assert int(rows[("citylab", "air-quality")]["received"]) == int(published["air-quality"])
    assert int(rows[("urban-planning", "air-quality")]["received"]) < int(published["air-quality"])

    masked = rows[("acme-logistics", "traffic-flow")]["rest"]
    assert re.search(r"plate_number \(KEEP_FIRST_LAST\): 浙\*{5}\w", masked), masked
    assert re.search(
        r"contact_phone \(MASK_MIDDLE_DIGITS\): 1\d\d\*{4}\d{4}",
        rows[("credit-bureau", "enterprise-registry")]["rest"],
    )
    assert not re.search(r"浙[A-K][A-Z0-9]{5}", summary)  # no clear plate anywhere

    # Metering counted exactly what each tenant received, no more, no less.
    for key, row in rows.items():
        if row["status"] != "DENIED":
            assert row["metered"] == row["received"], (key, summary)
    # This month's charges as statements would price them: the tiered plan's first tier (2.00 per 1,000
    # records) for Acme's traffic records; nothing for the government department.
    acme_traffic = re.search(
        r"traffic-flow\s+(\d+) records\s+\d+ bytes\s+([\d.]+)", summary.split("tenant:acme-logistics", 1)[1]
    )
    assert acme_traffic, summary
    records, amount = int(acme_traffic[1]), Decimal(acme_traffic[2])
    assert records == int(rows[("acme-logistics", "traffic-flow")]["received"])
    assert amount == (Decimal(records) * Decimal("2.00") / 1000).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert re.search(r"tenant:urban-planning\s+0\.00 CNY", summary), summary

    # Reconciliation of the month: every record on the tenant topics is in the ledger and vice versa.
    assert re.search(
        r"period \d{4}-\d{2} \(open, nothing billed yet\): 7 grant\(s\); drift topic_vs_ledger 0 record",
        summary,
    ), summary

    # The aggregate grant (10-second windows of traffic per district; k lowered to 5 for the demo): windows
    # closed while records flowed, each metered as its aggregates published, and no row was received under it.
    aggregate = re.search(
        r"^  citylab\s+traffic-flow\s+ACTIVE\s+windows delivered (\d+), groups published (\d+), "
        r"groups suppressed (\d+), metered (\d+)$",
        summary,
        re.M,
    )
    assert aggregate, summary
    windows, groups, _suppressed, metered = map(int, aggregate.groups())
    assert windows >= 1 and groups >= windows, summary
    assert metered == groups, summary

    # The derived data product (speeds per district per 10 s window of traffic-flow, declared in the demo's
    # products folder): registered by the operator, granted to Acme like a dataset, its windows' groups
    # received and metered one for one (the loop above), and none of them a source row.
    assert "operator:demo-operator registered product-speeds (a derived data product)" in output
    product = rows[("acme-logistics", "product-speeds")]
    assert product["status"] == "ACTIVE" and int(product["received"]) > 0, summary
    assert re.match(r"derived product: \w+ \d+ vehicles, mean [\d.]+ km/h", product["rest"]), summary

    revoked = rows[("citylab", "traffic-flow")]
    assert revoked["status"] == "REVOKED"
    times = re.search(r"revoked ([\d:.]+), newest record received published ([\d:.]+)", revoked["rest"])
    assert times, revoked["rest"]
    revoked_at, last_published = (datetime.strptime(t, "%H:%M:%S.%f") for t in times.groups())
    assert last_published < revoked_at
    assert int(revoked["received"]) < int(published["traffic-flow"])

    # The story ends by verifying the audit log the audit worker kept while it ran: the registrations,
    # requests and decisions are in it, and its checkpoints are signed.
    verified = re.search(r"audit log verified: (\d+) entries; latest checkpoint: size (\d+)", summary)
    assert verified, summary
    assert int(verified.group(1)) >= len(rows) + 3 and int(verified.group(2)) > 0
