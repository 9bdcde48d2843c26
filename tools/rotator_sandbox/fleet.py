"""`python -m rotator_sandbox fleet`: a fleet end to end on this machine — several AWS accounts (moto backends
reached through each member's target role), one scheduled run that plans and queues, and the rotation queue worked
by warm handler processes (`rotator_sandbox.worker`) the way Lambda's SQS event source works it.

Prints figures only; nothing here asserts on timing. `tests/e2e/test_fleet_queue.py` drives the same pieces with a
missing role and a worker killed mid-batch.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from rotator_sandbox.accounts import TARGET_ROLE, create_target_role, iam_password, member_session, roles_must_exist
from rotator_sandbox.demo import Printer
from rotator_sandbox.queue import LocalQueue
from rotator_sandbox.stack import (
    ACCOUNT,
    DEFAULT_LIMITS,
    REGION,
    SCOPE_TAG,
    KeeperLimits,
    Sandbox,
    add_bound_record,
    initial_password,
    load_event,
)

MEMBER_BASE = 200_000_000_000
HUB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/keeper-iam-rotator-RotatorFunctionRole"


@dataclass
class FleetUser:
    account: str
    name: str
    uid: str
    initial_password: str = field(repr=False)


class Fleet:
    """The hub (the sandbox's account) plus member accounts, each with the target role unless listed as missing."""

    def __init__(self, sb: Sandbox, accounts: int, missing_role: tuple[str, ...] = ()) -> None:
        self.sb = sb
        self.members = [f"{MEMBER_BASE + i:012d}" for i in range(1, accounts)]
        self.missing_role = missing_role
        self.users: list[FleetUser] = []
        self._iam: dict[str, Any] = {ACCOUNT: sb.aws("iam")}
        for account in self.members:
            session = member_session(self._session, account, sb.aws_url)
            self._iam[account] = session.client("iam", endpoint_url=sb.aws_url)
            if account not in missing_role:
                create_target_role(self._iam[account], HUB_ROLE)
            self._iam[account].update_account_password_policy(MinimumPasswordLength=14)

    @staticmethod
    def _session(**credentials: str) -> Any:
        testing = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_session_token": "testing"}
        return boto3.session.Session(region_name=REGION, **(testing | credentials))

    @property
    def accounts(self) -> list[str]:
        return [ACCOUNT, *self.members]

    def seed(self, records: int) -> None:
        """`records` IAM users with console passwords, round-robin over the accounts, and their bound records."""
        for i in range(records):
            account = self.accounts[i % len(self.accounts)]
            name, password = f"fleet-user-{i + 1:05d}", initial_password()
            arn = self._iam[account].create_user(UserName=name, Tags=[SCOPE_TAG])["User"]["Arn"]
            self._iam[account].create_login_profile(UserName=name, Password=password, PasswordResetRequired=False)
            uid = add_bound_record(self.sb.keeper.vault, name, password, arn)
            self.users.append(FleetUser(account, name, uid, password))

    def env(self, queue: LocalQueue, inline_limit: int) -> dict[str, str]:
        return {
            "TARGET_ACCOUNT_IDS": ",".join(self.members),
            "TARGET_ROLE_NAME": TARGET_ROLE,
            "ROTATION_QUEUE_URL": queue.url,
            "INLINE_ROTATION_LIMIT": str(inline_limit),
        }

    def agrees(self, user: FleetUser, journaled: set[str]) -> bool:
        """IAM holds Keeper's committed password, or one the journal keeps (an unfinished rotation)."""
        current = iam_password(user.account, user.name)
        return current is not None and (current == self.sb.keeper_password(user.uid) or current in journaled)


class WarmWorker:
    """One warm handler process; `call(event)` returns its result, or None when the process died."""

    def __init__(self, sb: Sandbox, env: dict[str, str]) -> None:
        self.sb, self.env = sb, env
        self.stats: list[dict[str, Any]] = []
        self.deaths = 0
        self._process: subprocess.Popen[str] | None = None

    def call(self, event: dict[str, Any]) -> dict[str, Any] | None:
        if self._process is None:
            self._process = self.sb._spawn(self.env, "rotator_sandbox.worker", stderr=subprocess.DEVNULL)
        assert self._process.stdin is not None and self._process.stdout is not None  # noqa: S101 - pipes asked
        try:
            self._process.stdin.write(json.dumps(event) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:  # the process died mid-batch (like a Lambda container killed by a timeout or OOM)
            self._process.wait()
            self._process = None
            self.deaths += 1
            self.env = {k: v for k, v in self.env.items() if k != "SANDBOX_CRASH_AFTER"}  # a new container
            return None
        return dict(json.loads(line))

    def close(self) -> None:
        if self._process is None:
            return
        stdout, _ = self._process.communicate(timeout=60)
        for line in stdout.splitlines():
            if line.startswith('{"stats"'):
                self.stats.append(json.loads(line)["stats"])
        self._process = None


def drain(queue: LocalQueue, workers: list[WarmWorker], idle_seconds: float = 1.0) -> int:
    """Lambda's event source mapping, locally: each worker takes batches until the queue stays empty. Returns the
    number of batches handed out."""
    batches = Counter[str]()
    lock = threading.Lock()

    def work(worker: WarmWorker) -> None:
        idle_since: float | None = None
        while True:
            event = queue.receive_event()
            if event is None:
                idle_since = idle_since or time.monotonic()
                if queue.depth() == 0 and time.monotonic() - idle_since >= idle_seconds:
                    return
                time.sleep(0.2)
                continue
            idle_since = None
            queue.settle(event, worker.call(event))
            with lock:
                batches["n"] += 1

    threads = [threading.Thread(target=work, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker in workers:
        worker.close()
    return batches["n"]


def scheduled_event() -> dict[str, Any]:
    return load_event("scheduled.json") | {"id": str(uuid.uuid4())}


def run_fleet(
    records: int = 1000,
    accounts: int = 10,
    workers: int = 4,
    keeper_latency: float = 0.01,
    inline_limit: int = 50,
    plain: bool = False,
    limits: KeeperLimits = DEFAULT_LIMITS,
) -> int:
    out = Printer(plain)
    out.line(f"Seeding {records} IAM users over {accounts} accounts + their pamUser records; Keeper {limits} ...")
    with (
        roles_must_exist(),
        Sandbox(users=0, limits=limits) as sb,
        tempfile.TemporaryDirectory(prefix="sandbox-fleet-") as tmp,
    ):
        fleet = Fleet(sb, accounts)
        seed_started = time.monotonic()
        fleet.seed(records)
        out.line(f"  seeded in {time.monotonic() - seed_started:.1f}s")
        queue = LocalQueue(sb.aws("sqs"), visibility_timeout=600).create()
        env = fleet.env(queue, inline_limit)
        sb.keeper.vault.set_latency(keeper_latency)
        sb.keeper.vault.reset_calls()
        started = time.monotonic()
        stats_file = Path(tmp) / "planner.json"
        plan = sb.invoke(scheduled_event(), env | {"SANDBOX_STATS_FILE": str(stats_file)}, timeout=7200)
        planned = time.monotonic() - started
        if plan.exit_code != 0 or plan.result is None:
            out.line(f"the planning run exited {plan.exit_code}", style="red")
            out.line(plan.stderr.strip()[-3000:])
            return 1
        pool = [WarmWorker(sb, env) for _ in range(workers)]
        batches = drain(queue, pool)
        wall = time.monotonic() - started
        journaled = set(sb.journal_passwords())
        rotated = sum(1 for u in fleet.users if iam_password(u.account, u.name) != u.initial_password)
        split = [u.name for u in fleet.users if not fleet.agrees(u, journaled)]
        planner, worker_stats = json.loads(stats_file.read_text()), [s for worker in pool for s in worker.stats]
        every = [planner, *worker_stats]
        inline_calls, queue_calls = _aws_calls([planner]), _aws_calls(worker_stats)
        aws_calls = inline_calls + queue_calls
        keeper_calls = sum(sb.keeper.vault.calls.values())
        per = max(rotated, 1)
        inline = int(plan.result.get("summary", {}).get("rotated", 0))
        per_inline, per_queued = max(inline, 1), max(rotated - inline, 1)
        rows = [
            ["records / accounts / workers", f"{records} / {accounts} / {workers}"],
            ["planning run", f"{planned:.1f} s; summary {json.dumps(plan.result.get('summary'))}"],
            ["queue batches", str(batches)],
            ["wall time (plan + queue)", f"{wall:.1f} s"],
            ["records/s", f"{rotated / wall:.1f}" if wall else "-"],
            ["rotated (IAM changed)", str(rotated)],
            ["IAM = Keeper (or journaled)", "all" if not split else f"NO for {len(split)}"],
            ["Keeper calls per user", f"{keeper_calls / per:.2f}"],
            ["Keeper throttled answers", str(sb.keeper.vault.throttled_total)],
            ["AWS calls per user (planner + workers)", f"{sum(aws_calls.values()) / per:.2f}"],
            [
                "  planning run (per user it rotated) | queue",
                f"{sum(inline_calls.values()) / per_inline:.2f} | {sum(queue_calls.values()) / per_queued:.2f}",
            ],
            ["peak RSS (planner or a worker)", f"{max(s['maxrss_kb'] for s in every) / 1024:.0f} MiB"],
            ["AWS calls per user by operation", "all  (planning run | queue)"],
        ]
        for name, n in sorted(aws_calls.items()):
            split = f"{inline_calls[name] / per_inline:.2f} | {queue_calls[name] / per_queued:.2f}"
            rows.append([f"  {name}", f"{n / per:.2f}  ({split})"])
        out.table(f"Fleet run over {records} records in {accounts} accounts", ["figure", "value"], rows)
        return 1 if split or rotated < records else 0


def _aws_calls(stats: list[dict[str, Any]]) -> Counter[str]:
    """AWS calls by operation over these processes' stats."""
    calls = Counter[str]()
    for one in stats:
        calls.update({call: n for call, n in one["calls"].items() if call.startswith("aws:")})
    return calls
