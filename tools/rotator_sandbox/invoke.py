"""Run the real Lambda handler once, in this process: `python -m rotator_sandbox.invoke < event.json`.

stdout carries exactly one line, the handler's JSON result; everything the function logs (Powertools log lines, EMF
metrics) goes to stderr. Environment:
  SANDBOX_REMAINING_MS     what context.get_remaining_time_in_millis() answers (default 300000)
  SANDBOX_CRASH_AFTER      crash point, see rotator_sandbox.hooks
                           (e.g. "aws:iam:UpdateLoginProfile", "keeper:update_secret#1")
  SANDBOX_AWS_FAULTS       AWS errors to answer instead of moto, see rotator_sandbox.hooks
                           (e.g. "iam:UpdateLoginProfile=PasswordPolicyViolation#2")
  SANDBOX_STATS_FILE       when set, write {"calls": {...}, "attempts": {...}, "maxrss_kb": N, "handler_cpu_s": [S],
                           "call_cpu_s": [{...}]} there at the end (handler_cpu_s: CPU seconds of each handler call,
                           all threads; call_cpu_s: per handler call, operation -> [calls, CPU seconds in them])
  SANDBOX_INVOCATIONS      invoke the handler this many times in this process (a cold call, then warm ones; a
                           scheduled event gets a new id each time); stdout carries the last result (default 1)
  SANDBOX_AGE_ROTATIONS    when set, before each invocation, move every last rotation in the journal 400 days into
                           the past (uncounted calls, outside the measured CPU), so each scheduled invocation finds
                           every record due again, as a bench's repeated runs need
  SANDBOX_PROFILE          when set, cProfile the handler call (its calling thread only: run it with
                           ROTATION_CONCURRENCY=1 to see every record's work) and write the stats there
  SANDBOX_FUNCTION_DIR     the function's code to run (default: this repository's functions/rotator)
  SANDBOX_REQUEST_ID       aws_request_id (default: a new uuid4)
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import sys
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from rotator_sandbox.paths import FUNCTION_DIR


@dataclass
class FakeLambdaContext:
    function_name: str = "keeper-iam-rotator"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:keeper-iam-rotator"
    aws_request_id: str = field(default_factory=lambda: os.environ.get("SANDBOX_REQUEST_ID") or str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/keeper-iam-rotator"
    log_stream_name: str = "sandbox"
    remaining_ms: int = field(default_factory=lambda: int(os.environ.get("SANDBOX_REMAINING_MS", "300000")))

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def main() -> int:
    event = json.loads(sys.stdin.read() or "{}")
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything the function prints lands on stderr; stdout is reserved for the result
    sys.stdout = sys.stderr
    function_dir = os.environ.get("SANDBOX_FUNCTION_DIR") or str(FUNCTION_DIR)
    if function_dir not in sys.path:
        sys.path.insert(0, function_dir)

    age_rotations = _rotation_ager() if os.environ.get("SANDBOX_AGE_ROTATIONS") else None
    from rotator_sandbox import hooks  # noqa: PLC0415 - only the handler process installs them

    hooks.install(os.environ.get("SANDBOX_CRASH_AFTER") or None, os.environ.get("SANDBOX_AWS_FAULTS") or None)
    from app import lambda_handler  # noqa: PLC0415 - imported after the hooks: the handler's clients must see them

    profile_file = os.environ.get("SANDBOX_PROFILE")
    handler_cpu: list[float] = []
    call_cpu: list[dict[str, tuple[int, float]]] = []  # per invocation: operation -> (calls, CPU seconds in them)
    with cProfile.Profile() if profile_file else nullcontext() as profile:
        for i in range(int(os.environ.get("SANDBOX_INVOCATIONS") or 1)):
            if age_rotations:
                age_rotations()
            calls_before, cpu_before = hooks.call_cpu_snapshot(), _cpu_seconds()
            result = lambda_handler(
                {**event, "id": f"{event['id']}-{i}"} if "id" in event else event, FakeLambdaContext()
            )
            handler_cpu.append(_cpu_seconds() - cpu_before)
            call_cpu.append(hooks.call_cpu_since(calls_before))
    if profile is not None:
        profile.dump_stats(profile_file)
    if stats := os.environ.get("SANDBOX_STATS_FILE"):
        Path(stats).write_text(
            json.dumps(
                {
                    "calls": dict(hooks.calls),
                    "table_calls": dict(hooks.table_calls),
                    "attempts": dict(hooks.attempts),
                    "call_cpu_s": call_cpu,
                    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                    "handler_cpu_s": handler_cpu,
                }
            )
        )
    result_out.write(json.dumps(result) + "\n")
    result_out.flush()
    return 0


def _rotation_ager() -> Callable[[], None]:
    """Ages the journal's `rotatedAt` through clients made before the hooks exist: their calls are not counted."""
    import boto3  # noqa: PLC0415 - the handler's imports are measured separately; this is sandbox plumbing

    from rotator_sandbox.aging import age_rotations  # noqa: PLC0415

    session = boto3.session.Session()
    dynamodb, kms = session.client("dynamodb"), session.client("kms")
    table, mac_key = os.environ["JOURNAL_TABLE_NAME"], os.environ["JOURNAL_MAC_KEY_ID"]

    def age() -> None:
        age_rotations(dynamodb, kms, table, mac_key, days=400)

    return age


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the whole process: every thread of the handler
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
