"""The shipped events and the Keeper fault cases, end to end: handler in a subprocess, moto server, KSM emulator."""

from __future__ import annotations

import json

import pytest

from rotator_sandbox.demo import EVENT_RECORD_UID
from rotator_sandbox.stack import load_event

from .conftest import assert_converged, assert_no_leak, held_passwords, journal_state, record_outcome, statuses

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "event_file", ["direct-invoke.json", "api-post-rotations.json"], ids=["direct-invoke", "api-post-rotations"]
)
def test_event_rotates_the_record(sb, event_file):
    user = sb.add_user("e2e-alice", uid=EVENT_RECORD_UID)
    other = sb.add_user("e2e-bob")
    other_before = sb.iam_password(other.name)

    run = sb.invoke(load_event(event_file))

    assert run.exit_code == 0, run.stderr[-2000:]
    if event_file.startswith("api"):
        assert run.result["statusCode"] == 200
        assert json.loads(run.result["body"])["results"] == run.results
    assert [(r["recordUid"], r["status"]) for r in run.results] == [(user.uid, "rotated")]
    assert_converged(sb, user)
    assert sb.iam_password(user.name) != user.initial_password
    assert sb.iam_password(other.name) == other_before == sb.keeper_password(other.uid)
    assert_no_leak({user.initial_password, sb.iam_password(user.name)}, run)
    record_outcome(f"event {event_file}", "-", statuses(run))


def test_scheduled_event_rotates_every_pam_user(sb):
    users = [sb.add_user(f"e2e-user-{i}") for i in range(3)]
    note = sb.keeper.vault.add_record(type="login", title="not a pam user", fields=[{"type": "login", "value": ["x"]}])

    run = sb.invoke(load_event("scheduled.json"))

    assert run.exit_code == 0, run.stderr[-2000:]
    assert sorted((r["recordUid"], r["status"]) for r in run.results) == sorted((u.uid, "rotated") for u in users)
    assert note not in {r["recordUid"] for r in run.results}
    new = set()
    for user in users:
        assert_converged(sb, user)
        assert sb.iam_password(user.name) != user.initial_password
        new.add(sb.iam_password(user.name))
    assert len(new) == 3
    assert_no_leak(new | {u.initial_password for u in users}, run)
    record_outcome("event scheduled.json", "-", statuses(run))


def test_dry_run_event_changes_nothing(sb):
    user = sb.add_user("e2e-alice", uid=EVENT_RECORD_UID)

    run = sb.invoke(load_event("dry-run.json"))

    assert run.exit_code == 0, run.stderr[-2000:]
    assert [(r["recordUid"], r["status"]) for r in run.results] == [(user.uid, "planned")]
    assert sb.iam_password(user.name) == user.initial_password == sb.keeper_password(user.uid)
    assert sb.keeper.vault.calls["update_secret"] == 0
    assert journal_state(sb, user) == "none"
    assert_no_leak({user.initial_password}, run)
    record_outcome("event dry-run.json", "-", statuses(run))


def test_keeper_down_before_staging_changes_nothing(sb):
    user = sb.add_user("e2e-alice")
    sb.keeper.vault.inject_fault("update_secret", "error", times=5, status=503)

    run = sb.invoke({"records": [user.uid]})

    assert run.exit_code == 0, run.stderr[-2000:]
    (result,) = run.results
    assert (result["status"], result["error"]["code"]) == ("failed", "keeper_stage_failed")
    assert sb.iam_password(user.name) == user.initial_password == sb.keeper_password(user.uid)
    assert_converged(sb, user)
    assert_no_leak({user.initial_password}, run)
    record_outcome("fault: update_secret 503 (Keeper down before staging)", "replace", statuses(run) + "; unchanged")


@pytest.mark.parametrize("policy", ["replace", "refuse"])
def test_keeper_commit_failing_restores_iam(sb, policy):
    sb.keeper.vault.pending_policy = policy
    user = sb.add_user("e2e-alice")
    sb.keeper.vault.inject_fault("finalize_secret_update", "error", times=3, status=500)  # every commit attempt

    run = sb.invoke({"records": [user.uid]})

    assert run.exit_code == 0, run.stderr[-2000:]
    (result,) = run.results
    assert (result["status"], result["error"]["code"]) == ("failed", "keeper_commit_failed_iam_restored")
    assert sb.iam_password(user.name) == user.initial_password == sb.keeper_password(user.uid)
    assert_converged(sb, user)
    assert sb.keeper.vault.calls["finalize_secret_update"] == 3  # KEEPER_COMMIT_ATTEMPTS default
    assert sb.keeper.vault.calls["rollback_secret_update"] == 1
    record_outcome("fault: finalize 500 x3 (Keeper commit failing)", policy, statuses(run) + "; IAM = old = Keeper")

    # The next run, with Keeper healthy again, rotates normally.
    again = sb.invoke({"records": [user.uid]})
    assert [r["status"] for r in again.results] == ["rotated"], again.stdout
    assert_converged(sb, user)
    assert_no_leak(held_passwords(sb, user) | {user.initial_password}, run, again)
