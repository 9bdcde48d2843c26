"""The rotation protocol for one Keeper PAM User record, step by step (step 1, binding the record to an IAM user
and settling duplicate claims, is in binding.py: it runs for every record before any record rotates).

The invariant that makes "never lose a password" true, kept by every step below:

    IAM's console password is Keeper's committed password, or one of the passwords in the user's open journal
    entry. An entry is closed only when IAM holds Keeper's committed password.

So the journal entry is written (step 4) before IAM can change (step 6), and closed (step 8) only after Keeper has
committed (step 7) or IAM was set back. A run that dies anywhere leaves an entry whose lease runs out; the next run
that touches the user (or any scheduled run) recovers it by driving steps 5-8 again with the journal's password.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from botocore.exceptions import BotoCoreError, ClientError

from .binding import duplicate_message, iam_read_stop, names_user
from .iam import IamGateway, IamOutcomeUnknown, IamRefused, IamUser
from .journal import Entry, Journal, JournalError, LeaseHeld, OwnedElsewhere
from .keeper import KeeperFailure, KeeperVault, PamUser
from .passwords import generate_password
from .results import Code, RecordResult, RotationStop, Status, fail, skip
from .sensitive import Secret

log = logging.getLogger(__name__)


class IamHolds(Enum):
    """What the protocol knows about IAM's password when it reaches step 5."""

    KEEPER = "keeper"  # certainly Keeper's committed password: IAM has not been touched
    UNKNOWN = "unknown"  # Keeper's committed password or one of the journal's (a run died or timed out)


@dataclass
class Rotation:
    """The adapters and limits one invocation shares across its records."""

    iam: IamGateway
    vault: KeeperVault
    journal: Journal
    owner: str
    lease_seconds: float
    password_length: int = 32
    commit_attempts: int = 3


def rotate(user: PamUser, target: IamUser, rot: Rotation, dry_run: bool = False) -> RecordResult:
    """Steps 2-8 for one record that step 1 (binding.resolve_target) bound to `target`, and that won any duplicate
    claim on that user; every outcome, including a refusal, comes back as a result."""
    result = RecordResult(user.uid, Status.ROTATED, user_name=target.name, account_id=rot.iam.account_id)
    try:
        require_console_access(target, rot.iam)  # 2
        password = new_password(rot)  # 3
        if dry_run:
            result.status = Status.PLANNED
            return result
        try:
            entry = open_journal(user, target, password, rot)  # 4
        except LeaseHeld:
            entry, passwords, holds = claim_unfinished(user, target, rot)
            result.recovered = True
            if user.password == passwords[-1]:  # Keeper commits only after IAM took it: the dead run got that far
                close_journal(rot, entry, rotated=True)
                return result
        except JournalError as error:
            raise fail(Code.JOURNAL_UNAVAILABLE, f"{error}; nothing was changed") from None
        else:
            passwords, holds = [password], IamHolds.KEEPER
        converge(user, target, entry, passwords, holds, rot)  # 5-8
    except RotationStop as stop:
        result.status, result.code, result.message = stop.status, stop.code, stop.message
    return result


def require_console_access(target: IamUser, iam: IamGateway) -> None:
    """Step 2: only users that already have a console password are rotated; CreateLoginProfile would grant
    console access, which a rotator must never do."""
    try:
        if not iam.has_login_profile(target.name):
            raise skip(Code.NO_LOGIN_PROFILE, "the user has no console password (or does not exist); not creating one")
    except (ClientError, BotoCoreError) as error:
        raise iam_read_stop(error) from None


def new_password(rot: Rotation) -> Secret:
    """Step 3: a password the account's policy accepts (the policy is read once per invocation)."""
    try:
        return generate_password(rot.iam.password_policy, rot.password_length)
    except (ClientError, BotoCoreError) as error:
        raise iam_read_stop(error) from None


def open_journal(user: PamUser, target: IamUser, password: Secret, rot: Rotation) -> Entry:
    """Step 4: journal the password and take the user's lease. The journal remembers which record last rotated the
    user; if that record still names the user, this one is a duplicate (the same rule as within one run)."""
    try:
        return rot.journal.open(target.arn, user.uid, password, rot.owner, rot.lease_seconds)
    except OwnedElsewhere as owned:
        try:
            other = rot.vault.fetch([owned.record_uid]).get(owned.record_uid)
        except KeeperFailure as error:
            raise fail(Code.KEEPER_UNAVAILABLE, f"{error}; nothing was changed") from None
        if other is not None and names_user(other, target):
            raise skip(Code.DUPLICATE_USER, duplicate_message(owned.record_uid, target)) from None
        return rot.journal.open(target.arn, user.uid, password, rot.owner, rot.lease_seconds, adopt=True)


def claim_unfinished(user: PamUser, target: IamUser, rot: Rotation) -> tuple[Entry, list[Secret], IamHolds]:
    """Step 4, when an entry is already open: take it over if its run died (lease expired) and return what it
    holds; a live lease means another invocation is rotating this user right now."""
    try:
        entry = rot.journal.find(target.arn)
        if entry is None or entry.record_uid != user.uid:
            raise skip(Code.LOCKED, _locked_message(entry))
        entry = rot.journal.take_over(entry, rot.owner, rot.lease_seconds)
    except LeaseHeld:
        raise skip(Code.LOCKED, "another invocation is rotating this user now") from None
    except JournalError as error:
        raise fail(Code.JOURNAL_UNAVAILABLE, f"{error}; nothing was changed") from None
    try:
        passwords = rot.journal.passwords(entry)
    except JournalError as error:
        raise fail(Code.JOURNAL_UNREADABLE, f"{error}; the unfinished rotation stays in the journal") from None
    return entry, passwords, IamHolds.UNKNOWN


def converge(
    user: PamUser, target: IamUser, entry: Entry, passwords: list[Secret], holds: IamHolds, rot: Rotation
) -> None:
    """Steps 5-8 for the journal's last password. Safe to repeat: every step re-does or checks, never assumes."""
    password = passwords[-1]
    # 5. Stage in Keeper (a transaction other readers do not see until step 7).
    try:
        rot.vault.stage(user, password, rot.iam.account_id, target.arn)
    except KeeperFailure as error:
        if holds is IamHolds.KEEPER:
            close_journal(rot, entry)
            raise fail(Code.KEEPER_STAGE_FAILED, f"{error}; nothing was changed") from None
        raise fail(Code.PASSWORD_IN_JOURNAL, f"{error}; the journal keeps the password, the next run retries") from None
    # 6. Apply in IAM (again, in a recovery: the dead run may or may not have got that far).
    try:
        rot.iam.set_password(target.name, password)
    except IamOutcomeUnknown as error:
        raise fail(
            Code.IAM_OUTCOME_UNKNOWN, f"IAM did not confirm the change ({error}); the journal keeps the password"
        ) from None
    except IamRefused as error:
        if holds is IamHolds.KEEPER:
            _rollback_keeper(rot, user.uid)
            close_journal(rot, entry)
            raise fail(Code.IAM_UPDATE_REFUSED, f"{error}; Keeper's staged update was rolled back") from None
        retry_with_fresh_password(user, target, entry, passwords, rot, error)
        return
    # 7. Commit in Keeper, or put IAM back.
    if not commit(rot, user.uid, password):
        restore_iam(user, target, entry, password, rot)
    # 8. Close the journal: IAM and Keeper agree.
    close_journal(rot, entry, rotated=True)


def retry_with_fresh_password(
    user: PamUser, target: IamUser, entry: Entry, passwords: list[Secret], rot: Rotation, refusal: IamRefused
) -> None:
    """Recovery only: IAM refused the journal's password, so it may already hold it (PasswordReusePrevention) or
    the policy changed. A third password, journaled next to the others before use, settles it."""
    if len(passwords) > 2:
        raise fail(Code.PASSWORD_IN_JOURNAL, f"IAM refused the recovered passwords ({refusal}); the journal keeps them")
    fresh = [*passwords, new_password(rot)]
    try:
        rot.journal.replace_passwords(entry, fresh)
    except (JournalError, LeaseHeld) as error:
        raise fail(Code.PASSWORD_IN_JOURNAL, f"could not journal a fresh password: {error}") from None
    converge(user, target, entry, fresh, IamHolds.UNKNOWN, rot)


def commit(rot: Rotation, uid: str, password: Secret) -> bool:
    """Step 7: finalize Keeper's staged update, retrying. A lost reply can hide a commit that happened, so a
    failure is confirmed by reading the record back before anyone acts on it."""
    for _ in range(rot.commit_attempts):
        try:
            rot.vault.commit(uid)
            return True
        except KeeperFailure as error:
            log.warning("Keeper commit failed", extra={"record_uid": uid, "error": str(error)})
    try:
        return rot.vault.committed_password(uid) == password
    except KeeperFailure:
        return False


def restore_iam(user: PamUser, target: IamUser, entry: Entry, password: Secret, rot: Rotation) -> None:
    """Keeper would not commit: set IAM back to the password Keeper still holds, then roll Keeper back. Always
    ends the record with a failure; only a restore that worked lets the journal close."""
    try:
        previous = rot.vault.committed_password(user.uid)
    except KeeperFailure as error:
        raise fail(
            Code.PASSWORD_IN_JOURNAL, f"Keeper unreachable after IAM changed ({error}); journal keeps it"
        ) from None
    if previous is None or previous == password:
        raise fail(Code.PASSWORD_IN_JOURNAL, "Keeper would not commit and holds no earlier password to restore")
    try:
        rot.iam.set_password(target.name, previous)
    except (IamRefused, IamOutcomeUnknown) as error:
        raise fail(
            Code.PASSWORD_IN_JOURNAL,
            f"Keeper would not commit and IAM refused the old password ({error}); the journal keeps the new one",
        ) from None
    _rollback_keeper(rot, user.uid)
    close_journal(rot, entry)
    raise fail(Code.KEEPER_COMMIT_FAILED_IAM_RESTORED, "Keeper would not commit; IAM was set back to Keeper's password")


def close_journal(rot: Rotation, entry: Entry, rotated: bool = False) -> None:
    """Step 8. A failure here is harmless: the entry stays open and the next run finds Keeper already agreeing.
    `rotated` records the time of a successful rotation (see due.py)."""
    try:
        rot.journal.close(entry, rotated)
    except (JournalError, LeaseHeld) as error:
        log.warning("could not close the journal entry", extra={"user_arn": entry.user_arn, "error": str(error)})


def _rollback_keeper(rot: Rotation, uid: str) -> None:
    """Drop the staged update; if Keeper is down it stays staged, unseen, and the next stage replaces it."""
    try:
        rot.vault.rollback(uid)
    except KeeperFailure as error:
        log.warning("Keeper rollback failed", extra={"record_uid": uid, "error": str(error)})


def _locked_message(entry: Entry | None) -> str:
    if entry is None:
        return "another rotation of this user just finished; run again"
    return f"the user has an unfinished rotation from record {entry.record_uid}; rotate that record to recover it"
