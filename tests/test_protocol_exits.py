"""The protocol's rarer exits (rotation.py, steps 4-8), each driven to the end and checked against real state.

Mutation testing (`make mutation`) found these paths either never executed or executed without any test noticing a
change: a third password IAM also refuses, a fresh password the journal will not take, a commit whose read-back
fails, a record with no earlier password to restore, a dead run that had already committed. The first test checks
the invariant behind all of them on every password IAM receives.
"""

from __future__ import annotations

import uuid

import boto3
import pytest

from keeper_iam_rotator.errors import JournalUnavailableError, KeeperCallError
from keeper_iam_rotator.journal import Entry, Journal
from keeper_iam_rotator.keeper import KeeperVault
from rotator_sandbox.stack import JOURNAL_KEY, JOURNAL_MAC_KEY, load_event

from conftest import INITIAL_PASSWORD, JOURNAL_TABLE, _clear_caches
from faults import AwsFaults, SimulatedCrash, after_aws_call, after_keeper_call
from test_recovery import assert_converged, died_after_iam_changed, disarm, open_entries, run


def journaled_passwords() -> list[str]:
    """Every password the open journal entries hold now, decrypted as the function would (a separate session: the
    function's own clients may carry fault hooks)."""
    session = boto3.session.Session()
    journal = Journal(session.client("dynamodb"), session.client("kms"), JOURNAL_TABLE, JOURNAL_KEY, JOURNAL_MAC_KEY)
    items = session.client("dynamodb").scan(TableName=JOURNAL_TABLE, ConsistentRead=True)["Items"]
    entries = [Entry.from_item(item) for item in items]
    return [p.reveal() for entry in entries if entry.open and entry.sealed for p in journal.passwords(entry)]


class IamWatch:
    """Every password the function sends to UpdateLoginProfile, and whether it was recoverable at that moment: held
    by an open journal entry, or Keeper's committed password (a restore). Arm after AwsFaults (it replaces the
    default session) and before the function makes its clients."""

    def __init__(self, stack, uid: str) -> None:
        self.sent: list[str] = []
        self.unrecoverable: list[int] = []
        self.stack, self.uid = stack, uid
        events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
        events.register("before-parameter-build.iam.UpdateLoginProfile", self._check, unique_id="iam-watch")
        _clear_caches()

    def _check(self, params, **_) -> None:
        password = params["Password"]
        if password not in journaled_passwords() and password != self.stack.keeper_password(self.uid):
            self.unrecoverable.append(len(self.sent))
        self.sent.append(password)


def journal_item(stack, uid: str) -> dict:
    (item,) = [item for item in stack.journal_items() if item["recordUid"]["S"] == uid]
    return item


def test_every_password_iam_receives_is_recoverable_when_it_is_sent(stack, short_lease, patches):
    """The invariant, at the moment of each UpdateLoginProfile: a rotation, one that dies right after IAM took the
    password, and the recovery that needs a third password because IAM refuses the journaled one."""
    uid = stack.add_pair("alice")
    watch = IamWatch(stack, uid)
    assert run(stack, uid) == "rotated"
    after_aws_call("iam", "UpdateLoginProfile", SimulatedCrash())
    crash = IamWatch(stack, uid)
    assert run(stack, uid) == "crashed"
    disarm(stack, patches)
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")  # refuses the journaled password once
    recovery = IamWatch(stack, uid)

    assert run(stack, uid) == "rotated"

    assert [len(w.sent) for w in (watch, crash, recovery)] == [1, 1, 2]
    assert watch.unrecoverable == crash.unrecoverable == recovery.unrecoverable == []
    assert_converged(stack, uid, "alice")


def test_iam_refusing_the_third_password_too_keeps_all_three_in_the_journal(stack, short_lease, patches):
    uid = died_after_iam_changed(stack)
    held = stack.iam_password("alice")
    disarm(stack, patches)
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation", times=10)
    watch = IamWatch(stack, uid)

    assert run(stack, uid) == "failed/password_in_journal"

    assert len(watch.sent) == 3 and watch.unrecoverable == []  # the journaled one, then two fresh ones: no fourth
    journaled = journaled_passwords()
    assert len(journaled) == 3 and journaled[0] == held == stack.iam_password("alice")
    disarm(stack, patches)
    assert run(stack, uid) == "rotated"
    assert_converged(stack, uid, "alice")


def test_a_fresh_password_the_journal_will_not_take_is_never_sent(stack, short_lease, patches, monkeypatch):
    uid = died_after_iam_changed(stack)
    held = stack.iam_password("alice")
    disarm(stack, patches)
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")

    def refuse(self, entry, passwords):
        raise JournalUnavailableError("DynamoDB PutItem failed: ProvisionedThroughputExceededException")

    monkeypatch.setattr(Journal, "replace_passwords", refuse)
    watch = IamWatch(stack, uid)

    assert run(stack, uid) == "failed/password_in_journal"

    assert watch.sent == [held]  # only the re-apply of the journaled password
    assert stack.iam_password("alice") == held and journaled_passwords() == [held]


def test_a_commit_that_cannot_be_confirmed_keeps_the_password_in_the_journal(stack, monkeypatch):
    """Keeper refuses the commit three times and cannot be read back: IAM holds the new password, only the journal
    knows it, and the run says so instead of `rotated`."""
    uid = stack.add_pair("alice")
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="error", status=500, times=10)

    def unreachable(self, uid):
        raise KeeperCallError("read records failed: ConnectionError")

    monkeypatch.setattr(KeeperVault, "committed_password", unreachable)

    assert run(stack, uid) == "failed/password_in_journal"

    assert stack.keeper_password(uid) == INITIAL_PASSWORD != stack.iam_password("alice")
    assert journaled_passwords() == [stack.iam_password("alice")]
    assert "rotatedAt" not in journal_item(stack, uid)


def test_a_record_without_an_earlier_password_is_not_restored_to_nothing(stack):
    """Commit refused and Keeper holds no password to go back to: IAM keeps the new one, the journal holds it."""
    stack.add_user("alice")
    uid = stack.add_record("alice", password="", dn=stack.iam.get_user(UserName="alice")["User"]["Arn"])
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="error", status=500, times=10)

    result = stack.rotate(uid)[0]

    assert (result["status"], result["error"]["code"]) == ("failed", "password_in_journal")
    assert result["error"]["message"] == "Keeper would not commit and holds no earlier password to restore"
    assert journaled_passwords() == [stack.iam_password("alice")] != [INITIAL_PASSWORD]
    assert len(open_entries()) == 1


def test_a_dead_run_that_had_committed_is_closed_as_a_rotation(stack, short_lease, patches):
    """Keeper committed the journaled password before the run died: the next run only closes the entry, and records
    the rotation's time, so the record is not due again tomorrow."""
    uid = stack.add_pair("alice")
    after_keeper_call(patches, "finalize_secret_update", SimulatedCrash())
    assert run(stack, uid) == "crashed"
    disarm(stack, patches)
    committed = stack.keeper_password(uid)

    result = stack.rotate(uid)[0]

    assert (result["status"], result.get("recovered")) == ("rotated", True)
    assert assert_converged(stack, uid, "alice") == committed  # no new password: the dead run's is the rotation
    assert "rotatedAt" in journal_item(stack, uid)
    scheduled = stack.invoke(load_event("scheduled.json") | {"id": str(uuid.uuid4())})
    assert scheduled["summary"]["notDue"] == 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("stage", "failed/password_in_journal"),
        ("find", "failed/journal_unavailable"),
        ("decrypt", "failed/journal_unreadable"),
    ],
)
def test_a_recovery_that_cannot_proceed_keeps_the_entry(stack, short_lease, patches, fault, expected):
    """After a dead run changed IAM: Keeper refusing to stage, the journal unreadable, its key refused. The entry
    and IAM's password stay as they were for the next run."""
    uid = died_after_iam_changed(stack)
    held = stack.iam_password("alice")
    disarm(stack, patches)
    if fault == "stage":
        stack.keeper.vault.inject_fault("update_secret", kind="error", status=500, times=10)
    elif fault == "find":

        def unreadable(self, user_arn):
            raise JournalUnavailableError("DynamoDB GetItem failed: InternalServerError")

        patches.setattr(Journal, "find", unreadable)
    else:
        AwsFaults().fail("kms", "Decrypt", "AccessDeniedException", times=10)
        _clear_caches()

    assert run(stack, uid) == expected

    assert stack.iam_password("alice") == held != stack.keeper_password(uid)
    assert len(open_entries()) == 1
    disarm(stack, patches)
    stack.keeper.vault.clear_faults()
    assert run(stack, uid) == "rotated"
    assert_converged(stack, uid, "alice")


def test_iam_that_never_confirms_leaves_the_password_in_the_journal(stack):
    uid = stack.add_pair("alice")
    AwsFaults().fail("iam", "UpdateLoginProfile", "ServiceFailure", status=500, times=10)
    _clear_caches()

    assert run(stack, uid) == "failed/iam_outcome_unknown"

    assert len(journaled_passwords()) == 1 and stack.keeper_password(uid) == INITIAL_PASSWORD


def test_a_policy_that_cannot_be_read_changes_nothing(stack):
    uid = stack.add_pair("alice")
    AwsFaults().fail("iam", "GetAccountPasswordPolicy", "ServiceUnavailable", status=503, times=10)
    _clear_caches()

    assert run(stack, uid) == "failed/iam_error"

    assert stack.iam_password("alice") == stack.keeper_password(uid) == INITIAL_PASSWORD
    assert stack.journal_items() == []


def test_keeper_unreachable_while_the_journal_names_another_owner_changes_nothing(stack, monkeypatch):
    first = stack.add_pair("alice")
    assert run(stack, first) == "rotated"
    arn = stack.iam.get_user(UserName="alice")["User"]["Arn"]
    twin = stack.add_record("alice", dn=arn, title="a second record for alice")
    rotated = stack.iam_password("alice")
    original = KeeperVault.fetch

    def fetch(self, uids, **options):
        if list(uids) == [first]:  # is the journal's owner still naming the user? Keeper cannot say
            raise KeeperCallError("read records failed: ConnectionError")
        return original(self, uids, **options)

    monkeypatch.setattr(KeeperVault, "fetch", fetch)

    assert run(stack, twin) == "failed/keeper_unavailable"

    assert stack.iam_password("alice") == rotated == stack.keeper_password(first)
    assert stack.keeper_password(twin) == INITIAL_PASSWORD


def test_a_live_entry_of_another_record_names_that_record(stack, patches):
    dead = died_after_iam_changed(stack)  # still "alive": its lease has minutes left
    disarm(stack, patches)
    twin = stack.add_record("alice", dn=stack.iam.get_user(UserName="alice")["User"]["Arn"], title="a second record")

    result = stack.rotate(twin)[0]

    assert (result["status"], result["error"]["code"]) == ("skipped", "locked")
    assert result["error"]["message"] == (
        f"the user has an unfinished rotation from record {dead}; rotate that record to recover it"
    )


def test_a_stage_keeper_refuses_closes_the_entry_without_a_rotation_time(stack):
    """Nothing changed, so the record stays due: the next scheduled run tries again."""
    uid = stack.add_pair("alice")
    stack.keeper.vault.inject_fault("update_secret", kind="error", status=503, times=10)

    assert run(stack, uid) == "failed/keeper_stage_failed"

    assert open_entries() == [] and "rotatedAt" not in journal_item(stack, uid)
