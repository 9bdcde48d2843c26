"""The steps `make sam-local` runs through SAM CLI, and how each is judged: by state, never by SAM's exit code.

`sam local invoke` exits 0 even when the function raised, so every step is judged by (1) the function's answer
(each expected record's status; no function error, HTTP 200, no failed SQS message) and (2) the state afterwards:
every IAM user's console password equals its Keeper record's committed password (svc, without one, still has none),
no Keeper record is left staged, no journal entry is left open, and exactly the users the step targets have a new
password. (3) No password and no part of the KSM config appears in anything SAM printed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rotator_sandbox.paths import EVENTS_DIR
from rotator_sandbox.serve import EVENT_SEED, SEED
from rotator_sandbox.stack import CONFIG_SECRET, Sandbox, fingerprint

ABSENT = "-"  # the record must not be in the answer's results (not targeted, or not due)
USERS = {name: uid for name, uid, _, _ in (*SEED, EVENT_SEED)}
CONSOLE = {name for name, _, console, _ in (*SEED, EVENT_SEED) if console}
CAROL = EVENT_SEED[0]  # the record every shipped event but the schedule names


@dataclass(frozen=True)
class Step:
    title: str
    event: str | None  # a file under events/ for `sam local invoke`; None: `sam local start-api` and a POST
    expect: dict[str, str]  # user -> status in the answer (ABSENT: not listed); {} for an SQS batch answer
    changes: frozenset[str]  # the users whose IAM password must change; every other one must not
    not_due: int | None = None  # the schedule's count of records in scope it left alone
    out_of_band: str | None = None  # a CloudTrail event: this user's password is first changed outside the rotator


STEPS = (
    # first: the queue rotates only what is due (the journal refuses the rest), and carol was never rotated yet
    Step("SQS rotation queue", "sqs-rotation.json", {}, frozenset({CAROL})),
    Step("direct invoke", "direct-invoke.json", {CAROL: "rotated", "alice": ABSENT}, frozenset({CAROL})),
    Step("API Gateway event", "api-post-rotations.json", {CAROL: "rotated"}, frozenset({CAROL})),
    Step(
        "EventBridge schedule",
        "scheduled.json",
        {"alice": "rotated", "bob": "rotated", "svc": "skipped", CAROL: ABSENT},  # carol was rotated: not due
        frozenset({"alice", "bob"}),
        not_due=1,
    ),
    Step("recovery schedule", "recovery.json", dict.fromkeys(USERS, ABSENT), frozenset()),
    Step("dry run", "dry-run.json", {CAROL: "planned"}, frozenset()),
    # drift: the event's change is made for real first (an administrator, then alice herself): the rotation that
    # answers it leaves IAM equal to Keeper again, with a password that is neither the old nor the out-of-band one
    Step(
        "CloudTrail: UpdateLoginProfile by an admin",
        "cloudtrail-update-login-profile.json",
        {"alice": "rotated"},
        frozenset({"alice"}),
        out_of_band="alice",
    ),
    Step(
        "CloudTrail: ChangePassword by the user",
        "cloudtrail-change-password.json",
        {"alice": "rotated"},
        frozenset({"alice"}),
        out_of_band="alice",
    ),
    Step("start-api POST /rotations (SigV4-signed)", None, {CAROL: "rotated"}, frozenset({CAROL})),
)
# events/ files that are not events
NOT_EVENTS = {"local-env.json", "local-env-sandbox.json"}


def unstepped_events() -> list[str]:
    """Shipped events no step sends: every one must be exercised, so a new event needs a step here."""
    stepped = {step.event for step in STEPS}
    return sorted(p.name for p in EVENTS_DIR.glob("*.json") if p.name not in NOT_EVENTS | stepped)


@dataclass
class Judgement:
    problems: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def passwords(sb: Sandbox) -> dict[str, str | None]:
    return {name: sb.iam_password(name) for name in USERS}


def answer_results(answer: Any) -> tuple[list[str], dict[str, dict[str, Any]] | None, dict[str, Any]]:  # noqa: PLR0911
    """(problems, results by record uid or None for an SQS batch answer, the summary); one return per answer shape."""
    if not isinstance(answer, dict):
        return [f"the answer is not a JSON object: {str(answer)[:200]}"], {}, {}
    if "errorType" in answer or "errorMessage" in answer:
        error = f"{answer.get('errorType')}: {str(answer.get('errorMessage'))[:300]}"
        return [f"the function failed: {error}"], {}, {}
    if "statusCode" in answer:  # API Gateway proxy response
        if answer["statusCode"] != 200:
            return [f"HTTP {answer['statusCode']}: {str(answer.get('body'))[:300]}"], {}, {}
        try:
            answer = json.loads(answer.get("body") or "null")
        except ValueError:
            return ["the API answer's body is not JSON"], {}, {}
        if not isinstance(answer, dict):
            return ["the API answer's body is not a JSON object"], {}, {}
    if "batchItemFailures" in answer:  # SQS: the records' own results are in the log; state tells the rest
        failures = answer["batchItemFailures"]
        return ([f"SQS messages failed: {failures}"] if failures else []), None, {}
    if not isinstance(answer.get("results"), list):
        return [f"no results in the answer: {json.dumps(answer)[:300]}"], {}, {}
    return [], {r.get("recordUid"): r for r in answer["results"] if isinstance(r, dict)}, answer.get("summary") or {}


def judge(
    sb: Sandbox, step: Step, answer: Any, before: dict[str, str | None], seeded_keeper: dict[str, str | None]
) -> Judgement:
    """Everything wrong with the step's answer and the state it left, plus a printable row per user."""
    verdict = Judgement()
    problems, by_uid, summary = answer_results(answer)
    verdict.problems += problems
    if step.not_due is not None and by_uid is not None and not problems and summary.get("notDue") != step.not_due:
        verdict.problems.append(f"notDue is {summary.get('notDue')}, expected {step.not_due}")
    after = passwords(sb)
    for name, uid in USERS.items():
        result = (by_uid or {}).get(uid)
        status = ABSENT if result is None else str(result.get("status"))
        if result and "error" in result:
            status += f" ({result['error'].get('code')})"
        wanted = step.expect.get(name)
        if by_uid is not None and not problems and wanted is not None and status.split(" ")[0] != wanted:
            verdict.problems.append(f"{name}: the answer says {status}, expected {wanted}")
        keeper = sb.keeper_password(uid)
        if name in CONSOLE:
            agree = after[name] is not None and after[name] == keeper
        else:  # no console password: none may be created, and the record keeps what it had
            agree = after[name] is None and keeper == seeded_keeper[name]
        if not agree:
            verdict.problems.append(f"{name}: IAM's password is not Keeper's committed password")
        changed = after[name] != before[name]
        if changed != (name in step.changes):
            verdict.problems.append(f"{name}: password {'changed' if changed else 'did not change'}")
        shown = f"{fingerprint(before[name])} -> {fingerprint(after[name])}" if changed else fingerprint(after[name])
        verdict.rows.append([name, status if by_uid is not None else "(batch)", shown, "yes" if agree else "NO"])
    staged = [r["uid"] for r in sb.keeper.vault.dump()["records"] if r["staged"]]
    if staged:
        verdict.problems.append(f"Keeper records left staged: {', '.join(staged)}")
    if sb.journal_passwords():
        verdict.problems.append("a journal entry is left open (a rotation was not finished)")
    return verdict


def secrets(sb: Sandbox, seen: Iterable[str | None]) -> set[str]:
    """What must never be printed: every password seen, the KSM config and its keys."""
    config = sb.aws("secretsmanager").get_secret_value(SecretId=CONFIG_SECRET)["SecretString"]
    values = {config, *(v for v in seen if v)}
    try:
        parsed = json.loads(base64.b64decode(config))
        values |= {str(parsed[key]) for key in ("privateKey", "appKey", "clientKey") if parsed.get(key)}
    except ValueError:
        pass
    return {v for v in values if len(v) >= 8}


def leaked(outputs: Iterable[str], secret_values: set[str]) -> bool:
    return any(secret in text for text in outputs for secret in secret_values)


def redact(text: str, secret_values: set[str]) -> str:
    for secret in secret_values:
        text = text.replace(secret, "[redacted]")
    return text
