"""The rotation protocol for one Keeper PAM User record, step by step (step 1, binding the record to an IAM user
and settling duplicate claims, is in binding.py: the executor runs it for every record before any record rotates).

The invariant that makes "never lose a password" true, kept by every step below:

    IAM's console password is Keeper's committed password, or one of the passwords in the user's open journal
    entry. An entry is closed only when IAM holds Keeper's committed password.

So the journal entry is written (step 4) before IAM can change (step 6), and closed (step 8) only after Keeper has
committed (step 7) or IAM was set back. A run that dies anywhere leaves an entry whose lease runs out; the next run
that touches the user (or any scheduled run) recovers it by driving steps 5-8 again with the journal's password.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Final

from .binding import Claim, duplicate_halt, iam_read_halt, rightful_owner, still_names
from .devices import Devices
from .errors import (
    AWS_ERRORS,
    IamOutcomeUnknownError,
    IamRefusedError,
    JournalTamperedError,
    JournalUnavailableError,
    KeeperCallError,
    KeeperThrottledError,
    LeaseHeldError,
    NotDueError,
    OwnedElsewhereError,
    RotationHaltedError,
    fail,
    skip,
)
from .iam import IamGateway
from .journal import Entry, Journal
from .keeper import PamUser
from .passwords import generate_password
from .results import Code, RecordResult, Status
from .sensitive import Secret

log = logging.getLogger(__name__)


class IamHolds(Enum):
    """What the protocol knows about IAM's password when it reaches step 5."""

    KEEPER = "keeper"  # certainly Keeper's committed password: IAM has not been touched
    UNKNOWN = "unknown"  # Keeper's committed password or one of the journal's (a run died or timed out)


THROTTLED_BEFORE_IAM: Final = {
    IamHolds.KEEPER: "nothing was changed; a later run (or the queue) rotates it",
    IamHolds.UNKNOWN: "the journal keeps the password; recovery finishes it",
}
THROTTLED_AFTER_IAM: Final = (
    "IAM holds the new password, Keeper has it staged and the journal keeps it; recovery commits it"
)


@dataclass(frozen=True)
class Rotation:
    """The adapters and limits one invocation shares across its records (each record's IAM gateway comes with its
    claim: the account of its user). `rotated_before(user)`: the latest last rotation at which the record may be
    rotated now (None: whenever it was; see RunContext._due_rule)."""

    vault: Devices
    journal: Journal
    owner: str
    lease_seconds: float
    password_length: int
    commit_attempts: int
    rotated_before: Callable[[PamUser], float | None] = lambda user: None


def rotate(claim: Claim, rot: Rotation, dry_run: bool) -> RecordResult:
    """Steps 2-8 for one record that step 1 (binding.bind) bound to its IAM user, and that won any duplicate claim
    on that user; every outcome, including a refusal, comes back as a result."""
    result = RecordResult(claim.user.uid, Status.ROTATED, user_name=claim.target.name, account_id=claim.account_id)
    try:
        require_console_access(claim)  # 2
        password = new_password(claim.iam, rot)  # 3
        if dry_run:
            result.status = Status.PLANNED
            return result
        try:
            entry = open_journal(claim, password, rot)  # 4
        except LeaseHeldError:
            entry, passwords, holds = claim_unfinished(claim, rot)
            result.recovered = True
            if claim.user.password == passwords[-1]:  # Keeper commits only after IAM took it: the dead run got that far
                close_journal(rot, entry, rotated=True)
                return result
        except JournalUnavailableError as error:
            raise fail(Code.JOURNAL_UNAVAILABLE, f"{error}; nothing was changed") from None
        else:
            passwords, holds = [password], IamHolds.KEEPER
            result.binding_changed = entry.previous_owner != claim.user.uid
        converge(claim, entry, passwords, holds, rot)  # 5-8
    except RotationHaltedError as halt:
        result.status, result.code, result.message = halt.status, halt.code, halt.message
    return result


def require_console_access(claim: Claim) -> None:
    """Step 2: only users that already have a console password are rotated; CreateLoginProfile would grant
    console access, which a rotator must never do."""
    try:
        if not claim.iam.has_login_profile(claim.target.name):
            raise skip(Code.NO_LOGIN_PROFILE, "the user has no console password (or does not exist); not creating one")
    except AWS_ERRORS as error:
        raise iam_read_halt(error) from None


def new_password(iam: IamGateway, rot: Rotation) -> Secret:
    """Step 3: a password the account's policy accepts (the policy is read once per invocation and account)."""
    try:
        return generate_password(iam.password_policy, rot.password_length)
    except AWS_ERRORS as error:
        raise iam_read_halt(error) from None


def open_journal(claim: Claim, password: Secret, rot: Rotation) -> Entry:
    """Step 4: journal the password and take the user's lease. The journal remembers which record last rotated the
    user; binding.rightful_owner decides (the same rule as within one run) whether this record may take it over."""
    user, target = claim.user, claim.target
    try:
        return rot.journal.open(
            target.arn, user.uid, password, rot.owner, rot.lease_seconds, rotated_before=rot.rotated_before(user)
        )
    except NotDueError as recent:
        when = datetime.fromtimestamp(recent.rotated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise skip(Code.NOT_DUE, f"last rotated {when}: not due, or rotated since it was planned") from None
    except JournalTamperedError as tampered:
        raise tampered_halt(tampered) from None
    except OwnedElsewhereError as owned:
        last_rotator = owned.record_uid
    try:
        owner = rightful_owner([user.uid], last_rotator, lambda: still_names(rot.vault, last_rotator, target))
    except KeeperCallError as error:
        code = Code.KEEPER_THROTTLED if isinstance(error, KeeperThrottledError) else Code.KEEPER_UNAVAILABLE
        raise fail(code, f"{error}; nothing was changed") from None
    if owner != user.uid:
        raise duplicate_halt(owner, target)
    try:
        return rot.journal.open(target.arn, user.uid, password, rot.owner, rot.lease_seconds, adopt=last_rotator)
    except JournalTamperedError as tampered:
        raise tampered_halt(tampered) from None
    except OwnedElsewhereError as owned:  # another record took the user in the meantime
        raise duplicate_halt(owned.record_uid, target) from None


def tampered_halt(tampered: JournalTamperedError) -> RotationHaltedError:
    return fail(Code.JOURNAL_TAMPERED, str(tampered))


def claim_unfinished(claim: Claim, rot: Rotation) -> tuple[Entry, list[Secret], IamHolds]:
    """Step 4, when an entry is already open: take it over if its run died (lease expired) and return what it
    holds; a live lease means another invocation is rotating this user right now."""
    try:
        entry = rot.journal.find(claim.target.arn)
        if entry is None or entry.record_uid != claim.user.uid:
            raise skip(Code.LOCKED, _locked_message(entry))
        passwords = _sealed_passwords(rot, entry)  # before taking it over: only an entry the rotator sealed is used
        entry = rot.journal.take_over(entry, rot.owner, rot.lease_seconds)
    except LeaseHeldError:
        raise skip(Code.LOCKED, "another invocation is rotating this user now") from None
    except JournalTamperedError as tampered:
        raise tampered_halt(tampered) from None
    except JournalUnavailableError as error:
        raise fail(Code.JOURNAL_UNAVAILABLE, f"{error}; nothing was changed") from None
    return entry, passwords, IamHolds.UNKNOWN


def _sealed_passwords(rot: Rotation, entry: Entry) -> list[Secret]:
    """The entry's passwords; they open only for the user and record they were sealed for (AES-GCM)."""
    try:
        return rot.journal.passwords(entry)
    except JournalUnavailableError as error:
        raise fail(Code.JOURNAL_UNREADABLE, f"{error}; the unfinished rotation stays in the journal") from None


def converge(claim: Claim, entry: Entry, passwords: list[Secret], holds: IamHolds, rot: Rotation) -> None:
    """Steps 5-8 for the journal's last password. Safe to repeat: every step re-does or checks, never assumes."""
    user, target, password = claim.user, claim.target, passwords[-1]
    # 5. Stage in Keeper (a transaction other readers do not see until step 7).
    try:
        rot.vault.stage(user, password, claim.account_id, target.arn)
    except KeeperThrottledError as error:
        if holds is IamHolds.KEEPER:
            close_journal(rot, entry, rotated=False)
        raise fail(Code.KEEPER_THROTTLED, f"{error}; {THROTTLED_BEFORE_IAM[holds]}") from None
    except KeeperCallError as error:
        if holds is IamHolds.KEEPER:
            close_journal(rot, entry, rotated=False)
            raise fail(Code.KEEPER_STAGE_FAILED, f"{error}; nothing was changed") from None
        raise fail(Code.PASSWORD_IN_JOURNAL, f"{error}; the journal keeps the password, the next run retries") from None
    # 6. Apply in IAM (again, in a recovery: the dead run may or may not have got that far).
    sent = time.time()
    try:
        claim.iam.set_password(target.name, password)
    except IamOutcomeUnknownError as error:
        raise fail(
            Code.IAM_OUTCOME_UNKNOWN, f"IAM did not confirm the change ({error}); the journal keeps the password"
        ) from None
    except IamRefusedError as error:
        if holds is IamHolds.KEEPER:
            _rollback_keeper(rot, user.uid)
            close_journal(rot, entry, rotated=False)
            raise fail(Code.IAM_UPDATE_REFUSED, f"{error}; Keeper's staged update was rolled back") from None
        retry_with_fresh_password(claim, entry, passwords, rot, error)
        return
    password_set = (sent, time.time())  # IAM took the password in this window (drift.py compares changes with it)
    # 7. Commit in Keeper, or put IAM back (not while Keeper throttles: that would take more Keeper requests).
    try:
        committed = commit(rot, user.uid, password)
    except KeeperThrottledError as error:
        raise fail(Code.KEEPER_THROTTLED, f"{error}; {THROTTLED_AFTER_IAM}") from None
    if not committed:
        restore_iam(claim, entry, password, rot)
    # 8. Close the journal: IAM and Keeper agree.
    close_journal(rot, entry, rotated=True, password_set=password_set)


def retry_with_fresh_password(
    claim: Claim, entry: Entry, passwords: list[Secret], rot: Rotation, refusal: IamRefusedError
) -> None:
    """Recovery only: IAM refused the journal's password, so it may already hold it (PasswordReusePrevention) or
    the policy changed. A third password, journaled next to the others before use, settles it."""
    if len(passwords) > 2:
        raise fail(Code.PASSWORD_IN_JOURNAL, f"IAM refused the recovered passwords ({refusal}); the journal keeps them")
    fresh = [*passwords, new_password(claim.iam, rot)]
    try:
        rot.journal.replace_passwords(entry, fresh)
    except (JournalUnavailableError, LeaseHeldError) as error:
        raise fail(Code.PASSWORD_IN_JOURNAL, f"could not journal a fresh password: {error}") from None
    converge(claim, entry, fresh, IamHolds.UNKNOWN, rot)


def commit(rot: Rotation, uid: str, password: Secret) -> bool:
    """Step 7: finalize Keeper's staged update, retrying. A lost reply can hide a commit that happened, so a
    failure is confirmed by reading the record back before anyone acts on it. A throttle is raised at once: the
    journal keeps the password, and recovery commits it once the device may send again."""
    for _ in range(rot.commit_attempts):
        try:
            rot.vault.commit(uid)
            return True
        except KeeperThrottledError:
            raise
        except KeeperCallError as error:
            log.warning("Keeper commit failed", extra={"record_uid": uid, "error": str(error)})
    try:
        return rot.vault.committed_password(uid) == password
    except KeeperCallError:
        return False


def restore_iam(claim: Claim, entry: Entry, password: Secret, rot: Rotation) -> None:
    """Keeper would not commit: set IAM back to the password Keeper still holds, then roll Keeper back. Always
    ends the record with a failure; only a restore that worked lets the journal close."""
    try:
        previous = rot.vault.committed_password(claim.user.uid)
    except KeeperCallError as error:
        raise fail(
            Code.PASSWORD_IN_JOURNAL, f"Keeper unreachable after IAM changed ({error}); journal keeps it"
        ) from None
    if previous is None or previous == password:
        raise fail(Code.PASSWORD_IN_JOURNAL, "Keeper would not commit and holds no earlier password to restore")
    try:
        claim.iam.set_password(claim.target.name, previous)
    except (IamRefusedError, IamOutcomeUnknownError) as error:
        raise fail(
            Code.PASSWORD_IN_JOURNAL,
            f"Keeper would not commit and IAM refused the old password ({error}); the journal keeps the new one",
        ) from None
    _rollback_keeper(rot, claim.user.uid)
    close_journal(rot, entry, rotated=False)
    raise fail(Code.KEEPER_COMMIT_FAILED_IAM_RESTORED, "Keeper would not commit; IAM was set back to Keeper's password")


def close_journal(rot: Rotation, entry: Entry, rotated: bool, password_set: tuple[float, float] | None = None) -> None:
    """Step 8. A failure here is harmless: the entry stays open and the next run finds Keeper already agreeing.
    `rotated`: the password changed and Keeper committed it, so the time is recorded (due.py), and `password_set`
    when IAM took it (drift.py); every caller says whether it rotated."""
    try:
        rot.journal.close(entry, rotated, password_set)
    except (JournalUnavailableError, LeaseHeldError) as error:
        log.warning("could not close the journal entry", extra={"user_arn": entry.user_arn, "error": str(error)})


def _rollback_keeper(rot: Rotation, uid: str) -> None:
    """Drop the staged update; if Keeper is down it stays staged, unseen, and the next stage replaces it."""
    try:
        rot.vault.rollback(uid)
    except KeeperCallError as error:
        log.warning("Keeper rollback failed", extra={"record_uid": uid, "error": str(error)})


def _locked_message(entry: Entry | None) -> str:
    if entry is None:
        return "another rotation of this user just finished; run again"
    return f"the user has an unfinished rotation from record {entry.record_uid}; rotate that record to recover it"
