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
from rotator_sandbox.keeper_model import (
    KEEPER_RATE,
    PACING_VARIABLES,
    model_ceiling,
    pacing_ceiling,
    time_compression,
)
from rotator_sandbox.queue import LocalQueue
from rotator_sandbox.stack import (
    ACCOUNT,
    DEFAULT_LIMITS,
    PACING_TABLE,
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


@dataclass
class Pass:
    """One scheduled run (EventBridge's) and the queue work it left."""

    summary: dict[str, Any]
    planning_seconds: float
    batches: int

    @property
    def deferred(self) -> int:
        return int(self.summary.get("deferred") or 0)

    @property
    def progressed(self) -> bool:
        return bool(self.summary.get("rotated") or self.summary.get("queued"))


@dataclass
class FleetRun:
    """What a fleet run did: its scheduled runs, the stats of every handler process, and the wall time."""

    passes: list[Pass] = field(default_factory=list)
    planner_stats: list[dict[str, Any]] = field(default_factory=list)  # the scheduled runs'
    worker_stats: list[dict[str, Any]] = field(default_factory=list)  # the queue workers'
    wall: float = 0.0
    error: str = ""

    @property
    def stats(self) -> list[dict[str, Any]]:
        return [*self.planner_stats, *self.worker_stats]

    @property
    def rotated_inline(self) -> int:
        """Records the scheduled runs rotated themselves (the rest went through the queue)."""
        return sum(int(p.summary.get("rotated") or 0) for p in self.passes)


def drive(
    sb: Sandbox, queue: LocalQueue, env: dict[str, str], pool: list[WarmWorker], tmp: Path, max_runs: int
) -> FleetRun:
    """Scheduled runs as EventBridge would send them, each followed by the queue work it left, for as long as a run
    says it deferred due records for a later one (the Keeper budget). A run that defers but plans nothing waits for
    the budget (STALL_WAIT) before the next, at most STALLS times in a row."""
    run, stalls, started = FleetRun(), 0, time.monotonic()
    while len(run.passes) < max_runs:
        stats_file = tmp / f"planner-{len(run.passes) + 1}.json"
        planning_started = time.monotonic()
        plan = sb.invoke(scheduled_event(), env | {"SANDBOX_STATS_FILE": str(stats_file)}, timeout=7200)
        planned = time.monotonic() - planning_started
        if plan.exit_code != 0 or plan.result is None:
            run.error = f"scheduled run {len(run.passes) + 1} exited {plan.exit_code}\n{plan.stderr.strip()[-3000:]}"
            break
        run.planner_stats.append(json.loads(stats_file.read_text()))
        done = Pass(dict(plan.result.get("summary") or {}), planned, drain(queue, pool))
        run.passes.append(done)
        if done.deferred == 0:
            break
        stalls = 0 if done.progressed else stalls + 1
        if stalls > STALLS:
            run.error = f"{stalls} scheduled runs in a row deferred {done.deferred} records and planned none"
            break
        if stalls:
            time.sleep(STALL_WAIT)
    run.wall = time.monotonic() - started
    run.worker_stats = [s for worker in pool for s in worker.stats]
    return run


STALLS, STALL_WAIT = 5, 15.0


def run_fleet(
    records: int = 1000,
    accounts: int = 10,
    workers: int = 4,
    keeper_latency: float = 0.01,
    inline_limit: int = 50,
    plain: bool = False,
    limits: KeeperLimits = DEFAULT_LIMITS,
    devices: int = 1,
    max_runs: int = 100,
    schedule: str | None = None,
) -> int:
    out = Printer(plain)
    out.line(f"Seeding {records} IAM users over {accounts} accounts + their pamUser records; Keeper {limits} ...")
    with (
        roles_must_exist(),
        Sandbox(users=0, limits=limits, devices=devices) as sb,
        tempfile.TemporaryDirectory(prefix="sandbox-fleet-") as tmp,
    ):
        fleet = Fleet(sb, accounts)
        seed_started = time.monotonic()
        fleet.seed(records)
        out.line(f"  seeded in {time.monotonic() - seed_started:.1f}s; {devices} KSM client device(s)")
        for line in pacing_lines(sb):
            out.line(f"  {line}")
        if schedule:
            out.line(f"  SCHEDULE_EXPRESSION={schedule}: one scheduled run's Keeper budget is that period's")
        queue = LocalQueue(sb.aws("sqs"), visibility_timeout=600).create()
        env = fleet.env(queue, inline_limit) | ({"SCHEDULE_EXPRESSION": schedule} if schedule else {})
        sb.keeper.vault.set_latency(keeper_latency)
        sb.keeper.vault.reset_calls()
        run = drive(sb, queue, env, [WarmWorker(sb, env) for _ in range(workers)], Path(tmp), max_runs)
        if run.error:
            out.line(run.error, style="red")
            return 1
        report = FleetReport(sb, fleet, queue, run, workers)
        out.table(f"Fleet run over {records} records in {accounts} accounts", ["figure", "value"], report.rows())
        return 0 if report.passed() else 1


def pacing_lines(sb: Sandbox) -> list[str]:
    """What the handler is told about Keeper's limits, and why."""
    env = sb.handler_env()
    pacing = " ".join(f"{name}={env[name]}" for name in PACING_VARIABLES if name in env) or "the function's defaults"
    lines = [f"handler pacing: {pacing}"]
    if (rate := sb.limits.rate_limit) is not None:
        compression = time_compression(rate)
        lines.append(
            f"time compressed: the emulator's {rate} per device is Keeper's documented {KEEPER_RATE} "
            f"{compression:g} times faster; figures per hour below are sandbox hours (divide by {compression:g} for "
            "Keeper's)"
        )
    return lines


class FleetReport:
    """The figures of a finished fleet run, read from the end state (moto, the emulator, the queues) and the
    handler processes' stats."""

    def __init__(self, sb: Sandbox, fleet: Fleet, queue: LocalQueue, run: FleetRun, workers: int) -> None:
        self.sb, self.fleet, self.run, self.workers = sb, fleet, run, workers
        journaled = set(sb.journal_passwords())
        self.records = len(fleet.users)
        self.rotated = sum(1 for u in fleet.users if iam_password(u.account, u.name) != u.initial_password)
        self.split = [u.name for u in fleet.users if not fleet.agrees(u, journaled)]
        self.unequal = [u.name for u in fleet.users if iam_password(u.account, u.name) != sb.keeper_password(u.uid)]
        self.dlq = queue.depth(queue.dlq_url)
        self.left = queue.depth()
        self.keeper = sb.keeper.vault.throttle_state()
        self.calls = sb.keeper.vault.calls

    def passed(self) -> bool:
        """fleet's checks: every record rotated, none split; and now every IAM password = Keeper's, DLQ empty."""
        return not self.split and not self.unequal and self.rotated >= self.records and self.dlq == 0

    def rows(self) -> list[list[str]]:
        return [*self._run_rows(), *self._keeper_rows(), *self._capacity_rows(), *self._aws_rows()]

    def _run_rows(self) -> list[list[str]]:
        run, wall = self.run, self.run.wall
        deferred = ", ".join(str(p.deferred) for p in run.passes)
        return [
            [
                "records / accounts / workers / devices",
                f"{self.records} / {len(self.fleet.accounts)} / {self.workers} / {self.sb.devices}",
            ],
            ["scheduled runs", f"{len(run.passes)}; planning {sum(p.planning_seconds for p in run.passes):.1f} s"],
            ["first run's summary", json.dumps(run.passes[0].summary)],
            ["deferred per scheduled run", deferred],
            ["queue batches", str(sum(p.batches for p in run.passes))],
            ["wall time (plans + queue)", f"{wall:.1f} s"],
            ["records/s", f"{self.rotated / wall:.1f}" if wall else "-"],
            ["rotated (IAM changed)", str(self.rotated)],
            ["IAM = Keeper (or journaled)", "all" if not self.split else f"NO for {len(self.split)}"],
            ["every IAM password = its Keeper record", "yes" if not self.unequal else f"NO for {len(self.unequal)}"],
            ["DLQ empty", "yes" if self.dlq == 0 else f"NO: {self.dlq} messages"],
            ["queue left", str(self.left)],
        ]

    def _keeper_rows(self) -> list[list[str]]:
        per = max(self.rotated, 1)
        throttled = Counter[str]()
        for routes in self.keeper["throttled"].values():
            throttled.update(routes)
        by_route = ", ".join(f"{route} {n}" for route, n in sorted(throttled.items()))
        by_route += "".join(f"; {n} by the {model} model" for model, n in self.keeper.get("throttled_by", {}).items())
        devices = [sum(routes.values()) for routes in self.keeper["requests"].values()]
        rows = [
            ["Keeper throttled answers", f"{self.keeper['throttled_total']}" + (f" ({by_route})" if by_route else "")],
            ["Keeper requests per rotation", f"{sum(self.calls.values()) / per:.3f}"],
            *([f"  {route}", f"{n / per:.3f}"] for route, n in sorted(self.calls.items())),
            [
                "Keeper requests per device (min-max)",
                f"{min(devices, default=0)}-{max(devices, default=0)} over {len(devices)} device(s)",
            ],
        ]
        return rows

    def _capacity_rows(self) -> list[list[str]]:
        limits, devices = self.sb.limits, self.sb.devices
        measured = self.rotated / (devices * self.run.wall / 3600) if self.run.wall else 0.0
        model = model_ceiling(limits.throttle, limits.rate_limit)
        pacing = pacing_ceiling(self.sb.handler_env())
        rows = [
            ["rotations per device-hour (measured)", f"{measured:,.0f}"],
            [
                "  ceiling of the emulator's model",
                "none (no throttling)"
                if model is None
                else f"{model:,.0f} ({_model_text(limits)}); measured = {measured / model:.0%}",
            ],
            ["  ceiling of the handler's pacing", f"{pacing:,.0f}; measured = {measured / pacing:.0%}"],
        ]
        if limits.rate_limit is not None:
            compression = time_compression(limits.rate_limit)
            keeper = measured / compression
            rows.append(
                [
                    f"  in Keeper time (/{compression:g})",
                    f"{keeper:,.0f} per device-hour, {keeper * 24:,.0f} per device-day",
                ]
            )
        return rows

    def _aws_rows(self) -> list[list[str]]:
        per = max(self.rotated, 1)
        inline_calls, queue_calls = _aws_calls(self.run.planner_stats), _aws_calls(self.run.worker_stats)
        aws_calls = inline_calls + queue_calls
        per_inline, per_queued = max(self.run.rotated_inline, 1), max(self.rotated - self.run.rotated_inline, 1)
        pacing = {call: n for call, n in _table_calls(self.run.stats).items() if call.endswith(f"@{PACING_TABLE}")}
        pacing_calls = ", ".join(
            f"{call.split(':')[-1].split('@')[0]} {n / per:.2f}" for call, n in sorted(pacing.items())
        )
        rows = [
            ["AWS calls per user (planner + workers)", f"{sum(aws_calls.values()) / per:.2f}"],
            [
                "  planning run (per user it rotated) | queue",
                f"{sum(inline_calls.values()) / per_inline:.2f} | {sum(queue_calls.values()) / per_queued:.2f}",
            ],
            [
                "  of which the pacing table's",
                f"{sum(pacing.values()) / per:.2f}" + (f" ({pacing_calls})" if pacing else ""),
            ],
            ["peak RSS (planner or a worker)", f"{max(s['maxrss_kb'] for s in self.run.stats) / 1024:.0f} MiB"],
            ["AWS calls per user by operation", "all  (planning run | queue)"],
        ]
        for name, n in sorted(aws_calls.items()):
            split = f"{inline_calls[name] / per_inline:.2f} | {queue_calls[name] / per_queued:.2f}"
            rows.append([f"  {name}", f"{n / per:.2f}  ({split})"])
        return rows


def _aws_calls(stats: list[dict[str, Any]]) -> Counter[str]:
    """AWS calls by operation over these processes' stats."""
    calls = Counter[str]()
    for one in stats:
        calls.update({call: n for call, n in one["calls"].items() if call.startswith("aws:")})
    return calls


def _table_calls(stats: list[dict[str, Any]]) -> Counter[str]:
    """DynamoDB calls by operation and table ("aws:dynamodb:UpdateItem@<table>") over these processes' stats."""
    calls = Counter[str]()
    for one in stats:
        calls.update(one.get("table_calls", {}))
    return calls


def _model_text(limits: KeeperLimits) -> str:
    parts = []
    if limits.throttle is not None:
        parts.append(f"3600*{limits.throttle.burst}/{limits.throttle.quiet:g} per endpoint")
    if limits.rate_limit is not None:
        rate = limits.rate_limit
        parts.append(f"1800*{rate.requests}/{rate.seconds:g} per device")
    return " and ".join(parts) + (", together" if len(parts) > 1 else "")
