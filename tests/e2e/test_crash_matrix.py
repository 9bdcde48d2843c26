"""Crash matrix: the handler process really dies (os._exit(137)) right after one remote call of the protocol has
succeeded; then a clean invocation runs after the dead run's lease expired, and both sides must agree again.

The crash hook lives in the sandbox's invoke runner (rotator_sandbox.hooks), never in product code.
Order of the remote calls for one record (direct invoke):
  dynamodb PutItem on the idempotency table (request in progress), sts GetCallerIdentity,
  secretsmanager GetSecretValue, keeper get_secret, iam GetUser, iam GetLoginProfile,
  iam GetAccountPasswordPolicy, kms GenerateDataKey (once per invocation), dynamodb PutItem #1 on the journal (open),
  keeper update_secret (stage), iam UpdateLoginProfile, keeper finalize_secret_update (commit), journal PutItem #2
  (closed), dynamodb UpdateItem on the idempotency table (the result saved).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from rotator_sandbox.hooks import CRASH_EXIT_CODE
from rotator_sandbox.stack import IDEMPOTENCY_TABLE, JOURNAL_TABLE, load_event

from .conftest import (
    LEASE_ENV,
    assert_converged,
    assert_no_leak,
    held_passwords,
    journal_state,
    record_outcome,
    statuses,
    wait_for_lease,
)

pytestmark = pytest.mark.e2e

JOURNAL_PUT = f"aws:dynamodb:PutItem@{JOURNAL_TABLE}"
BEFORE_STAGE = [
    f"aws:dynamodb:PutItem@{IDEMPOTENCY_TABLE}",  # the request is marked in progress
    "aws:sts:GetCallerIdentity",
    "aws:secretsmanager:GetSecretValue",
    "keeper:get_secret",
    "aws:iam:GetUser",
    "aws:iam:GetLoginProfile",
    "aws:iam:GetAccountPasswordPolicy",
    "aws:kms:GenerateDataKey",
    f"{JOURNAL_PUT}#1",  # journal open
]
AFTER_STAGE = [
    "keeper:update_secret",  # stage
    "aws:iam:UpdateLoginProfile",
    "keeper:finalize_secret_update",  # commit
    f"{JOURNAL_PUT}#2",  # journal closed: the work is done, only the process dies
    f"aws:dynamodb:UpdateItem@{IDEMPOTENCY_TABLE}",  # the result is saved for retries
]


@dataclass(frozen=True)
class Cell:
    crash_after: str
    policy: str = "replace"
    commit_faults: int = 0  # finalize errors injected before the crash run (drives the restore path)
    recover_crash: str = ""  # the first recovery run crashes too, here; a second one recovers
    same_request_id: bool = False  # the recovery is Lambda's retry of the dead invocation (same request id)

    @property
    def id(self) -> str:
        parts = [self.crash_after]
        if self.commit_faults:
            parts.insert(0, f"finalize-fails-x{self.commit_faults}")
        if self.recover_crash:
            parts.append(f"then-recovery-crashes-after-{self.recover_crash}")
        if self.same_request_id:
            parts.append("recovered-by-a-retry-with-the-same-request-id")
        return (
            "/".join(parts).replace(f"@{JOURNAL_TABLE}", "@journal").replace(f"@{IDEMPOTENCY_TABLE}", "@idempotency")
            + f"[{self.policy}]"
        )


CELLS = [
    *(Cell(c) for c in BEFORE_STAGE),  # nothing is staged yet: the pending policy cannot matter
    *(Cell(c, policy) for c in AFTER_STAGE for policy in ("replace", "refuse")),
    # Restore path: Keeper will not commit, IAM is set back (the 2nd UpdateLoginProfile) -> crash before rollback.
    *(Cell("aws:iam:UpdateLoginProfile#2", policy, commit_faults=3) for policy in ("replace", "refuse")),
    Cell("keeper:rollback_secret_update", "refuse", commit_faults=3),
    # Lambda's own retry of the dead invocation (asynchronous invoke: same request id, so same idempotency key).
    Cell("aws:iam:UpdateLoginProfile", "refuse", same_request_id=True),
    # Two deaths in a row: the recovery run dies right after re-staging, a third run finishes.
    *(
        Cell("aws:iam:UpdateLoginProfile", policy, recover_crash="keeper:update_secret")
        for policy in ("replace", "refuse")
    ),
]


def snapshot(sb, user) -> str:
    iam, keeper, staged = sb.iam_password(user.name), sb.keeper_password(user.uid), sb.keeper_staged_password(user.uid)
    where = "IAM=Keeper" if iam == keeper else ("IAM=staged" if iam == staged else "IAM=journal-only")
    return f"{where}, staged={'yes' if staged else 'no'}, journal={journal_state(sb, user)}"


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.id)
def test_crash_then_recover(sb, cell):
    sb.keeper.vault.pending_policy = cell.policy
    user = sb.add_user("e2e-crash")
    seen: set[str] = {user.initial_password}
    if cell.commit_faults:
        sb.keeper.vault.inject_fault("finalize_secret_update", "error", times=cell.commit_faults, status=500)

    request_id = str(uuid.uuid4())
    crash_env = {**LEASE_ENV, "SANDBOX_CRASH_AFTER": cell.crash_after, "SANDBOX_REQUEST_ID": request_id}
    crashed = sb.invoke({"records": [user.uid]}, crash_env)
    assert crashed.exit_code == CRASH_EXIT_CODE, f"exit {crashed.exit_code}: {crashed.stderr[-2000:]}"
    assert crashed.result is None
    seen |= held_passwords(sb, user)
    after_crash = snapshot(sb, user)
    runs = [crashed]

    if cell.recover_crash:
        wait_for_lease(sb, user)
        second = sb.invoke({"records": [user.uid]}, {**LEASE_ENV, "SANDBOX_CRASH_AFTER": cell.recover_crash})
        assert second.exit_code == CRASH_EXIT_CODE, f"exit {second.exit_code}: {second.stderr[-2000:]}"
        seen |= held_passwords(sb, user)
        runs.append(second)

    wait_for_lease(sb, user)
    recovery_env = {**LEASE_ENV, "SANDBOX_REQUEST_ID": request_id} if cell.same_request_id else LEASE_ENV
    recovery = sb.invoke({"records": [user.uid]}, recovery_env)
    runs.append(recovery)
    seen |= held_passwords(sb, user)
    outcome = f"exit {CRASH_EXIT_CODE} -> {after_crash} -> recovery: {statuses(recovery)}"
    try:
        assert recovery.exit_code == 0, recovery.stderr[-2000:]
        assert [r["status"] for r in recovery.results] == ["rotated"], recovery.stdout
        assert_converged(sb, user)
        assert sb.iam_password(user.name) != user.initial_password, "the recovery did not rotate"
        assert_no_leak(seen, *runs)
    except AssertionError as error:
        record_outcome(cell.id, cell.policy, f"FAIL {outcome}: {str(error).splitlines()[0]}")
        raise
    record_outcome(cell.id, cell.policy, f"{outcome}; converged")


@pytest.mark.parametrize("policy", ["replace", "refuse"])
def test_crash_recovered_by_the_schedule_outside_its_folder_scope(sb, policy):
    """A scheduled run limited to other folders still finishes the dead run's rotation (orphaned journal entry)."""
    sb.keeper.vault.pending_policy = policy
    user = sb.add_user("e2e-crash")
    scope = sb.keeper.vault.add_folder(name="other scope")
    crashed = sb.invoke({"records": [user.uid]}, {**LEASE_ENV, "SANDBOX_CRASH_AFTER": "aws:iam:UpdateLoginProfile"})
    assert crashed.exit_code == CRASH_EXIT_CODE
    seen = held_passwords(sb, user) | {user.initial_password}
    wait_for_lease(sb, user)

    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    recovery = sb.invoke(scheduled, {**LEASE_ENV, "ROTATION_FOLDER_UIDS": scope})

    assert recovery.exit_code == 0, recovery.stderr[-2000:]
    assert [(r["recordUid"], r["status"]) for r in recovery.results] == [(user.uid, "rotated")]
    assert_converged(sb, user)
    assert_no_leak(seen | held_passwords(sb, user), crashed, recovery)
    record_outcome("aws:iam:UpdateLoginProfile, recovered by schedule (orphan)", policy, statuses(recovery))


@pytest.mark.parametrize("latency", [0.0, 0.2], ids=["no-latency", "keeper-latency-0.2s"])
def test_two_concurrent_invocations_on_one_record(sb, latency):
    user = sb.add_user("e2e-race")
    sb.keeper.vault.set_latency(latency)

    first = sb.start_invoke({"records": [user.uid]})
    second = sb.start_invoke({"records": [user.uid]})
    runs = [sb.finish(first), sb.finish(second)]

    outcomes = []
    for run in runs:
        assert run.exit_code == 0, run.stderr[-2000:]
        (result,) = run.results
        outcomes.append(result["status"] + (f"({result['error']['code']})" if "error" in result else ""))
    # Serialized (the second opened the journal after the first closed it): both rotate, or the second's record copy
    # is a revision behind and Keeper refuses the stage (nothing changed). Overlapping: the second is "locked".
    allowed = (["rotated", "rotated"], ["rotated", "skipped(locked)"], ["failed(keeper_stage_failed)", "rotated"])
    assert sorted(outcomes) in allowed, outcomes
    assert_converged(sb, user)
    assert sb.iam_password(user.name) != user.initial_password
    assert_no_leak(held_passwords(sb, user) | {user.initial_password}, *runs)
    record_outcome(f"two concurrent invocations, keeper latency {latency}s", "replace", " + ".join(sorted(outcomes)))


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_crash_mid_schedule_then_schedule_recovers_everything(sb, concurrency):
    """Three records in one scheduled run; the process dies after the 2nd UpdateLoginProfile. One record at a time:
    the 1st is done, the 2nd half-way, the 3rd untouched. In parallel (ROTATION_CONCURRENCY=4): any mix. The next
    scheduled run (EventBridge's retry: same event id) converges all three; a record whose rotation finished before
    the crash is not due again, so that run leaves it alone."""
    users = [sb.add_user(f"e2e-sched-{i}") for i in range(3)]
    scheduled = load_event("scheduled.json")  # EventBridge retries a failed delivery with the same event id
    env = {**LEASE_ENV, "ROTATION_CONCURRENCY": concurrency}
    crashed = sb.invoke(scheduled, {**env, "SANDBOX_CRASH_AFTER": "aws:iam:UpdateLoginProfile#2"})
    assert crashed.exit_code == CRASH_EXIT_CODE
    seen = {p for u in users for p in held_passwords(sb, u)} | {u.initial_password for u in users}
    states = [journal_state(sb, u) for u in users]
    if concurrency == "1":
        assert states == ["closed", "pending", "none"], states
    assert states.count("pending") >= 1, states
    for user in users:
        wait_for_lease(sb, user)

    recovery = sb.invoke(scheduled, env)

    assert recovery.exit_code == 0, recovery.stderr[-2000:]
    finished = states.count("closed")
    assert sorted(r["status"] for r in recovery.results) == ["rotated"] * (3 - finished), recovery.stdout
    assert recovery.result["summary"]["notDue"] == finished
    assert sum(1 for r in recovery.results if r.get("recovered")) == states.count("pending")
    for user in users:
        assert_converged(sb, user)
    seen |= {p for u in users for p in held_passwords(sb, u)}
    assert_no_leak(seen, crashed, recovery)
    record_outcome(
        f"schedule of 3 (concurrency {concurrency}), crash after 2nd UpdateLoginProfile",
        "replace",
        f"journal {'/'.join(states)} -> {statuses(recovery)}",
    )


@pytest.mark.parametrize("policy", ["replace", "refuse"])
def test_two_concurrent_recoveries_of_one_dead_run(sb, policy):
    """Two invocations find the same expired lease at once: exactly one takes the entry over."""
    sb.keeper.vault.pending_policy = policy
    user = sb.add_user("e2e-race")
    crashed = sb.invoke({"records": [user.uid]}, {**LEASE_ENV, "SANDBOX_CRASH_AFTER": "aws:iam:UpdateLoginProfile"})
    assert crashed.exit_code == CRASH_EXIT_CODE
    seen = held_passwords(sb, user) | {user.initial_password}
    wait_for_lease(sb, user)
    sb.keeper.vault.set_latency(0.1)  # widen the window in which both runs are between fetch and commit

    processes = [sb.start_invoke({"records": [user.uid]}) for _ in range(2)]
    runs = [sb.finish(p) for p in processes]

    outcomes = sorted(statuses(run) for run in runs)
    assert all(run.exit_code == 0 for run in runs), [run.stderr[-1000:] for run in runs]
    # The loser recovered nothing, so its result never says "recovered" (finding 2, fixed).
    assert outcomes in (
        ["rotated+recovered", "skipped(locked)"],
        ["rotated", "rotated+recovered"],  # the second started after the first had finished
    ), outcomes
    assert_converged(sb, user)
    assert_no_leak(seen | held_passwords(sb, user), crashed, *runs)
    record_outcome("two concurrent recoveries after a crash", policy, " + ".join(outcomes))


def test_lambda_retry_of_a_crashed_invocation_within_its_deadline(sb):
    """Lambda retries a failed asynchronous invocation with the same request id, i.e. the same idempotency key. While
    the dead run's idempotency record is "in progress" (until its deadline), the retry fails as a function error, so
    Lambda keeps retrying and finally uses the failure destination (the SNS alarm) instead of counting it done. The
    journal holds the password meanwhile and a later run (after the lease) converges."""
    user = sb.add_user("e2e-retry")
    env = {"SANDBOX_REQUEST_ID": str(uuid.uuid4()), "SANDBOX_REMAINING_MS": "5000", "JOURNAL_LEASE_MARGIN_SECONDS": "0"}
    crashed = sb.invoke({"records": [user.uid]}, {**env, "SANDBOX_CRASH_AFTER": "aws:iam:UpdateLoginProfile"})
    assert crashed.exit_code == CRASH_EXIT_CODE
    seen = held_passwords(sb, user) | {user.initial_password}

    retry = sb.invoke({"records": [user.uid]}, env)

    assert retry.exit_code == 1 and retry.result is None
    assert "RequestInProgressError" in retry.stderr
    assert sb.iam_password(user.name) != sb.keeper_password(user.uid)  # only the journal knows IAM's password now
    assert sb.iam_password(user.name) in sb.journal_passwords()
    wait_for_lease(sb, user)
    later = sb.invoke({"records": [user.uid]}, LEASE_ENV)
    assert [r["status"] for r in later.results] == ["rotated"], later.stdout
    assert_converged(sb, user)
    assert_no_leak(seen | held_passwords(sb, user), crashed, retry, later)
    record_outcome(
        "crash, then Lambda's retry (same request id) within the deadline",
        "replace",
        f"retry -> function error RequestInProgressError (Lambda retries, then alarms); later run -> {statuses(later)}",
    )
