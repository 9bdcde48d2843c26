"""`python -m rotator_sandbox demo`: the shipped events, one after the other, against a fresh sandbox."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from rotator_sandbox.stack import DEFAULT_LIMITS, Invocation, KeeperLimits, Sandbox, fingerprint, load_event

# The uid baked into events/direct-invoke.json, dry-run.json and the API event's body.
EVENT_RECORD_UID = "pQ4bVx2tR8mK1nL7sW3yZa"


@dataclass
class Step:
    title: str
    event_file: str
    expect: str  # the status every record the step targets must end with
    everyone: bool = False  # the scheduled event targets every pamUser record that is due


STEPS = (
    Step("direct invoke", "direct-invoke.json", "rotated"),
    Step("API Gateway POST /rotations", "api-post-rotations.json", "rotated"),
    Step("EventBridge schedule", "scheduled.json", "rotated", everyone=True),
    Step("dry run", "dry-run.json", "planned"),
)


class Printer:
    def __init__(self, plain: bool) -> None:
        self.console: Any = None if plain else Console(highlight=False, soft_wrap=True)

    def line(self, text: str = "", style: str = "") -> None:
        if self.console is not None:
            self.console.print(text, style=style or None)
        else:
            print(text)

    def table(self, title: str, headers: list[str], rows: list[list[str]]) -> None:
        if self.console is not None:
            table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
            for header in headers:
                table.add_column(header)
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        print(title)
        print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        print()


def run_demo(
    users: int = 3, plain: bool = False, verbose: bool = False, limits: KeeperLimits = DEFAULT_LIMITS, devices: int = 1
) -> int:
    out = Printer(plain)
    started = time.monotonic()
    out.line("Starting moto server and the KSM emulator on 127.0.0.1 ...")
    with Sandbox(users=0, user_prefix="demo-user", limits=limits, devices=devices) as sb:
        sb.add_user("demo-user-001", uid=EVENT_RECORD_UID)
        for i in range(2, users + 1):
            sb.add_user(f"demo-user-{i:03d}")
        out.line(f"  AWS (moto): {sb.aws_url}   Keeper (KSM emulator): {sb.keeper.url}")
        out.line(f"  Keeper {limits}; {devices} KSM client device(s)")
        out.line(f"  seeded {len(sb.users)} IAM users with console passwords and their pamUser records\n")
        problems: list[str] = []
        for number, step in enumerate(STEPS, 1):
            problems += run_step(sb, out, f"{number}. {step.title}  (events/{step.event_file})", step, verbose)
        seconds = time.monotonic() - started
        throttled = sb.keeper.vault.throttled_total
    if throttled:
        out.line(f"Keeper answered {throttled} request(s) throttled")
    if problems:
        out.line(f"FAILED ({len(problems)} problem(s), {seconds:.1f}s):", style="bold red")
        for problem in problems:
            out.line(f"  - {problem}")
        return 1
    out.line(
        f"OK: every step behaved and IAM agrees with Keeper for every record ({seconds:.1f}s).", style="bold green"
    )
    return 0


def run_step(sb: Sandbox, out: Printer, title: str, step: Step, verbose: bool) -> list[str]:
    before = {u.uid: sb.iam_password(u.name) for u in sb.users}
    started = time.monotonic()
    run: Invocation = sb.invoke(load_event(step.event_file))
    seconds = time.monotonic() - started
    problems: list[str] = []
    if run.exit_code != 0 or run.result is None:
        problems.append(f"{step.title}: the handler exited {run.exit_code}")
        out.line(f"{title}: handler exited {run.exit_code}", style="red")
        out.line(run.stderr.strip()[-2000:])
        return problems
    if "statusCode" in run.result and run.result["statusCode"] != 200:
        problems.append(f"{step.title}: HTTP {run.result['statusCode']}")
    by_uid = {r["recordUid"]: r for r in run.results}
    # the schedule rotates what is due: every record except the events' one, which the steps before just rotated
    targeted = {u.uid for u in sb.users} - {EVENT_RECORD_UID} if step.everyone else {EVENT_RECORD_UID}
    rows = []
    for user in sb.users:
        result = by_uid.get(user.uid)
        status = result["status"] if result else "-"
        if result and "error" in result:
            status += f" ({result['error']['code']})"
        after = sb.iam_password(user.name)
        agree = sb.agree(user)
        changed = after != before[user.uid]
        rows.append(
            [
                user.name,
                status,
                f"{fingerprint(before[user.uid])} -> {fingerprint(after)}"
                if changed
                else f"{fingerprint(after)} (unchanged)",
                "yes" if agree else "NO",
            ]
        )
        if not agree:
            problems.append(f"{step.title}: {user.name}: IAM's password differs from Keeper's committed password")
        if user.uid in targeted:
            if not result or result["status"] != step.expect:
                problems.append(f"{step.title}: {user.name}: expected {step.expect}, got {status}")
            if changed != (step.expect == "rotated"):
                problems.append(f"{step.title}: {user.name}: password {'changed' if changed else 'did not change'}")
        elif changed:
            problems.append(f"{step.title}: {user.name} was not targeted but its password changed")
    out.table(
        f"{title}  {seconds:.1f}s", ["user", "status", "password (sha256/8) before -> after", "IAM = Keeper"], rows
    )
    if verbose:
        out.line(run.stderr.strip())
    return problems
