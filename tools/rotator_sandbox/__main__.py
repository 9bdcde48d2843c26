"""`python -m rotator_sandbox {demo,bench}`: the product, locally, against moto server and the KSM emulator."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from rotator_sandbox.bench import run_bench
from rotator_sandbox.demo import run_demo


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the Sandbox context manager: both servers stop


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
    demo.add_argument("--plain", action="store_true", help="plain text tables instead of rich")
    demo.add_argument("--verbose", action="store_true", help="also print the function's log lines")
    bench = commands.add_parser(
        "bench",
        help="time scheduled runs over many records",
        description="Seeds N users/records, sets the emulator's per-request latency, runs the scheduled event "
        "(rotates every pamUser) in a subprocess once to bind the records, then measured runs, and prints "
        "throughput, handler CPU per record, remote calls per user and per invocation by operation, and peak RSS.",
    )
    bench.add_argument("--records", type=int, default=200, help="users/records to seed (default 200)")
    bench.add_argument(
        "--keeper-latency", type=float, default=0.05, help="seconds the emulator waits per KSM request (default 0.05)"
    )
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
    bench.add_argument("--plain", action="store_true", help="plain text tables instead of rich")
    args = parser.parse_args(argv)

    if args.command == "demo" and args.users < 1:
        parser.error("--users must be at least 1")
    if args.command == "bench" and args.records < 1:
        parser.error("--records must be at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "demo":
            return run_demo(users=args.users, plain=args.plain, verbose=args.verbose)
        return run_bench(
            records=args.records,
            keeper_latency=args.keeper_latency,
            plain=args.plain,
            concurrency=args.concurrency,
            baseline=args.baseline,
            rounds=args.rounds,
            profile=args.profile,
        )
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
