"""`pdo demo`: the local platform with sample providers, tenants and an operator at work, and a summary."""

from __future__ import annotations

import dataclasses
import os

from pdo.cli.up import interrupt_on_sigterm
from pdo.core.config import Settings

# The demo's story lasts minutes, not hours: its audit worker signs a checkpoint every few seconds (unless
# PDO_AUDIT_CHECKPOINT_INTERVAL_S says otherwise), so the verification that ends it covers a recent one.
DEMO_CHECKPOINT_INTERVAL_S = 5
# Its aggregate grant's windows are short (pdo.demo.sample.AGGREGATE_WINDOW_S) so that several close while it
# runs: a window closes once records this far past its end arrive (the platform's default waits a minute).
DEMO_AGGREGATION_LATENESS_S = 2
# The demo publishes a few records per second over six districts: some 7 per district in a window at 4 records
# per second, fewer than the operator's floor of 10, so with it every group would be suppressed. A lower floor
# for the demo only lets most groups through and still shows small ones suppressed.
DEMO_MIN_GROUP_SIZE = 5


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
    from pdo.demo.story import Schedule, tell
    from pdo.stack.platform import local_platform

    if args.rate < 1 or args.duration < 0:
        raise SystemExit("pdo demo: --rate must be at least 1 and --duration not negative")
    schedule = Schedule(args.rate, args.duration, args.revoke_after, args.summary_every)
    interrupt_on_sigterm()
    settings = Settings.from_env()
    if "PDO_AUDIT_CHECKPOINT_INTERVAL_S" not in os.environ:
        settings = dataclasses.replace(settings, audit_checkpoint_interval_s=DEMO_CHECKPOINT_INTERVAL_S)
    if "PDO_AGGREGATION_ALLOWED_LATENESS_S" not in os.environ:
        settings = dataclasses.replace(settings, aggregation_allowed_lateness_s=DEMO_AGGREGATION_LATENESS_S)
    if "PDO_AGGREGATION_MIN_GROUP_SIZE" not in os.environ:
        settings = dataclasses.replace(settings, aggregation_min_group_size=DEMO_MIN_GROUP_SIZE)
    # The platform's own start (broker, topics, services ready) fails the command; once it runs, a failed
    # step of the demo is reported and the demo goes on (pdo.demo.story).
    with local_platform(settings) as platform:
        # The demo checks the audit log with the key the platform's audit worker signs with.
        signing_key = platform.service_environment.get(
            "PDO_AUDIT_SIGNING_KEY_FILE", settings.audit_signing_key_file
        )
        demo = Demo(dataclasses.replace(settings, audit_signing_key_file=signing_key))
        try:
            tell(demo, schedule, platform.check)
        finally:
            demo.close()
    return 0
