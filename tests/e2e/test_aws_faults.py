"""IAM's refusals and transient errors (injected in the handler process by the sandbox's botocore hook, since moto
enforces no password policy and never fails), alone and combined with a crash."""

from __future__ import annotations

import pytest

from rotator_sandbox.hooks import CRASH_EXIT_CODE

from .conftest import (
    LEASE_ENV,
    assert_converged,
    journal_state,
    record_outcome,
    recover,
    statuses,
)

pytestmark = pytest.mark.e2e


def test_iam_refusal_rolls_keeper_back(sb):
    user = sb.add_user("e2e-alice")
    run = sb.invoke({"records": [user.uid]}, {"SANDBOX_AWS_FAULTS": "iam:UpdateLoginProfile=PasswordPolicyViolation"})
    assert run.exit_code == 0, run.stderr[-2000:]
    (result,) = run.results
    assert (result["status"], result["error"]["code"]) == ("failed", "iam_update_refused")
    assert sb.iam_password(user.name) == user.initial_password == sb.keeper_password(user.uid)
    assert_converged(sb, user)
    record_outcome("fault: IAM refuses UpdateLoginProfile", "replace", statuses(run) + "; unchanged")


@pytest.mark.parametrize("policy", ["replace", "refuse"])
def test_iam_outcome_unknown_then_recovery(sb, policy):
    """5 x HTTP 500 on UpdateLoginProfile: IAM may have taken the password; the journal keeps it, the next run
    (after the lease) converges."""
    sb.keeper.vault.pending_policy = policy
    user = sb.add_user("e2e-alice")
    run = sb.invoke(
        {"records": [user.uid]}, {**LEASE_ENV, "SANDBOX_AWS_FAULTS": "iam:UpdateLoginProfile=ServiceFailure/500x5"}
    )
    assert run.exit_code == 0, run.stderr[-2000:]
    (result,) = run.results
    assert (result["status"], result["error"]["code"]) == ("failed", "iam_outcome_unknown")
    assert journal_state(sb, user) == "pending"
    recovery = recover(sb, user, run)
    record_outcome(
        "fault: UpdateLoginProfile 500 x5 -> outcome unknown", policy, f"{statuses(run)} -> {statuses(recovery)}"
    )


@pytest.mark.parametrize("policy", ["replace", "refuse"])
def test_crash_then_iam_refuses_the_journal_password(sb, policy):
    """IAM already holds the journal's password when the recovery re-applies it, and refuses it (as
    PasswordReusePrevention would): the recovery journals a third password and converges on it."""
    sb.keeper.vault.pending_policy = policy
    user = sb.add_user("e2e-alice")
    crashed = sb.invoke({"records": [user.uid]}, {**LEASE_ENV, "SANDBOX_CRASH_AFTER": "aws:iam:UpdateLoginProfile"})
    assert crashed.exit_code == CRASH_EXIT_CODE
    first_new = sb.iam_password(user.name)
    recovery = recover(sb, user, crashed, {"SANDBOX_AWS_FAULTS": "iam:UpdateLoginProfile=PasswordPolicyViolation"})
    assert sb.iam_password(user.name) not in (user.initial_password, first_new)
    record_outcome("crash after UpdateLoginProfile, IAM refuses replay", policy, statuses(recovery) + "; 3rd password")


@pytest.mark.parametrize("policy", ["replace", "refuse"])
def test_commit_fails_and_iam_refuses_the_restore(sb, policy):
    """Keeper will not commit and IAM refuses the old password back: the journal keeps the new one
    (password_in_journal); once Keeper is healthy the next run converges."""
    sb.keeper.vault.pending_policy = policy
    user = sb.add_user("e2e-alice")
    sb.keeper.vault.inject_fault("finalize_secret_update", "error", times=3, status=500)
    run = sb.invoke(
        {"records": [user.uid]}, {**LEASE_ENV, "SANDBOX_AWS_FAULTS": "iam:UpdateLoginProfile=PasswordPolicyViolation#2"}
    )
    (result,) = run.results
    assert (result["status"], result["error"]["code"]) == ("failed", "password_in_journal")
    assert sb.iam_password(user.name) != sb.keeper_password(user.uid)  # IAM is ahead; the journal holds its password
    assert sb.iam_password(user.name) in sb.journal_passwords()
    recovery = recover(sb, user, run)
    record_outcome("fault: commit fails + IAM refuses restore", policy, f"{statuses(run)} -> {statuses(recovery)}")


@pytest.mark.parametrize("policy", ["replace", "refuse"])
def test_commit_reply_lost_but_applied(sb, policy):
    """finalize applied but its reply dropped: the read-back sees the commit, nothing is undone."""
    sb.keeper.vault.pending_policy = policy
    user = sb.add_user("e2e-alice")
    sb.keeper.vault.inject_fault("finalize_secret_update", "drop_after", times=1)
    run = sb.invoke({"records": [user.uid]})
    assert [r["status"] for r in run.results] == ["rotated"], run.stdout
    assert_converged(sb, user)
    assert sb.iam_password(user.name) != user.initial_password
    record_outcome("fault: finalize applied, reply dropped", policy, statuses(run))


def test_two_records_for_one_iam_user_rotate_once(sb):
    """Two records bound to one IAM user: the one Keeper lists first is rotated, then stays the journal's owner; the
    other is reported (rotating both would leave one of them holding a dead password)."""
    user = sb.add_user("e2e-shared")
    twin = sb.keeper.vault.add_record(
        type="pamUser",
        title="second record for the same user",
        fields=[
            {"type": "login", "value": [user.name]},
            {"type": "password", "value": [user.initial_password]},
            {"type": "text", "label": "distinguishedName", "value": [user.arn]},
        ],
    )
    for concurrency in ("1", "4"):
        run = sb.invoke(
            {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
            {"ROTATION_CONCURRENCY": concurrency},
        )
        mine = {r["recordUid"]: r for r in run.results if r["recordUid"] in (user.uid, twin)}
        codes = sorted(r.get("error", {}).get("code", r["status"]) for r in mine.values())
        assert codes == ["duplicate_user", "rotated"], run.stdout
        assert mine[user.uid]["status"] == "rotated"
        assert sb.iam_password(user.name) == sb.keeper_password(user.uid)
        record_outcome(
            f"two records name one IAM user (schedule, concurrency {concurrency})", "replace", ", ".join(codes)
        )
        sb.age_rotations(400)  # a period later: the user's last rotation is due again
