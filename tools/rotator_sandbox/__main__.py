"""`python -m rotator_sandbox {demo,bench,converge,serve,fleet}`: the product, locally, on moto and the KSM emulator."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from ksm_emulator.options import add_limit_options
from rotator_sandbox.bench import run_bench
from rotator_sandbox.converge import run_converge
from rotator_sandbox.demo import run_demo
from rotator_sandbox.fleet import run_fleet
from rotator_sandbox.serve import run_serve
from rotator_sandbox.stack import DEFAULT_THROTTLE, KeeperLimits


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the Sandbox context manager: both servers stop


def _seeding(command: argparse.ArgumentParser, records: int, keeper_latency: float | None = None) -> None:
    """The options of the commands that seed a sandbox of their own."""
    command.add_argument("--records", type=int, default=records, help=f"users/records to seed (default {records})")
    if keeper_latency is not None:
        command.add_argument(
            "--keeper-latency",
            type=float,
            default=keeper_latency,
            help=f"seconds the emulator waits per KSM request (default {keeper_latency})",
        )


def _keeper_limits(command: argparse.ArgumentParser) -> None:
    """How the sandbox's KSM emulator throttles: the emulator's own options, plus a way out of the default."""
    exclusive = add_limit_options(command, throttle_default=DEFAULT_THROTTLE)
    exclusive.add_argument(
        "--no-throttle", action="store_true", help="no Keeper throttling at all (neither --throttle nor --rate-limit)"
    )


def _limits(args: argparse.Namespace, parser: argparse.ArgumentParser) -> KeeperLimits:
    if args.no_throttle:
        if args.rate_limit is not None:
            parser.error("--no-throttle and --rate-limit contradict each other")
        return KeeperLimits(throttle=None, rate_limit=None)
    return KeeperLimits(throttle=args.throttle, rate_limit=args.rate_limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rotator_sandbox",
        description="Run keeper-iam-rotator's real Lambda handler (in a subprocess) against moto server and the "
        "KSM emulator, both on 127.0.0.1. Nothing leaves this machine.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="rotate with the shipped events (direct, API, schedule, dry run) and check IAM agrees with Keeper",
        description="Seeds N IAM users + pamUser records, runs events/direct-invoke.json, api-post-rotations.json, "
        "scheduled.json and dry-run.json through the handler, and prints per step each record's status and "
        "password fingerprint (first 8 hex of SHA-256) before -> after. Exits 1 if IAM's password differs from "
        "Keeper's committed password for any record, or a step did not do what it should.",
    )
    demo.add_argument("--users", type=int, default=3, help="IAM users / pamUser records to seed (default 3)")
    demo.add_argument("--verbose", action="store_true", help="also print the function's log lines")
    bench = commands.add_parser(
        "bench",
        help="time scheduled runs over many records",
        description="Seeds N users/records, sets the emulator's per-request latency, runs the scheduled event "
        "(rotates every pamUser) in a subprocess once to bind the records, then measured runs, and prints "
        "throughput, handler CPU per record, remote calls per user and per invocation by operation, and peak RSS.",
    )
    _seeding(bench, records=200, keeper_latency=0.05)
    bench.add_argument(
        "--concurrency", type=int, default=None, help="ROTATION_CONCURRENCY for the handler (default: the function's)"
    )
    bench.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout's functions/rotator: measured runs alternate between it and this tree",
    )
    bench.add_argument("--rounds", type=int, default=1, help="measured runs per variant (default 1)")
    bench.add_argument(
        "--profile", type=Path, default=None, help="also cProfile one run at concurrency 1 into this file"
    )
    converge = commands.add_parser(
        "converge",
        help="measure how long after a crash IAM and Keeper agree again",
        description="Kills a scheduled run right after an UpdateLoginProfile, runs the recovery schedule's event, "
        "and prints the recovery run's time, an idle recovery run's calls, and the worst case with the template's "
        "defaults. Exits 1 if any record is left split.",
    )
    _seeding(converge, records=20)
    fleet = commands.add_parser(
        "fleet",
        help="rotate a fleet: several accounts, the scheduled run's plan, the rotation queue worked by warm handlers",
        description="Seeds N IAM users over M accounts (the hub plus members reached through the target role), runs "
        "the scheduled event (it rotates InlineRotationLimit records and queues the rest on moto SQS), then works "
        "the queue with W warm handler processes as Lambda's SQS event source would; while a scheduled run defers due "
        "records (the Keeper budget), runs the scheduled event again and works the queue again. Prints wall time, "
        "records/s, deferred per scheduled run, Keeper throttled answers and requests per rotation, rotations per "
        "device-hour against the throttling model's ceiling, AWS calls per user and peak RSS. Exits 1 if any IAM "
        "password differs from Keeper's, a record was not rotated, or the dead-letter queue is not empty.",
    )
    _seeding(fleet, records=1000, keeper_latency=0.01)
    fleet.add_argument("--accounts", type=int, default=10, help="accounts, the hub included (default 10)")
    fleet.add_argument("--workers", type=int, default=4, help="concurrent queue workers (default 4)")
    fleet.add_argument("--inline", type=int, default=50, help="InlineRotationLimit (default 50)")
    serve = commands.add_parser(
        "serve",
        help="run a seeded sandbox stack until Ctrl-C and print the exports that point the CLI at it",
        description="Starts moto server and the KSM emulator, creates the function's resources and a CloudFormation "
        "stack 'keeper-iam-rotator' with the template's outputs, seeds IAM users alice and bob (console passwords) "
        "and svc (none) with their pamUser records, and answers Lambda Invoke and POST /Prod/rotations with the "
        "real handler. Prints `export` lines for another shell (source them, then run keeper-iam-rotator ...). "
        "Everything listens on 127.0.0.1 and stops on Ctrl-C.",
    )
    serve.add_argument("--env-file", type=Path, metavar="PATH", help="also write the export lines to this file")
    serve.add_argument(
        "--event-records",
        action="store_true",
        help="also seed carol, whose record uid the shipped events/ name (for sam local invoke -e events/...)",
    )
    for command in (demo, bench, converge, fleet):
        command.add_argument("--plain", action="store_true", help="plain text tables instead of rich")
    fleet.add_argument(
        "--schedule",
        metavar="EXPR",
        help="the handler's SCHEDULE_EXPRESSION, e.g. 'rate(5 minutes)': the Keeper budget of one scheduled run is "
        "what the devices serve in that period (default: the function's, daily)",
    )
    fleet.add_argument(
        "--max-runs", type=int, default=100, help="scheduled runs at most while runs defer records (default 100)"
    )
    for command in (demo, bench, converge, fleet, serve):
        _keeper_limits(command)
    for command in (demo, bench, fleet, serve):
        command.add_argument(
            "--devices",
            type=int,
            default=1,
            help="KSM client devices (one config secret each: keeper-iam-rotator/ksm-config, ...-2, ...), all of one "
            "application; KSM_CONFIG_SECRET_ID lists them (default 1)",
        )
    args = parser.parse_args(argv)
    limits = _limits(args, parser)

    if args.command == "demo" and args.users < 1:
        parser.error("--users must be at least 1")
    if args.command == "converge" and args.records < 2:
        parser.error("--records must be at least 2")
    if args.command == "bench" and args.records < 1:
        parser.error("--records must be at least 1")
    if getattr(args, "devices", 1) < 1:
        parser.error("--devices must be at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "demo":
            return run_demo(
                users=args.users, plain=args.plain, verbose=args.verbose, limits=limits, devices=args.devices
            )
        if args.command == "converge":
            return run_converge(records=args.records, plain=args.plain, limits=limits)
        if args.command == "fleet":
            return run_fleet(
                records=args.records,
                accounts=args.accounts,
                workers=args.workers,
                keeper_latency=args.keeper_latency,
                inline_limit=args.inline,
                plain=args.plain,
                limits=limits,
                devices=args.devices,
                max_runs=args.max_runs,
                schedule=args.schedule,
            )
        if args.command == "serve":
            return run_serve(
                env_file=args.env_file, limits=limits, event_records=args.event_records, devices=args.devices
            )
        return run_bench(
            records=args.records,
            keeper_latency=args.keeper_latency,
            plain=args.plain,
            concurrency=args.concurrency,
            baseline=args.baseline,
            rounds=args.rounds,
            profile=args.profile,
            limits=limits,
            devices=args.devices,
        )
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
