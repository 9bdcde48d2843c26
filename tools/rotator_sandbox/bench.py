"""`python -m rotator_sandbox bench`: one scheduled run over N records, with Keeper latency injected.

Reports figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from rotator_sandbox.demo import Printer
from rotator_sandbox.stack import Sandbox, load_event


def run_bench(
    records: int = 200, keeper_latency: float = 0.05, plain: bool = False, concurrency: int | None = None
) -> int:
    out = Printer(plain)
    out.line(f"Seeding {records} IAM users + pamUser records (moto server + KSM emulator on 127.0.0.1) ...")
    with Sandbox(users=0, user_prefix="bench-user") as sb, tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        seed_started = time.monotonic()
        for i in range(records):
            sb.add_user(f"bench-user-{i + 1:04d}")
        seed_seconds = time.monotonic() - seed_started
        before = {u.uid: sb.iam_password(u.name) for u in sb.users}
        sb.keeper.vault.set_latency(keeper_latency)
        sb.keeper.vault.reset_calls()
        stats_file = Path(tmp) / "stats.json"
        out.line(f"  seeded in {seed_seconds:.1f}s; Keeper latency {keeper_latency * 1000:.0f} ms per request")
        out.line("Running events/scheduled.json through the handler (subprocess) ...")
        started = time.monotonic()
        env = {"SANDBOX_STATS_FILE": str(stats_file)}
        if concurrency is not None:
            env["ROTATION_CONCURRENCY"] = str(concurrency)
        run = sb.invoke(load_event("scheduled.json"), env, timeout=3600)
        wall = time.monotonic() - started
        keeper_calls = sb.keeper.vault.calls
        if run.exit_code != 0 or not stats_file.exists():
            out.line(f"the handler exited {run.exit_code}", style="red")
            out.line(run.stderr.strip()[-3000:])
            return 1
        stats = json.loads(stats_file.read_text())
        statuses = Counter(r["status"] for r in run.results)
        rotated = statuses.get("rotated", 0)
        disagree = [u.name for u in sb.users if not sb.agree(u)]
        unchanged = [u.name for u in sb.users if sb.iam_password(u.name) == before[u.uid]]
        per = max(rotated, 1)
        rows = [["ROTATION_CONCURRENCY", str(concurrency) if concurrency is not None else "(function default)"]]
        rows += [["records/s", f"{rotated / wall:.1f}" if wall else "-"], ["wall time", f"{wall:.2f} s"]]
        rows.append(["results", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))])
        rows.append(["IAM = Keeper", "all" if not disagree else f"NO for {len(disagree)}"])
        rows.append(["peak RSS handler", f"{stats['maxrss_kb'] / 1024:.0f} MiB"])
        rows.append(
            [
                "peak RSS sandbox",
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (moto + emulator)",
            ]
        )
        out.table(f"Scheduled run over {records} records", ["figure", "value"], rows)
        calls = [[f"keeper {path}", str(n), f"{n / per:.2f}"] for path, n in sorted(keeper_calls.items())]
        aws_calls = {k: v for k, v in stats["calls"].items() if k.startswith("aws:") and "dynamodb:" not in k}
        aws_calls |= stats.get("table_calls", {})  # DynamoDB per table: journal vs idempotency
        calls += [[name.replace("aws:", "aws "), str(n), f"{n / per:.2f}"] for name, n in sorted(aws_calls.items())]
        failed = {
            k: v - stats["calls"].get(k, 0) for k, v in stats["attempts"].items() if v != stats["calls"].get(k, 0)
        }
        out.table(f"Remote calls (per rotated user: / {rotated})", ["call", "total", "per user"], calls)
        if failed:
            out.line(f"failed calls: {failed}", style="yellow")
        if disagree or unchanged:
            out.line(f"{len(disagree)} records disagree, {len(unchanged)} passwords unchanged", style="red")
            return 1
    return 0
