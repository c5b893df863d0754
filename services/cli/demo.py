"""`pdo demo`: the local platform with sample providers, tenants and an operator at work, and a summary."""

from __future__ import annotations

from pdo.cli.up import interrupt_on_sigterm
from pdo.core.config import Settings


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
    # The platform's own start (broker, topics, services ready) fails the command; once it runs, a failed
    # step of the demo is reported and the demo goes on (pdo.demo.story).
    with local_platform(settings) as platform:
        demo = Demo(settings)
        try:
            tell(demo, schedule, platform.check)
        finally:
            demo.close()
    return 0
