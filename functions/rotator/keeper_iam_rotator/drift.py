"""Drift: a bound user's console password changed outside the rotator, so Keeper's record no longer holds the
password that works. Two ways to learn of it: CloudTrail's event for the change (this module, Trigger.DRIFT) and the
scheduled run's reconcile against IAM's credential report (reconcile.py). The answer is DRIFT_ACTION's: `rotate`
the record at once through the normal protocol, or `alert` only; either way the result says `drift` and the metric
DriftDetected counts it.

What an event can make the rotator do, at most: rotate earlier than due a record it already rotates. The record is
the one the journal names as the user's last rotator (the rotator's own memory; the event names no record and is not
asked to), and only while that record still names the user by ARN, is in the schedule's scope, and its account is
allowed. A user no such record names is reported and left alone; nothing is ever bound because of an event.

A change is settled (the rotation's own, or one the rotation overwrote) when it is no later than the moment IAM
took the rotator's last password, which the journal keeps (`password_set`: when that UpdateLoginProfile was sent and
answered), plus SKEW_SECONDS: CloudTrail's and the credential report's times are whole seconds. It is never judged
against the journal's close, which comes after Keeper's commit: a change made during the commit is drift. The window
also recognises the rotator's own change when it acted with other credentials (the CLI's local `rotate`, whose
events carry the operator's identity). A real change within those seconds of the rotator's is missed; items written
before the journal kept `password_set` use their close time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from .accounts import account_of
from .binding import iam_read_halt
from .cloudtrail import PasswordCall, PasswordChange
from .errors import AWS_ERRORS, JournalTamperedError, JournalUnavailableError, RotationHaltedError, fail, skip
from .iam import IamUser
from .journal import Entry
from .keeper import PamUser
from .keeperpam import opted_in, rotates
from .results import WHOLE_RUN, Code, RecordResult, Status
from .settings import DriftAction

if TYPE_CHECKING:
    from .context import RunContext
    from .planner import Work

SKEW_SECONDS: Final = 2.0
ASSUMED_ROLE: Final = re.compile(r"arn:[\w-]+:sts::(\d{12}):assumed-role/([^/]+)/.+")
ROLE: Final = re.compile(r"arn:[\w-]+:iam::(\d{12}):role/(?:.*/)?([^/]+)")
Findings = dict[str, "Finding"]


@dataclass(frozen=True)
class Finding:
    """What was seen of one record's user: a password changed elsewhere, or console access removed."""

    seen: str  # e.g. "UpdateLoginProfile by arn:aws:sts::...:assumed-role/Admin/jdoe at 2026-11-27T10:00:00Z"
    console_removed: bool = False


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def described(change: PasswordChange) -> str:
    return f"{change.call} by {change.caller or 'an unknown caller'} at {when(change.at)}"


def settled(changed_at: float, last: Entry) -> bool:
    """The change is the last rotation's own, or that rotation overwrote it (see the module docstring)."""
    took = last.password_set[1] if last.password_set else last.rotated_at
    return bool(took) and changed_at <= took + SKEW_SECONDS


def annotate(result: RecordResult, finding: Finding | None) -> RecordResult:
    """The result of a record that drifted: rotated ones say `drift`, the others keep their code and say why."""
    if finding is None or result.drift:
        return result
    result.drift = True
    if result.status in {Status.ROTATED, Status.PLANNED}:
        done = "rotated" if result.status is Status.ROTATED else "dry run: it would be rotated"
        result.code, result.message = Code.DRIFT, f"{finding.seen}; {done}, so Keeper holds the working password again"
    else:
        result.message = f"{finding.seen}; {result.message or result.code}"
    return result


def unrotated(user: PamUser, target: IamUser, finding: Finding) -> RecordResult:
    """The result of a drifted record that is not rotated: DriftAction=alert, or console access is gone."""
    if finding.console_removed:
        code, why = Code.NO_LOGIN_PROFILE, "Keeper's password no longer signs in; no login profile is ever created"
    else:
        code, why = Code.DRIFT, "DriftAction=alert: not rotated, so Keeper's password may not work"
    message = f"{finding.seen}; {why}; nothing was changed"
    return RecordResult(user.uid, Status.SKIPPED, target.name, account_of(target.arn), code, message, drift=True)


def plan_change(context: RunContext) -> tuple[list[Work], Findings]:
    """Trigger.DRIFT: the record to rotate (with its finding), or the one result that says why nothing changes."""
    change = context.request.change
    if change is None:
        raise ValueError("a drift request carries its password change")
    try:
        target, owner = _changed_user(context, change)
    except RotationHaltedError as halt:
        return [_refused(WHOLE_RUN, change, halt)], {}
    try:
        user = _owner_record(context, target, owner)
    except RotationHaltedError as halt:
        return [_refused(owner, change, halt)], {}
    finding = Finding(described(change), console_removed=change.call is PasswordCall.DELETE_LOGIN_PROFILE)
    if finding.console_removed or context.settings.drift_action is DriftAction.ALERT:
        return [unrotated(user, target, finding)], {}
    return [user], {user.uid: finding}


def _refused(uid: str, change: PasswordChange, halt: RotationHaltedError) -> RecordResult:
    return RecordResult(uid, halt.status, change.user_name, change.account_id, halt.code, halt.message)


def _changed_user(context: RunContext, change: PasswordChange) -> tuple[IamUser, str]:
    """The changed user as IAM names it, and the record the journal says rotated him last (if that was before the
    change)."""
    if _made_by_rotator(context, change):
        raise skip(Code.NO_DRIFT, f"{described(change)}: the rotator's own role made it; nothing to do")
    gateway = context.accounts().gateway(change.account_id, f"event-{change.event_id}")
    try:
        arn = gateway.user_arn_of(change.user_name)
    except AWS_ERRORS as error:
        raise iam_read_halt(error) from None
    if arn is None:
        raise skip(Code.IAM_USER_NOT_FOUND, f"IAM has no user named {change.user_name!r} now; nothing was changed")
    try:
        last = context.journal.latest(arn)
    except JournalUnavailableError as error:
        raise fail(Code.JOURNAL_UNAVAILABLE, f"{error}; nothing was changed") from None
    except JournalTamperedError as tampered:  # an item someone else wrote cannot say which record owns the user
        raise fail(Code.JOURNAL_TAMPERED, str(tampered)) from None
    if last is None:
        raise skip(
            Code.NOT_MANAGED,
            f"{described(change)}: no record of this rotator manages {arn} (the journal holds no rotation of it); "
            "nothing was changed. A bound record this rotator never rotated is due at the next scheduled run",
        )
    if settled(change.at, last):
        raise skip(Code.NO_DRIFT, f"{described(change)}: the rotator's password reached IAM after it; nothing to do")
    return IamUser(change.user_name, arn), last.record_uid


def _made_by_rotator(context: RunContext, change: PasswordChange) -> bool:
    """The call came from the function's own role, or from its role in a member account (defence in depth: the
    EventBridge rules already leave these out)."""
    issuer = ROLE.fullmatch(change.issuer)
    if issuer is None:
        return False
    account, role = issuer.groups()
    settings = context.settings
    if account in settings.target_account_ids and role == settings.target_role_name:
        return True
    own = ASSUMED_ROLE.fullmatch(str(context.hub.identity.get("Arn", "")))
    return own is not None and own.groups() == (account, role)


def _owner_record(context: RunContext, target: IamUser, uid: str) -> PamUser:
    """The journal's record, read from Keeper now: it must still name the user by ARN and be in the schedule's
    scope; a record KeeperPAM rotates changes its password by design."""
    user = context.vault.fetch([uid], links=True).get(uid)
    if user is None or user.distinguished_name != target.arn:
        raise skip(
            Code.NOT_MANAGED,
            f"record {uid} rotated {target.arn} last, but no longer names it by ARN (or is no longer shared with the "
            "KSM application); nothing was changed",
        )
    folders = set(context.settings.folder_uids)
    if folders and not user.folder_uids & folders:
        raise skip(
            Code.NOT_MANAGED,
            "the record is outside ROTATION_FOLDER_UIDS (the scheduled run's scope); nothing was changed",
        )
    if rotates(user) and not opted_in(user):
        raise skip(
            Code.MANAGED_BY_KEEPERPAM,
            "KeeperPAM rotates this record itself: its changes are expected; nothing was changed",
        )
    return user
