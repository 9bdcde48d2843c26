"""Lambda-like cold start of built artifacts against the sandbox (`make bench-cold`). Figures, not a test.

The artifacts must match this machine's architecture: `make bench-cold` builds a twin of the arm64 artifact from the
same Makefile and lock with this machine's wheels.

For each artifact (a `sam build` output directory), alternately, in one run:
- cold start: a fresh python3.13 process with the artifact as its working directory and first on sys.path (as
  /var/task is) and PYTHONDONTWRITEBYTECODE=1 (/var/task is read-only), from process start to the first result of a
  one-record rotation against moto server and the KSM emulator;
- bare `import boto3` from the same artifact, process start to exit;
- warm invocation: the same rotation again in that process.
Medians of --runs; the artifact's size, files and zipped size next to them.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rotator_sandbox import Sandbox

# Runs inside the artifact's python3.13: stdlib and the artifact only. Prints one JSON line after the warm call.
RUNNER = """
import json, sys, time, uuid
event = json.loads(sys.stdin.read())

class Context:
    function_name = "keeper-iam-rotator"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:keeper-iam-rotator"
    log_group_name = "/aws/lambda/keeper-iam-rotator"
    log_stream_name = "bench-cold"
    def __init__(self): self.aws_request_id = str(uuid.uuid4())
    def get_remaining_time_in_millis(self): return 300000

from app import lambda_handler
first = lambda_handler(event, Context())
first_at = time.time()
started = time.perf_counter()
warm = lambda_handler(event, Context())
warm_s = time.perf_counter() - started
statuses = [r["status"] for result in (first, warm) for r in result.get("results", [])]
print(json.dumps({"first_at": first_at, "warm_s": warm_s, "statuses": statuses}))
"""


@dataclass
class Figures:
    artifact: Path
    label: str
    cold_ms: list[float] = field(default_factory=list)
    boto3_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)


def cold_start(python: str, artifact: Path, env: dict[str, str], event: dict[str, object]) -> tuple[float, float]:
    """(ms from process start to the first result, ms of the warm invocation)."""
    started = time.time()
    done = subprocess.run(
        [python, "-s", "-c", RUNNER],
        input=json.dumps(event),
        cwd=artifact,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"{artifact}: the handler exited {done.returncode}\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["statuses"] != ["rotated", "rotated"]:
        raise SystemExit(f"{artifact}: expected two rotations, got {figures['statuses']}\n{done.stderr[-3000:]}")
    return (figures["first_at"] - started) * 1000, figures["warm_s"] * 1000


def bare_boto3(python: str, artifact: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-s", "-c", "import boto3"], cwd=artifact, env=env, check=True, timeout=120)
    return (time.perf_counter() - started) * 1000


def size(artifact: Path) -> str:
    files = [f for f in artifact.rglob("*") if f.is_file()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.write(f, f.relative_to(artifact))
    unpacked = sum(f.stat().st_size for f in files)
    return f"{unpacked / 2**20:.1f} MiB, {len(files)} files, {buffer.tell() / 2**20:.1f} MiB zipped"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path, help="the build to measure (e.g. .aws-sam/build/RotatorFunction)")
    parser.add_argument("--baseline", type=Path, help="an older build, measured alternately in the same run")
    parser.add_argument("--python", default="python3.13", help="the runtime's interpreter (default python3.13)")
    parser.add_argument("--runs", type=int, default=5, help="cold starts per artifact (default 5)")
    args = parser.parse_args()
    variants = [Figures(args.baseline.resolve(), "baseline")] if args.baseline else []
    variants.append(Figures(args.artifact.resolve(), "this build"))

    with Sandbox(users=1, user_prefix="cold-user") as sb:
        env = {**sb.handler_env(), "PYTHONPATH": "", "PYTHONDONTWRITEBYTECODE": "1"}
        event = {"records": [sb.users[0].uid]}
        for variant in variants:  # unmeasured: binds the record, warms the page cache
            cold_start(args.python, variant.artifact, env, {**event, "idempotencyKey": str(uuid.uuid4())})
        for run in range(args.runs):
            for variant in variants if run % 2 == 0 else variants[::-1]:
                cold, warm = cold_start(args.python, variant.artifact, env, event)
                variant.cold_ms.append(cold)
                variant.warm_ms.append(warm)
                variant.boto3_ms.append(bare_boto3(args.python, variant.artifact, env))
        agree = all(sb.agree(user) for user in sb.users)

    print(f"Lambda-like cold start, medians of {args.runs} alternating runs (IAM = Keeper after all: {agree})")
    print(f"{'':<12} {'cold→1st result':>16} {'import boto3':>13} {'ratio':>6} {'warm call':>10}  artifact")
    for v in variants:
        cold, boto3, warm = (statistics.median(x) for x in (v.cold_ms, v.boto3_ms, v.warm_ms))
        print(
            f"{v.label:<12} {cold:>13.0f} ms {boto3:>10.0f} ms {cold / boto3:>6.2f} {warm:>7.0f} ms  {size(v.artifact)}"
        )
    if len(variants) == 2:
        old, new = (statistics.median(v.cold_ms) for v in variants)
        print(f"cold start: {new:.0f} ms vs {old:.0f} ms ({(new - old) / old * 100:+.0f}%)")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
