"""Step 1 of a rotation: which IAM user a PAM User record names, whether this run may rotate it, and which record
owns a user that several records name.

Keeper uses the pamUser record type for Active Directory, Linux/SSH and database accounts as well, so a `login` that
happens to equal an IAM user name proves nothing. The rules:

- *Bound*: distinguishedName is an IAM user ARN and IAM returns exactly that ARN (path included) for the user.
- *Another system's*: distinguishedName is anything else (an LDAP DN, a host): never touched (`not_iam_record`).
- *Unbound*: no distinguishedName, only a login. Rotated only when someone allowed to bind vouched for it: a request
  that asks to bind (`"bind": true`: a direct invoke, an API caller on BindCallerArns, the CLI's `rotate --bind`), a
  folder declared AWS-only (ROTATION_FOLDER_UIDS). The rotation then binds it by writing the ARN IAM returned.
- *Unfinished*: a record whose rotation a dead run left open in the journal is bound to the user the journal entry
  names, in the account it names (bind_unfinished), never to the user the record names now: recovery finishes that
  user's rotation, or reports the password the journal holds, and touches no other user.

Every ARN used afterwards (duplicate claims, the journal key) is the one IAM returned, never one built from the record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

from .accounts import Accounts, account_of
from .devices import Devices
from .errors import (
    AWS_ERRORS,
    AwsErrorCode,
    RotationHaltedError,
    describe_aws_error,
    fail,
    is_aws_error,
    skip,
)
from .iam import IamGateway, IamUser
from .keeper import PamUser, RecordType
from .keeperpam import require_not_keeperpam
from .results import Code

# arn:<partition>:iam::<account>:user<path><name>; IAM paths are "/" or "/.../", names [\w+=,.@-]{1,64}.
IAM_USER_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):user(?P<path>/(?:[\x21-\x7e]*/)?)(?P<name>[\w+=,.@-]{1,64})",
    re.ASCII,
)
HOW_TO_BIND: Final = (
    "it has a login but no distinguishedName, so nothing proves it is an AWS account (pamUser records also hold "
    "AD, Linux and database accounts); bind it by setting distinguishedName to the user's ARN, by rotating it once "
    'with "bind": true (CLI: rotate --bind), or list its shared folder in ROTATION_FOLDER_UIDS'
)


@dataclass(frozen=True)
class Vouched:
    """What lets a run rotate an unbound record: a caller allowed to bind asked to, or its folder."""

    explicit: bool  # always stated: an operator naming the record is what vouches for most unbound records
    folder_uids: Collection[str] = ()

    def covers(self, user: PamUser) -> bool:
        return self.explicit or bool(user.folder_uids & set(self.folder_uids))


@dataclass(frozen=True)
class Claim:
    """A record bound to the IAM user it will rotate (step 1 done), with the gateway of that user's account."""

    user: PamUser
    target: IamUser
    iam: IamGateway

    @property
    def account_id(self) -> str:
        return account_of(self.target.arn)


def target_account(user: PamUser, hub_account_id: str) -> str:
    """The account a record's result reports: the one its distinguishedName's IAM ARN names, else the hub (a login
    alone always means the function's own account; a record that names no IAM user was looked at from there)."""
    arn = IAM_USER_ARN.fullmatch(user.distinguished_name)
    return arn["account"] if arn else hub_account_id


def bind(user: PamUser, accounts: Accounts, vouched: Vouched) -> Claim:
    """Step 1: the IAM user this record is bound to (or may be bound to now), checked against IAM itself in the
    account `accounts` decides on."""
    if user.type != RecordType.PAM_USER:
        raise skip(Code.NOT_PAM_USER, f"record type is {user.type or 'unknown'!r}, not {str(RecordType.PAM_USER)!r}")
    require_not_keeperpam(user)
    dn = user.distinguished_name
    arn = IAM_USER_ARN.fullmatch(dn)
    if dn and arn is None:
        raise skip(
            Code.NOT_IAM_RECORD,
            "distinguishedName is not an IAM user ARN, so the record belongs to another system (AD, Linux, a "
            "database); nothing was changed",
        )
    if not user.editable:
        raise skip(Code.RECORD_NOT_EDITABLE, "the KSM application may read this record but not edit it")
    if arn is not None:
        iam = accounts.gateway(arn["account"], user.uid)
        return Claim(user, _bound(dn, arn, iam), iam)
    if not user.login:
        raise skip(Code.MISSING_LOGIN, "the record has neither a login (the IAM user name) nor a distinguishedName")
    if not vouched.covers(user):
        raise skip(Code.NOT_BOUND, HOW_TO_BIND)
    real_arn = _lookup(accounts.hub, user.login)
    if real_arn is None:
        raise skip(Code.IAM_USER_NOT_FOUND, f"IAM has no user named {user.login!r}")
    return Claim(user, IamUser(name=user.login, arn=real_arn), accounts.hub)


def bind_unfinished(user: PamUser, user_arn: str, accounts: Accounts) -> Claim:
    """Step 1 for a record whose rotation of `user_arn` a dead run left open: the journal's user, in the journal's
    account, provided the record still names that user and IAM still has it. Anything else fails the record with
    `password_in_journal` (RecoveryRequired): the journal keeps the password IAM may hold, and no other user is
    rotated in its place."""
    arn = IAM_USER_ARN.fullmatch(user_arn)
    hub = accounts.hub.account_id
    names = arn is not None and names_user(user, IamUser(arn["name"], user_arn))
    if arn is None or not names or (not user.distinguished_name and arn["account"] != hub) or not user.editable:
        raise _stranded(user_arn, "the record no longer names that user (or may not be edited)")
    try:
        iam = accounts.gateway(arn["account"], user.uid)
        real_arn = _lookup(iam, arn["name"])
    except RotationHaltedError as halt:  # the account left TargetAccountIds, AssumeRole or the IAM read failed
        raise _stranded(user_arn, halt.message) from None
    if real_arn != user_arn:
        raise _stranded(user_arn, f"IAM's user {arn['name']!r} is now {real_arn or 'gone'}")
    return Claim(user, IamUser(name=arn["name"], arn=user_arn), iam)


def _stranded(user_arn: str, why: str) -> RotationHaltedError:
    return fail(
        Code.PASSWORD_IN_JOURNAL,
        f"the journal holds an unfinished rotation of {user_arn} from this record, but {why}; the journal keeps the "
        "password IAM may hold and no other user was changed: point the record back at that user, or recover it by "
        "hand (README: Failure modes)",
    )


def _bound(dn: str, arn: re.Match[str], iam: IamGateway) -> IamUser:
    real_arn = _lookup(iam, arn["name"])
    if real_arn is None:
        raise skip(Code.IAM_USER_NOT_FOUND, f"IAM has no user named {arn['name']!r} (distinguishedName {dn})")
    if real_arn != dn:
        raise skip(Code.ARN_MISMATCH, f"distinguishedName is {dn}, but IAM's user {arn['name']!r} is {real_arn}")
    return IamUser(name=arn["name"], arn=real_arn)


def _lookup(iam: IamGateway, name: str) -> str | None:
    try:
        return iam.user_arn_of(name)
    except AWS_ERRORS as error:
        raise iam_read_halt(error) from None


def names_user(other: PamUser, target: IamUser) -> bool:
    """Whether another record claims the same IAM user: by its ARN, or by its login when it holds no
    distinguishedName. A record of another system (any other distinguishedName) claims no IAM user."""
    if other.type != RecordType.PAM_USER:
        return False
    if other.distinguished_name:
        return other.distinguished_name == target.arn
    return other.login == target.name


def rightful_owner(claimants: Sequence[str], journal_owner: str | None, owner_still_names: Callable[[], bool]) -> str:
    """The duplicate rule, applied when a run settles its claims and again when the journal refuses a record: the
    record the journal names as the user's last rotator keeps the user while it still names it; otherwise the first
    claimant (in Keeper's or the request's order) takes it."""
    if journal_owner is not None and (journal_owner in claimants or owner_still_names()):
        return journal_owner
    return claimants[0]


def settle_duplicates(
    claims: Sequence[Claim], journal_owner: Callable[[str], str | None], still_names: Callable[[str, IamUser], bool]
) -> dict[str, str]:
    """One record per IAM user, decided before records run in parallel so the outcome never depends on thread timing.
    Returns each losing record's uid -> the owner's. The journal (`journal_owner(arn)`) and Keeper (`still_names`)
    are asked only about contested users."""
    contenders: dict[str, list[Claim]] = {}
    for claim in claims:
        contenders.setdefault(claim.target.arn, []).append(claim)
    losers: dict[str, str] = {}
    for contested in contenders.values():
        if len(contested) > 1:
            winner = _owner_of_contested(contested, journal_owner, still_names)
            losers |= {claim.user.uid: winner for claim in contested if claim.user.uid != winner}
    return losers


def _owner_of_contested(
    contested: Sequence[Claim], journal_owner: Callable[[str], str | None], still_names: Callable[[str, IamUser], bool]
) -> str:
    target = contested[0].target
    owner = journal_owner(target.arn)
    return rightful_owner(
        [claim.user.uid for claim in contested], owner, lambda: owner is not None and still_names(owner, target)
    )


def duplicate_halt(owner_uid: str, target: IamUser) -> RotationHaltedError:
    return skip(
        Code.DUPLICATE_USER, f"record {owner_uid} also manages {target.arn}; keep one PAM User record per IAM user"
    )


def iam_read_halt(error: BaseException) -> RotationHaltedError:
    """An IAM read failed before anything changed: denied means out of the function's scope, else retry later."""
    if is_aws_error(error, AwsErrorCode.ACCESS_DENIED, AwsErrorCode.ACCESS_DENIED_EXCEPTION):
        return skip(
            Code.IAM_ACCESS_DENIED,
            f"{describe_aws_error(error)} (the user is outside the function's RotatableUserPath or lacks the "
            "required tag)",
        )
    return fail(Code.IAM_ERROR, f"{describe_aws_error(error)}; nothing was changed")


def still_names(vault: Devices, record_uid: str, target: IamUser) -> bool:
    """Whether the record (read from Keeper now) still names the user; KeeperCallError when Keeper cannot say."""
    other = vault.fetch([record_uid]).get(record_uid)
    return other is not None and names_user(other, target)
