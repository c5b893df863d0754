"""`pdo demo`: the local platform with sample providers, tenants and an operator at work, and a summary."""

from __future__ import annotations

import time

from pdo.cli.up import interrupt_on_sigterm
from pdo.core.config import Settings

SETTLE_S = 5  # after the last batch: time for in-flight records to reach the tenants and the ledger


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole platform on sample data: publish, request, approve, revoke, deliver, meter (Ctrl-C stops)",
    )
    parser.add_argument(
        "--duration", type=float, default=0, help="seconds of publishing; 0 (the default) runs until Ctrl-C"
    )
    parser.add_argument("--rate", type=int, default=5, help="records per second published to each dataset")
    parser.add_argument(
        "--revoke-after",
        type=float,
        default=30,
        help="seconds of publishing before the operator revokes a grant",
    )
    parser.add_argument("--summary-every", type=float, default=10, help="seconds between summaries")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pdo.demo.run import Demo
    from pdo.demo.summary import print_summary
    from pdo.stack.platform import local_platform

    if args.rate < 1 or args.duration < 0:
        raise SystemExit("pdo demo: --rate must be at least 1 and --duration not negative")
    interrupt_on_sigterm()
    settings = Settings.from_env()
    with local_platform(settings) as platform:
        demo = Demo(settings)
        try:
            print("\n== the cast, the datasets and the decisions")
            demo.prepare()
            print(f"\n== publishing {args.rate} records/s to each dataset; Ctrl-C stops")
            _where_to_look(settings, demo.operator_key)
            try:
                _publish(demo, platform, args)
            except KeyboardInterrupt:
                print("\n  interrupted: the final summary follows")
            time.sleep(SETTLE_S)
            demo.refresh_statuses()
            print("\n== summary")
            print_summary(demo, final=True)
        finally:
            demo.close()
    return 0


def _publish(demo, platform, args) -> None:
    from pdo.demo.summary import print_summary

    started = time.monotonic()
    next_summary = started + args.summary_every
    revoked = False
    while args.duration == 0 or time.monotonic() - started < args.duration:
        tick = time.monotonic()
        platform.check()
        demo.publish(args.rate)
        if not revoked and tick - started >= args.revoke_after:
            revoked = demo.revoke() is not None
        if tick >= next_summary:
            print(f"\n-- after {tick - started:.0f} s")
            print_summary(demo)
            next_summary += args.summary_every
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


def _where_to_look(settings: Settings, operator_key: str) -> None:
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    print(f"  operator console {base}/console with the demo operator's key {operator_key}")
    print(f"  HTTP API {base}/docs; metrics: {base}/metrics, {settings.registry_url}/metrics", end="")
    for service in ("catalog", "authorization", "sharing", "metering"):
        port = settings.metrics_port(service)
        if port:
            print(f", http://{settings.metrics_host}:{port}/metrics ({service})", end="")
    print(f"\n  Prometheus: see the command printed above (config in {settings.run_dir / 'prometheus.yml'})")
