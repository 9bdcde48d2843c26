"""Step 1 of a rotation: which IAM user a PAM User record names, and whether this run may rotate it.

Keeper uses the pamUser record type for Active Directory, Linux/SSH and database accounts as well, so a `login` that
happens to equal an IAM user name proves nothing. The rules:

- *Bound*: distinguishedName is an IAM user ARN and IAM returns exactly that ARN (path included) for the user.
- *Another system's*: distinguishedName is anything else (an LDAP DN, a host): never touched (`not_iam_record`).
- *Unbound*: no distinguishedName, only a login. Rotated only when an operator vouched for it: an explicit request
  (API, direct invoke, CLI), a folder declared AWS-only (ROTATION_FOLDER_UIDS), or an unfinished rotation the journal
  holds for it. The rotation then binds it by writing the ARN IAM returned.

Every ARN used afterwards (duplicate claims, the journal key) is the one IAM returned, never one built from the record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from .iam import IamGateway, IamUser, describe, error_code
from .keeper import PamUser
from .results import Code, RotationStop, fail, skip

# arn:<partition>:iam::<account>:user<path><name>; IAM paths are "/" or "/.../", names [\w+=,.@-]{1,64}.
IAM_USER_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):user(?P<path>/(?:[\x21-\x7e]*/)?)(?P<name>[\w+=,.@-]{1,64})",
    re.ASCII,
)
HOW_TO_BIND = (
    "it has a login but no distinguishedName, so nothing proves it is an AWS account (pamUser records also hold "
    "AD, Linux and database accounts); bind it by setting distinguishedName to the user's ARN, by rotating it once "
    "on request (API, invoke or CLI), or list its shared folder in ROTATION_FOLDER_UIDS"
)


@dataclass(frozen=True)
class Vouched:
    """What lets a run rotate an unbound record: the operator named it, its folder, or the journal's open entry."""

    explicit: bool = False
    folder_uids: Collection[str] = ()
    unfinished_record_uids: Collection[str] = ()

    def covers(self, user: PamUser) -> bool:
        return (
            self.explicit or bool(user.folder_uids & set(self.folder_uids)) or user.uid in self.unfinished_record_uids
        )


def resolve_target(user: PamUser, iam: IamGateway, vouched: Vouched) -> IamUser:
    """Step 1: the IAM user this record is bound to (or may be bound to now), checked against IAM itself."""
    if user.type != "pamUser":
        raise skip(Code.NOT_PAM_USER, f"record type is {user.type or 'unknown'!r}, not 'pamUser'")
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
        return _bound(dn, arn, iam)
    if not user.login:
        raise skip(Code.MISSING_LOGIN, "the record has neither a login (the IAM user name) nor a distinguishedName")
    if not vouched.covers(user):
        raise skip(Code.NOT_BOUND, HOW_TO_BIND)
    real_arn = _lookup(iam, user.login)
    if real_arn is None:
        raise skip(Code.IAM_USER_NOT_FOUND, f"IAM has no user named {user.login!r}")
    return IamUser(name=user.login, arn=real_arn)


def _bound(dn: str, arn: re.Match[str], iam: IamGateway) -> IamUser:
    if arn["account"] != iam.account_id:
        raise skip(
            Code.CROSS_ACCOUNT_UNSUPPORTED,
            f"distinguishedName names account {arn['account']}, this function runs in {iam.account_id}; "
            "cross-account rotation is not supported yet",
        )
    real_arn = _lookup(iam, arn["name"])
    if real_arn is None:
        raise skip(Code.IAM_USER_NOT_FOUND, f"IAM has no user named {arn['name']!r} (distinguishedName {dn})")
    if real_arn != dn:
        raise skip(Code.ARN_MISMATCH, f"distinguishedName is {dn}, but IAM's user {arn['name']!r} is {real_arn}")
    return IamUser(name=arn["name"], arn=real_arn)


def _lookup(iam: IamGateway, name: str) -> str | None:
    try:
        return iam.user_arn_of(name)
    except (ClientError, BotoCoreError) as error:
        raise iam_read_stop(error) from None


def names_user(other: PamUser, target: IamUser) -> bool:
    """Whether another record claims the same IAM user: by its ARN, or by its login when it holds no
    distinguishedName. A record of another system (any other distinguishedName) claims no IAM user."""
    if other.type != "pamUser":
        return False
    if other.distinguished_name:
        return other.distinguished_name == target.arn
    return other.login == target.name


def settle_duplicates(claims: list[tuple[PamUser, IamUser]], owner_of: Callable[[str], str | None]) -> dict[str, str]:
    """One record per IAM user, decided before records run in parallel so the outcome never depends on thread timing:
    the record the journal names as the user's owner wins, else the first in Keeper's (or the request's) order.
    Returns each losing record's uid -> the winner's. `owner_of` is asked only about contested users."""
    contenders: dict[str, list[str]] = {}
    for user, target in claims:
        contenders.setdefault(target.arn, []).append(user.uid)
    losers: dict[str, str] = {}
    for arn, uids in contenders.items():
        if len(uids) > 1:
            owner = owner_of(arn)
            winner = owner if owner in uids else uids[0]
            losers |= {uid: winner for uid in uids if uid != winner}
    return losers


def duplicate_message(other_uid: str, target: IamUser) -> str:
    return f"record {other_uid} also manages {target.arn}; keep one PAM User record per IAM user"


def iam_read_stop(error: ClientError | BotoCoreError) -> RotationStop:
    """An IAM read failed before anything changed: denied means out of the function's scope, else retry later."""
    if error_code(error) in {"AccessDenied", "AccessDeniedException"}:
        return skip(
            Code.IAM_ACCESS_DENIED,
            f"{describe(error)} (the user is outside the function's RotatableUserPath or lacks the required tag)",
        )
    return fail(Code.IAM_ERROR, f"{describe(error)}; nothing was changed")
