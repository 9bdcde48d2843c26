"""`python -m rotator_sandbox converge`: how long after a crash IAM and Keeper agree again.

A scheduled run's process dies right after IAM took a new password (the worst moment: IAM holds a password only the
journal knows). What follows in a deployment is fixed by the template: the dead run's lease lasts its Lambda's
remaining time plus JOURNAL_LEASE_MARGIN_SECONDS, then the next recovery-schedule tick finishes the rotation. This
measures the part the sandbox can (the recovery run itself, and an idle one) and prints the worst case with the
template's defaults. Figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from rotator_sandbox.demo import Printer
from rotator_sandbox.stack import DEFAULT_LIMITS, KeeperLimits, Sandbox, load_event

LAMBDA_TIMEOUT_S = 900  # template.yaml Globals.Function.Timeout: the longest a dead run's lease can last
LEASE_MARGIN_S = 60  # JOURNAL_LEASE_MARGIN_SECONDS default
RECOVERY_PERIOD_S = 15 * 60  # RecoveryScheduleExpression default: rate(15 minutes)
RECOVER = {"action": "recover"}


def run_converge(records: int = 20, plain: bool = False, limits: KeeperLimits = DEFAULT_LIMITS) -> int:
    out = Printer(plain)
    with Sandbox(users=records, user_prefix="converge-user", limits=limits) as sb, tempfile.TemporaryDirectory() as tmp:
        short_lease = {"SANDBOX_REMAINING_MS": "200", "JOURNAL_LEASE_MARGIN_SECONDS": "0"}
        crash = {**short_lease, "SANDBOX_CRASH_AFTER": f"aws:iam:UpdateLoginProfile#{records // 2}"}
        crashed = sb.invoke(load_event("scheduled.json"), crash)
        split = sum(not sb.agree(user) for user in sb.users)
        out.line(f"scheduled run over {records} records died (exit {crashed.exit_code}); {split} record(s) split")
        time.sleep(0.3)  # the short lease runs out
        started = time.monotonic()
        recovery = sb.invoke(RECOVER, short_lease)
        recovery_s = time.monotonic() - started
        agree = all(sb.agree(user) for user in sb.users)
        stats = Path(tmp) / "idle.json"
        started = time.monotonic()
        idle = sb.invoke(RECOVER, {"SANDBOX_STATS_FILE": str(stats)})
        idle_s = time.monotonic() - started
        idle_calls = json.loads(stats.read_text())["calls"] if stats.exists() else {}
    worst = LAMBDA_TIMEOUT_S + LEASE_MARGIN_S + RECOVERY_PERIOD_S + recovery_s
    rows = [
        ["recovery run (process start to exit)", f"{recovery_s:.2f} s, results {len(recovery.results)}"],
        ["IAM = Keeper for every record after it", "yes" if agree else "NO"],
        ["idle recovery run", f"{idle_s:.2f} s, calls {idle_calls or 'none'}, results {len(idle.results)}"],
        [
            "worst case after a crash (defaults)",
            f"{LAMBDA_TIMEOUT_S} + {LEASE_MARGIN_S} + {RECOVERY_PERIOD_S} + {recovery_s:.0f} s = {worst / 60:.1f} min",
        ],
    ]
    out.table("Time to converge after a crash", ["figure", "value"], rows)
    out.line(
        "worst case = Lambda timeout (the lease of a run that died at its start) + lease margin + one recovery "
        "period + the recovery run"
    )
    return 0 if agree and idle.results == [] and recovery.exit_code == 0 else 1
