"""Crash safety: a fault at every remote call of the protocol, then one clean run, and no password is lost.

Each cell injects one fault at one call: an error answer, a timeout whose request did land, or the process dying
right after the call succeeded (SimulatedCrash, a BaseException nothing catches; tests/e2e kills real processes).
The faulted run's own answer and the state it leaves are checked against EXPECTED_FIRST_RUN. The next run, with
the fault gone and the dead run's lease expired, must leave IAM's stored password equal to
Keeper's committed one, no staged update, no open journal entry, and the record intact.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError

from conftest import INITIAL_PASSWORD, JOURNAL_TABLE, _clear_caches
from faults import AwsFaults, SimulatedCrash, after_aws_call, after_keeper_call
from matrix import record

# (label, kind, target, occurrence) in the order a rotation makes the calls
CALLS = [
    ("dynamodb PutItem (idempotency: in progress)", "aws", ("dynamodb", "PutItem"), 1),
    ("secretsmanager GetSecretValue", "aws", ("secrets-manager", "GetSecretValue"), 1),
    ("sts GetCallerIdentity", "aws", ("sts", "GetCallerIdentity"), 1),
    ("keeper get_secret", "keeper", "get_secret", 1),
    ("iam GetUser", "aws", ("iam", "GetUser"), 1),
    ("iam GetLoginProfile", "aws", ("iam", "GetLoginProfile"), 1),
    ("iam GetAccountPasswordPolicy", "aws", ("iam", "GetAccountPasswordPolicy"), 1),
    ("kms GenerateDataKey (journal)", "aws", ("kms", "GenerateDataKey"), 1),
    ("kms GenerateMac (journal integrity)", "aws", ("kms", "GenerateMac"), 1),
    ("dynamodb PutItem (journal open)", "aws", ("dynamodb", "PutItem"), 2),
    ("keeper update_secret (stage)", "keeper", "update_secret", 1),
    ("iam UpdateLoginProfile", "aws", ("iam", "UpdateLoginProfile"), 1),
    ("keeper finalize_secret_update (commit)", "keeper", "finalize_secret_update", 1),
    ("dynamodb PutItem (journal close)", "aws", ("dynamodb", "PutItem"), 3),
    ("dynamodb UpdateItem (idempotency: result)", "aws", ("dynamodb", "UpdateItem"), 1),
]
AFTER_STAGE = {
    "keeper update_secret (stage)",
    "iam UpdateLoginProfile",
    "keeper finalize_secret_update (commit)",
}
# What the faulted run itself must report, and the state it must leave (journal entry, IAM's and Keeper's committed
# password: old = the initial one, new = another; staged = an update still staged in Keeper), per (call, fault).
# The same for both emulator pending policies. Read as the protocol's promise: before step 4 nothing changes; a fault
# the protocol retries or tolerates still rotates; a crash after the journal write leaves an open entry that holds
# whatever IAM may have.
UNTOUCHED = "journal none, IAM old, Keeper old"
DONE = "journal closed, IAM new, Keeper new"
IDEMPOTENCY_DOWN = "function error IdempotencyPersistenceLayerError"  # Lambda retries the invocation
EXPECTED_FIRST_RUN = {
    ("dynamodb PutItem (idempotency: in progress)", "error"): (IDEMPOTENCY_DOWN, UNTOUCHED),
    ("dynamodb PutItem (idempotency: in progress)", "timeout"): (IDEMPOTENCY_DOWN, UNTOUCHED),
    ("dynamodb PutItem (idempotency: in progress)", "crash"): ("crashed", UNTOUCHED),
    ("secretsmanager GetSecretValue", "error"): ("failed/ksm_config_unreadable", UNTOUCHED),
    ("secretsmanager GetSecretValue", "timeout"): ("failed/ksm_config_unreadable", UNTOUCHED),
    ("secretsmanager GetSecretValue", "crash"): ("crashed", UNTOUCHED),
    ("sts GetCallerIdentity", "error"): ("failed/iam_error", UNTOUCHED),
    ("sts GetCallerIdentity", "timeout"): ("failed/iam_error", UNTOUCHED),
    ("sts GetCallerIdentity", "crash"): ("crashed", UNTOUCHED),
    ("keeper get_secret", "error"): ("failed/keeper_unavailable", UNTOUCHED),
    ("keeper get_secret", "timeout"): ("failed/keeper_unavailable", UNTOUCHED),
    ("keeper get_secret", "crash"): ("crashed", UNTOUCHED),
    ("iam GetUser", "error"): ("failed/iam_error", UNTOUCHED),
    ("iam GetUser", "timeout"): ("failed/iam_error", UNTOUCHED),
    ("iam GetUser", "crash"): ("crashed", UNTOUCHED),
    ("iam GetLoginProfile", "error"): ("failed/iam_error", UNTOUCHED),
    ("iam GetLoginProfile", "timeout"): ("failed/iam_error", UNTOUCHED),
    ("iam GetLoginProfile", "crash"): ("crashed", UNTOUCHED),
    # read once before records run (a failure there is left for the record), then by the record: the second works
    ("iam GetAccountPasswordPolicy", "error"): ("rotated", DONE),
    ("iam GetAccountPasswordPolicy", "timeout"): ("rotated", DONE),
    ("iam GetAccountPasswordPolicy", "crash"): ("crashed", UNTOUCHED),
    ("kms GenerateDataKey (journal)", "error"): ("failed/journal_unavailable", UNTOUCHED),
    ("kms GenerateDataKey (journal)", "timeout"): ("failed/journal_unavailable", UNTOUCHED),
    ("kms GenerateDataKey (journal)", "crash"): ("crashed", UNTOUCHED),
    ("kms GenerateMac (journal integrity)", "error"): ("failed/journal_unavailable", UNTOUCHED),
    ("kms GenerateMac (journal integrity)", "timeout"): ("failed/journal_unavailable", UNTOUCHED),
    ("kms GenerateMac (journal integrity)", "crash"): ("crashed", UNTOUCHED),
    ("dynamodb PutItem (journal open)", "error"): ("failed/journal_unavailable", UNTOUCHED),
    # the write landed but its answer was lost: an open entry nobody holds, finished by the next run
    ("dynamodb PutItem (journal open)", "timeout"): ("failed/journal_unavailable", "journal open, IAM old, Keeper old"),
    ("dynamodb PutItem (journal open)", "crash"): ("crashed", "journal open, IAM old, Keeper old"),
    ("keeper update_secret (stage)", "error"): ("failed/keeper_stage_failed", "journal closed, IAM old, Keeper old"),
    ("keeper update_secret (stage)", "timeout"): ("rotated", DONE),
    ("keeper update_secret (stage)", "crash"): ("crashed", "journal open, IAM old, Keeper old, staged"),
    # iam.py retries UpdateLoginProfile's 5xx and confirms a lost answer by applying again
    ("iam UpdateLoginProfile", "error"): ("rotated", DONE),
    ("iam UpdateLoginProfile", "timeout"): ("rotated", DONE),
    ("iam UpdateLoginProfile", "crash"): ("crashed", "journal open, IAM new, Keeper old, staged"),
    # commit is tried 3 times, and a lost answer is confirmed by reading the record back
    ("keeper finalize_secret_update (commit)", "error"): ("rotated", DONE),
    ("keeper finalize_secret_update (commit)", "timeout"): ("rotated", DONE),
    ("keeper finalize_secret_update (commit)", "crash"): ("crashed", "journal open, IAM new, Keeper new"),
    # IAM and Keeper agree: an entry left open is harmless (the next run closes it)
    ("dynamodb PutItem (journal close)", "error"): ("rotated", "journal open, IAM new, Keeper new"),
    ("dynamodb PutItem (journal close)", "timeout"): ("rotated", DONE),
    ("dynamodb PutItem (journal close)", "crash"): ("crashed", DONE),
    ("dynamodb UpdateItem (idempotency: result)", "error"): (IDEMPOTENCY_DOWN, DONE),
    ("dynamodb UpdateItem (idempotency: result)", "timeout"): (IDEMPOTENCY_DOWN, DONE),
    ("dynamodb UpdateItem (idempotency: result)", "crash"): ("crashed", DONE),
}
CELLS = [
    pytest.param(call, fault, policy, id=f"{call[0]}-{fault}-{policy}")
    for call in CALLS
    for fault in ("error", "timeout", "crash")
    for policy in (("replace", "refuse") if call[0] in AFTER_STAGE else ("replace",))
]


def timeout_error() -> ReadTimeoutError:
    return ReadTimeoutError(endpoint_url="https://aws.amazonaws.com")


def arm(stack, patches: pytest.MonkeyPatch, kind: str, target, occurrence: int, fault: str) -> None:
    if kind == "aws":
        service, operation = target
        if fault == "error":
            AwsFaults().fail(service, operation, "ServiceUnavailable", status=503, after=occurrence - 1)
        else:
            after_aws_call(service, operation, timeout_error() if fault == "timeout" else SimulatedCrash(), occurrence)
    elif fault == "error":
        stack.keeper.vault.inject_fault(target, kind="error", status=500)
    elif fault == "timeout":
        stack.keeper.vault.inject_fault(target, kind="drop_after")
    else:
        after_keeper_call(patches, target, SimulatedCrash())


def run(stack, uid: str) -> str:
    """One invocation as a fresh process would make it; returns "status/code", "crashed", or the function error
    (the idempotency table failing fails the invocation: Lambda retries it)."""
    _clear_caches()
    try:
        result = stack.rotate(uid)[0]
    except SimulatedCrash:
        return "crashed"
    except Exception as error:
        return f"function error {type(error).__name__}"
    return f"{result['status']}/{result['error']['code']}" if "error" in result else result["status"]


def first_state(stack, uid: str, name: str) -> str:
    """What the faulted run left: the journal entry (none, open, closed), IAM's password and Keeper's committed
    one (old = the initial password, new = another), and whether an update is still staged in Keeper."""
    items = boto3.client("dynamodb").scan(TableName=JOURNAL_TABLE)["Items"]
    journal = "none" if not items else ("closed" if items[0]["state"]["S"] == "closed" else "open")
    iam = "old" if stack.iam_password(name) == INITIAL_PASSWORD else "new"
    keeper = "old" if stack.keeper_password(uid) == INITIAL_PASSWORD else "new"
    staged = ", staged" if stack.keeper.vault.staged(uid) is not None else ""
    return f"journal {journal}, IAM {iam}, Keeper {keeper}{staged}"


def open_entries() -> list[dict]:
    items = boto3.client("dynamodb").scan(TableName=JOURNAL_TABLE)["Items"]
    return [item for item in items if item["state"]["S"] != "closed"]


def assert_converged(stack, uid: str, name: str) -> str:
    iam, keeper = stack.iam_password(name), stack.keeper_password(uid)
    assert iam == keeper, "IAM and Keeper disagree: a password is lost"
    assert stack.keeper.vault.staged(uid) is None
    assert open_entries() == []
    record_now = stack.keeper_record(uid)
    assert record_now["type"] == "pamUser"
    assert [f["value"] for f in record_now["fields"] if f["type"] == "login"] == [[name]]
    assert not stack.iam_reset_required(name)
    return iam


def disarm(stack, patches: pytest.MonkeyPatch) -> None:
    patches.undo()
    boto3.setup_default_session()  # drops the botocore fault hooks with the session that held them
    stack.keeper.vault.clear_faults()


@pytest.mark.parametrize(("call", "fault", "policy"), CELLS)
def test_fault_matrix(stack, short_lease, patches, capsys, call, fault, policy, monkeypatch):
    label, kind, target, occurrence = call
    monkeypatch.setenv("KEEPER_PACING", "false")  # the cells count DynamoDB calls; pacing's have their own test
    stack.keeper.vault.pending_policy = policy
    uid = stack.add_pair("alice")
    arm(stack, patches, kind, target, occurrence, fault)
    first = run(stack, uid)
    left = first_state(stack, uid, "alice")
    assert (first, left) == EXPECTED_FIRST_RUN[(label, fault)]
    seen = {stack.iam_password("alice"), stack.keeper_password(uid)}
    disarm(stack, patches)
    after = run(stack, uid)
    final = assert_converged(stack, uid, "alice")
    assert after == "rotated" and final != INITIAL_PASSWORD
    output = capsys.readouterr()
    for secret in seen | {final, INITIAL_PASSWORD}:
        assert secret not in output.out + output.err
    record(f"{label} x {fault} [{policy}]", f"{first}; {left}", f"{after}, IAM == Keeper")


# --- the cases a single fault cannot produce ---------------------------------------------------------------------


def died_after_iam_changed(stack) -> str:
    """A run that dies right after UpdateLoginProfile: IAM has the new password, Keeper has not committed it."""
    uid = stack.add_pair("alice")
    after_aws_call("iam", "UpdateLoginProfile", SimulatedCrash())
    assert run(stack, uid) == "crashed"
    return uid


def test_live_lease_locks_out_a_second_invocation(stack, patches):
    """A schedule racing an API call: while one run holds the user's lease, another changes nothing."""
    uid = died_after_iam_changed(stack)  # a run that is still "alive": its lease has minutes left
    disarm(stack, patches)
    iam_before, keeper_before = stack.iam_password("alice"), stack.keeper_password(uid)
    assert run(stack, uid) == "skipped/locked"
    assert (stack.iam_password("alice"), stack.keeper_password(uid)) == (iam_before, keeper_before)
    assert len(open_entries()) == 1
    record("concurrent run while another holds the lease", "skipped/locked", "nothing changed")


def test_lambda_timeout_mid_rotation_is_recovered_after_the_lease(stack, short_lease, patches):
    uid = died_after_iam_changed(stack)
    applied = stack.iam_password("alice")
    assert applied != stack.keeper_password(uid)  # the dangerous moment: IAM changed, Keeper did not commit
    disarm(stack, patches)
    result = stack.rotate(uid)[0]
    assert result["status"] == "rotated" and result["recovered"] is True
    assert assert_converged(stack, uid, "alice") == applied  # converged forward, no third password
    record("Lambda timeout after UpdateLoginProfile", "crashed", "recovered with the journaled password")


def test_scheduled_run_recovers_records_outside_its_scope(stack, monkeypatch, short_lease, patches):
    folder = stack.keeper.vault.add_folder(name="in-scope")
    uid = died_after_iam_changed(stack)  # its record is not in the folder the schedule is limited to
    disarm(stack, patches)
    monkeypatch.setenv("ROTATION_FOLDER_UIDS", folder)
    _clear_caches()
    results = stack.invoke(json.loads('{"source": "aws.events", "detail-type": "Scheduled Event"}'))["results"]
    assert [(r["recordUid"], r["status"], r.get("recovered")) for r in results] == [(uid, "rotated", True)]
    assert_converged(stack, uid, "alice")


def test_reuse_prevention_refusing_the_rollback_keeps_the_password_in_the_journal(stack, short_lease, patches):
    uid = stack.add_pair("alice")
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="error", status=500, times=10)
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation", after=1)  # the rollback is refused
    assert run(stack, uid) == "failed/password_in_journal"
    assert stack.iam_password("alice") != stack.keeper_password(uid)  # only the journal knows IAM's password now
    assert len(open_entries()) == 1 and "secret" in open_entries()[0]
    disarm(stack, patches)
    assert run(stack, uid) == "rotated"
    assert_converged(stack, uid, "alice")
    record("commit fails + rollback refused (PasswordReusePrevention)", "failed/password_in_journal", "rotated")


def test_recovery_uses_a_third_password_when_iam_refuses_the_journaled_one(stack, short_lease, patches):
    uid = died_after_iam_changed(stack)
    journaled = stack.iam_password("alice")
    disarm(stack, patches)
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")  # "already used" on re-apply
    assert run(stack, uid) == "rotated"
    final = assert_converged(stack, uid, "alice")
    assert final not in {journaled, INITIAL_PASSWORD}
    record("recovery re-apply refused (reuse)", "crashed", "rotated with a third password")


def test_a_throttled_stage_fails_keeper_throttled_changes_nothing_and_the_next_run_rotates(stack):
    uid = stack.add_pair("alice")
    stack.keeper.vault.inject_fault("update_secret", kind="throttle", times=1, seconds=30)
    assert run(stack, uid) == "failed/keeper_throttled"
    assert stack.iam_password("alice") == stack.keeper_password(uid) == INITIAL_PASSWORD
    assert open_entries() == []
    assert stack.keeper.vault.calls["update_secret"] == 1  # answered at once, not retried inside the SDK
    assert run(stack, uid) == "rotated"
    assert assert_converged(stack, uid, "alice") != INITIAL_PASSWORD
    record("Keeper throttles staging", "failed/keeper_throttled", "rotated")


def test_a_throttled_commit_keeps_the_password_in_the_journal_and_recovery_commits_it(stack, short_lease):
    uid = stack.add_pair("alice")
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="throttle", times=1, seconds=30)
    assert run(stack, uid) == "failed/keeper_throttled"
    new = stack.iam_password("alice")
    assert new != INITIAL_PASSWORD == stack.keeper_password(uid)  # IAM changed, Keeper has it staged only
    assert len(open_entries()) == 1  # the journal holds IAM's password
    assert stack.keeper.vault.calls["finalize_secret_update"] == 1
    assert run(stack, uid) == "rotated"
    assert assert_converged(stack, uid, "alice") == new
    record("Keeper throttles the commit", "failed/keeper_throttled", "recovered, rotated")


def test_an_unusable_pacing_table_sends_keeper_nothing_and_changes_nothing(stack, monkeypatch):
    monkeypatch.setenv("PACING_TABLE_NAME", "no-such-table")
    uid = stack.add_pair("alice")
    assert run(stack, uid) == "failed/keeper_throttled"
    assert stack.keeper.vault.calls == {}
    assert stack.iam_password("alice") == stack.keeper_password(uid) == INITIAL_PASSWORD
    assert open_entries() == []


def test_an_entry_whose_record_was_changed_is_neither_recovered_nor_dropped(stack, short_lease, patches):
    """Only the record that started a rotation may finish it; an entry rewritten to name another record fails its
    integrity check and stays, with the password IAM holds, for an operator."""
    uid = died_after_iam_changed(stack)
    ddb = boto3.client("dynamodb")
    item = open_entries()[0]
    item["recordUid"] = {"S": "AAAAAAAAAAAAAAAAAAAAAA"}
    ddb.put_item(TableName=JOURNAL_TABLE, Item=item)
    disarm(stack, patches)
    assert run(stack, uid) == "failed/journal_tampered"
    assert len(open_entries()) == 1


def test_scheduled_run_reports_an_unfinished_rotation_whose_record_is_gone(stack):
    """Never drop a journal entry silently: IAM may hold its password."""
    boto3.client("dynamodb").put_item(
        TableName=JOURNAL_TABLE,
        Item={
            "userArn": {"S": "arn:aws:iam::123456789012:user/ghost"},
            "recordUid": {"S": "GoneGoneGoneGoneGone00"},
            "state": {"S": "pending"},
            "owner": {"S": "a-dead-run"},
            "leaseUntil": {"N": "0"},
            **{name: {"B": b"sealed"} for name in ("dataKey", "nonce", "secret")},
        },
    )
    results = stack.invoke({"source": "aws.events", "detail-type": "Scheduled Event"})["results"]
    assert [(r["recordUid"], r["status"], r["error"]["code"]) for r in results] == [
        ("GoneGoneGoneGoneGone00", "failed", "password_in_journal")
    ]
    assert "user/ghost" in results[0]["error"]["message"]
    assert len(open_entries()) == 1
