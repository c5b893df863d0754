"""The demo's timeline: set the scene, publish every second, revoke once, summarize now and then, and end
with a final summary.

Guarantee: a failed call of the demo's own does not end it (each is a step, see pdo.demo.run); only the end
of `Schedule.duration_s`, Ctrl-C (KeyboardInterrupt, after which the final summary is still shown) or the
platform failing under it (`check_platform` raises, e.g. a service exited) does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pdo.core.config import Settings
from pdo.demo.run import Demo
from pdo.demo.summary import print_summary

SETTLE_S = 5  # after the last batch: time for in-flight records to reach the tenants and the ledger
TICK_S = 1.0  # one batch per dataset per tick


@dataclass(frozen=True)
class Schedule:
    rate: int  # records per second published to each dataset
    duration_s: float  # seconds of publishing; 0 runs until interrupted
    revoke_after_s: float  # seconds of publishing before the operator revokes the marked grant
    summary_every_s: float
    settle_s: float = SETTLE_S


def tell(
    demo: Demo,
    schedule: Schedule,
    check_platform: Callable[[], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """The whole story on a running platform; `clock` and `sleep` are the real ones outside tests."""
    demo.report("\n== the cast, the datasets and the decisions")
    demo.prepare()
    demo.report(f"\n== publishing {schedule.rate} records/s to each dataset; Ctrl-C stops")
    for line in where_to_look(demo.settings, demo.operator_key):
        demo.report(line)
    try:
        publish(demo, schedule, check_platform, clock, sleep)
    except KeyboardInterrupt:
        demo.report("\n  interrupted: the final summary follows")
    sleep(schedule.settle_s)
    demo.refresh_statuses()
    demo.report("\n== summary")
    print_summary(demo, final=True)
    if demo.failures:
        demo.report(f"  {demo.failures} step(s) of the demo failed: see the lines marked !")


def publish(
    demo: Demo,
    schedule: Schedule,
    check_platform: Callable[[], None],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """A batch per dataset every tick; the revocation once, when its time has come; a summary now and then."""
    started = clock()
    next_summary = started + schedule.summary_every_s
    revocation_due = True
    while schedule.duration_s == 0 or clock() - started < schedule.duration_s:
        tick = clock()
        check_platform()
        demo.publish(schedule.rate)
        if revocation_due and tick - started >= schedule.revoke_after_s:
            # Once, whatever the answer: a failure is reported, and the summary shows the grant's status.
            demo.revoke()
            revocation_due = False
        if tick >= next_summary:
            demo.report(f"\n-- after {tick - started:.0f} s")
            print_summary(demo)
            next_summary += schedule.summary_every_s
        sleep(max(0.0, TICK_S - (clock() - tick)))


def where_to_look(settings: Settings, operator_key: str) -> list[str]:
    """Where the console, the API and the metrics of the running platform are."""
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    metrics = [f"{base}/metrics", f"{settings.registry_url}/metrics"]
    for service in ("catalog", "authorization", "sharing", "metering"):
        port = settings.metrics_port(service)
        if port:
            metrics.append(f"http://{settings.metrics_host}:{port}/metrics ({service})")
    return [
        f"  operator console {base}/console with the demo operator's key {operator_key}",
        f"  HTTP API {base}/docs; metrics: {', '.join(metrics)}",
        f"  Prometheus: see the command printed above (config in {settings.run_dir / 'prometheus.yml'})",
    ]
