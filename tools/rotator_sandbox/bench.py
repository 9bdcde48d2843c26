"""`python -m rotator_sandbox bench`: scheduled runs over N records, with Keeper latency injected.

A first scheduled run binds every record (fills its distinguishedName, as any first rotation does); the measured
runs after it are the steady state. Each measured run is one handler process making two scheduled invocations: the
first pays for creating clients and loading models (a cold Lambda), the second does not (a warm one). Before each
invocation the journal's last rotations move 400 days back (SANDBOX_AGE_ROTATIONS), so every record is due again
and every measured invocation rotates all of them. The hooks time each remote call on its calling thread, which
splits a warm record's CPU into AWS calls, Keeper calls and everything else. With
`--baseline DIR` (another checkout's functions/rotator) the measured runs alternate between that code and this
tree's, in the same sandbox, and the figures are printed side by side.
Reports figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import json
import pstats
import resource
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotator_sandbox.demo import Printer
from rotator_sandbox.paths import FUNCTION_DIR
from rotator_sandbox.stack import DEFAULT_LIMITS, JOURNAL_TABLE, KeeperLimits, Sandbox, load_event

# What a rotated user costs, by call; everything else is paid once per invocation whatever the number of users.
PER_USER_CALLS = (
    "aws iam:GetLoginProfile",
    "aws iam:UpdateLoginProfile",
    f"aws dynamodb:PutItem@{JOURNAL_TABLE}",
    "aws kms:Encrypt",  # the baseline's per-entry encryption
    "keeper update_secret",
    "keeper finalize_secret_update",
)


@dataclass
class Variant:
    label: str
    function_dir: Path
    walls: list[float] = field(default_factory=list)
    cold_cpu_ms: list[float] = field(default_factory=list)  # handler CPU per record, first call in a process
    warm_cpu_ms: list[float] = field(default_factory=list)  # the same, second call (clients and models loaded)
    calls: Counter[str] = field(default_factory=Counter)  # summed over the measured runs
    warm_call_cpu: Counter[str] = field(default_factory=Counter)  # CPU seconds in each remote operation, warm calls
    warm_calls: Counter[str] = field(default_factory=Counter)  # how many calls that CPU paid for
    warm_rotated: int = 0
    rotated: int = 0
    throttled: int = 0  # Keeper's throttled answers during the measured runs
    runs: int = 0
    maxrss_kb: int = 0


def run_bench(
    records: int = 200,
    keeper_latency: float = 0.05,
    plain: bool = False,
    concurrency: int | None = None,
    baseline: Path | None = None,
    rounds: int = 1,
    profile: Path | None = None,
    limits: KeeperLimits = DEFAULT_LIMITS,
    devices: int = 1,
) -> int:
    out = Printer(plain)
    variants = [Variant("baseline", baseline)] if baseline else []
    variants.append(Variant("this tree", FUNCTION_DIR))
    out.line(f"Seeding {records} IAM users + pamUser records (moto server + KSM emulator on 127.0.0.1) ...")
    with (
        Sandbox(users=0, user_prefix="bench-user", limits=limits, devices=devices) as sb,
        tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp,
    ):
        seed_started = time.monotonic()
        for i in range(records):
            sb.add_user(f"bench-user-{i + 1:04d}")
        out.line(f"  seeded in {time.monotonic() - seed_started:.1f}s; Keeper latency {keeper_latency * 1000:.0f} ms")
        out.line(f"  Keeper {limits}; {devices} KSM client device(s)")
        sb.keeper.vault.set_latency(keeper_latency)
        env = {"ROTATION_CONCURRENCY": str(concurrency)} if concurrency is not None else {}
        out.line("Binding run (first rotation of every record) ...")
        if _scheduled_run(sb, variants[-1], env, Path(tmp), measured=False, out=out) != 0:
            return 1
        for round_number in range(rounds):
            for variant in variants:
                out.line(f"Measured run {round_number + 1}/{rounds}: {variant.label} ({variant.function_dir}) ...")
                if _scheduled_run(sb, variant, env, Path(tmp), measured=True, out=out) != 0:
                    return 1
        if profile is not None:
            out.line(f"Profiling one run at ROTATION_CONCURRENCY=1 into {profile} ...")
            profile_env = {**env, "ROTATION_CONCURRENCY": "1", "SANDBOX_PROFILE": str(profile)}
            if _scheduled_run(sb, variants[-1], profile_env, Path(tmp), measured=False, out=out) != 0:
                return 1
    _print_figures(out, variants, records, concurrency)
    if profile is not None:
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)
    return 0


def _scheduled_run(sb: Sandbox, variant: Variant, env: dict[str, str], tmp: Path, measured: bool, out: Printer) -> int:
    stats_file = tmp / "stats.json"
    stats_file.unlink(missing_ok=True)
    before = {u.uid: sb.iam_password(u.name) for u in sb.users}
    sb.keeper.vault.reset_calls()
    started = time.monotonic()
    run_env = {
        "SANDBOX_INVOCATIONS": "2",
        "SANDBOX_AGE_ROTATIONS": "1",  # the warm call must find every record due again, like a later schedule tick
        **env,
        "SANDBOX_STATS_FILE": str(stats_file),
        "SANDBOX_FUNCTION_DIR": str(variant.function_dir),
    }
    event = {**load_event("scheduled.json"), "id": str(uuid.uuid4())}  # a new schedule tick, not a retry of the last
    run = sb.invoke(event, run_env, timeout=3600)
    wall = time.monotonic() - started
    if run.exit_code != 0 or not stats_file.exists():
        out.line(f"the handler exited {run.exit_code}", style="red")
        out.line(run.stderr.strip()[-3000:])
        return 1
    stats = json.loads(stats_file.read_text())
    rotated = Counter(r["status"] for r in run.results).get("rotated", 0)  # by the last of the invocations
    disagree = [u.name for u in sb.users if not sb.agree(u)]
    unchanged = [u.name for u in sb.users if sb.iam_password(u.name) == before[u.uid]]
    if disagree or unchanged or rotated != len(sb.users):
        out.line(f"{len(disagree)} records disagree, {len(unchanged)} passwords unchanged", style="red")
        return 1
    if measured:
        invocations = len(stats["handler_cpu_s"])
        variant.runs += invocations
        variant.rotated += rotated * invocations
        variant.walls.append(wall / invocations)
        variant.cold_cpu_ms.append(stats["handler_cpu_s"][0] * 1000 / rotated)
        variant.warm_cpu_ms.append(stats["handler_cpu_s"][-1] * 1000 / rotated)
        variant.maxrss_kb = max(variant.maxrss_kb, stats["maxrss_kb"])
        variant.throttled += sb.keeper.vault.throttled_total
        variant.calls.update(_calls(stats, sb.keeper.vault.calls))
        for call, (n, seconds) in stats["call_cpu_s"][-1].items():
            variant.warm_calls[call] += n
            variant.warm_call_cpu[call] += seconds
        variant.warm_rotated += rotated
    return 0


def _calls(stats: dict[str, Any], keeper_calls: dict[str, int]) -> Counter[str]:
    """Successful calls by name: "aws <service>:<Operation>" (DynamoDB per table) and "keeper <route>"."""
    calls: Counter[str] = Counter({f"keeper {route}": n for route, n in keeper_calls.items()})
    for name, n in stats["calls"].items():
        if name.startswith("aws:") and "dynamodb:" not in name:
            calls[name.replace("aws:", "aws ", 1)] += n
    for name, n in stats.get("table_calls", {}).items():  # DynamoDB per table: journal vs idempotency
        calls[name.replace("aws:", "aws ", 1)] += n
    return calls


def _print_figures(out: Printer, variants: list[Variant], records: int, concurrency: int | None) -> None:
    headers = ["figure", *(v.label for v in variants)]
    rows = [
        ["ROTATION_CONCURRENCY", *([str(concurrency) if concurrency else "(function default)"] * len(variants))],
        ["measured invocations", *(str(v.runs) for v in variants)],
        [
            "records/s (median, process start to exit)",
            *(f"{records / statistics.median(v.walls):.1f}" for v in variants),
        ],
        ["handler CPU ms / record, cold call", *(f"{statistics.median(v.cold_cpu_ms):.1f}" for v in variants)],
        ["handler CPU ms / record, warm call", *(f"{statistics.median(v.warm_cpu_ms):.1f}" for v in variants)],
        ["peak RSS handler", *(f"{v.maxrss_kb / 1024:.0f} MiB" for v in variants)],
    ]
    for scope in ("aws", "keeper"):
        per_user = [sum(v.calls[c] for c in PER_USER_CALLS if c.startswith(scope)) / v.rotated for v in variants]
        rows.append([f"{scope.upper()} calls per rotated user", *(f"{n:.2f}" for n in per_user)])
    rows.append(["KMS calls per invocation", *(f"{_kms(v) / v.runs:.2f}" for v in variants)])
    rows.append(["Keeper throttled answers", *(str(v.throttled) for v in variants)])
    sandbox_rss = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    rows.append(["peak RSS sandbox (moto + emulator)", sandbox_rss, *[""] * (len(variants) - 1)])
    out.table(f"Scheduled runs over {records} bound records", headers, rows)

    names = sorted(set().union(*(v.calls for v in variants)))
    call_rows = [
        [
            name,
            "user" if name in PER_USER_CALLS else "invocation",
            *(f"{v.calls[name] / v.rotated:.2f} | {v.calls[name] / v.runs:.0f}" for v in variants),
        ]
        for name in names
    ]
    out.table(
        "Calls by operation (per rotated user | per invocation)",
        ["call", "paid per", *(v.label for v in variants)],
        call_rows,
    )
    _print_call_cpu(out, variants)


def _print_call_cpu(out: Printer, variants: list[Variant]) -> None:
    """Where a warm invocation's CPU goes per rotated record: each remote operation (CPU ms per call, the calling
    thread's, botocore / urllib3 / the KSM SDK's crypto included) and everything else."""
    names = sorted(set().union(*(v.warm_calls for v in variants)))
    rows = [
        [
            name.replace(":", " ", 1),
            *(
                f"{v.warm_call_cpu[name] * 1000 / v.warm_calls[name]:.2f} | {v.warm_calls[name] / v.warm_rotated:.2f}"
                if v.warm_calls[name]
                else ""
                for v in variants
            ),
        ]
        for name in names
    ]
    for scope in ("aws", "keeper"):
        rows.append(
            [
                f"all {scope.upper()} calls, CPU ms per record",
                *(f"{_scope_cpu(v, scope) * 1000 / v.warm_rotated:.2f}" for v in variants),
            ]
        )
    rows.append(["outside remote calls, CPU ms per record", *(f"{_outside_calls_ms(v):.2f}" for v in variants)])
    headers = ["operation", *(v.label for v in variants)]
    out.table("Warm calls: CPU ms per call | calls per rotated record", headers, rows)


def _outside_calls_ms(variant: Variant) -> float:
    """The warm handler's CPU per record (mean over the runs: every run rotates the same records) minus its calls'."""
    in_calls = (_scope_cpu(variant, "aws") + _scope_cpu(variant, "keeper")) * 1000 / variant.warm_rotated
    return statistics.mean(variant.warm_cpu_ms) - in_calls


def _scope_cpu(variant: Variant, scope: str) -> float:
    return sum(seconds for name, seconds in variant.warm_call_cpu.items() if name.startswith(f"{scope}:"))


def _kms(variant: Variant) -> int:
    return sum(n for name, n in variant.calls.items() if name.startswith("aws kms:"))
