"""Which AWS account a record's IAM user lives in, and the IAM gateway that may rotate it there: the one place that
decides between the function's own (hub) account, an allowed member account, and an account not allowed.

The hub account is rotated with the execution role. Another account must be listed in TargetAccountIds; its users
are rotated with credentials from sts:AssumeRole on `arn:<partition>:iam::<account>:role/<TargetRoleName>` (the role
`member-account.yaml` creates). The role is assumed once per account per invocation: the gateway keeps the
credentials, the account's password policy and (when a run looks up enough of its users: expect_lookups) its user
directory. A refused AssumeRole is remembered too, so every record of that account fails the same way after one
call, and nothing changes there.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

from .aws import load_secret
from .errors import AWS_ERRORS, RotationHaltedError, SecretUnavailableError, describe_aws_error, fail, skip
from .iam import IamGateway
from .results import Code
from .sensitive import remember
from .settings import Settings

if TYPE_CHECKING:
    from .context import ClientFactory

SESSION_PREFIX: Final = "keeper-iam-rotator-"
SESSION_NAME_MAX: Final = 64  # sts:AssumeRole RoleSessionName: 2-64 characters of [\w+=,.@-]
_NOT_SESSION_CHARS: Final = re.compile(r"[^\w+=,.@-]", re.ASCII)


def account_of(arn: str) -> str:
    """The account field of an ARN (arn:partition:service:region:account:resource); "" for anything else."""
    fields = arn.split(":")
    return fields[4] if len(fields) > 4 else ""


def session_name(record_uid: str) -> str:
    """CloudTrail in the member account shows which record the rotator acted for."""
    return (SESSION_PREFIX + _NOT_SESSION_CHARS.sub("_", record_uid))[:SESSION_NAME_MAX]


def external_id(settings: Settings, clients: ClientFactory) -> str:
    """The ExternalId the member roles require: TARGET_EXTERNAL_ID (the CLI's), else the secret the template keeps it
    in (cached like the KSM config; never in the function's environment); "" when none. Remembered, so no log
    record can carry it (botocore logs AssumeRole's parameters at DEBUG)."""
    value = settings.target_external_id
    if not value and settings.target_external_id_secret:
        secretsmanager = clients("secretsmanager")
        value = load_secret(
            secretsmanager, settings.target_external_id_secret, settings.ksm_config_max_age, "ExternalId secret"
        )
    remember(value, pinned=True)
    return value


def assumed_gateway(assumed: dict[str, Any], clients: ClientFactory, retry_delay: float) -> IamGateway:
    """An IAM gateway acting with a member account's role (`assumed`: the AssumeRole answer). The clients come from
    the process's shared boto3 session, so the service models it has loaded are reused (a new session per account
    would reload them), and the account is known from the role's ARN (no GetCallerIdentity)."""
    credentials, arn = assumed["Credentials"], assumed["AssumedRoleUser"]["Arn"]
    for secret in (credentials["SecretAccessKey"], credentials["SessionToken"]):
        remember(secret)  # masked in every log record from now on, whatever logs it (botocore signs with them)
    keys = {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }
    return IamGateway(
        clients("iam", credentials=keys),
        clients("iam", writes=True, credentials=keys),
        sts=None,
        retry_delay=retry_delay,
        identity={"Account": account_of(arn), "Arn": arn},
    )


class Accounts:
    """One per invocation: the hub's gateway, and one gateway per allowed member account, made on first use. A run
    says how many users it will look up in each account (expect_lookups) and each directory is read when that is
    cheaper than a GetUser per user (IamGateway.read_directory_for)."""

    def __init__(
        self,
        hub: IamGateway,
        sts: Any,
        allowed: Collection[str],
        role_name: str,
        connect: Callable[[dict[str, Any]], IamGateway],  # the AssumeRole answer -> its account's gateway
        external_id: Callable[[], str] = str,  # read on the first AssumeRole ("" when none is required)
    ) -> None:
        self.hub = hub
        self._sts = sts
        self._allowed = frozenset(allowed)
        self._role_name = role_name
        self._connect = connect
        self._external_id = external_id
        self._lookups: Mapping[str, int] = {}
        self._known: dict[str, IamGateway | RotationHaltedError] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def for_settings(cls, hub: IamGateway, clients: ClientFactory, settings: Settings) -> Accounts:
        """The function's own account and the member accounts it may rotate in (TargetAccountIds)."""
        return cls(
            hub,
            clients("sts"),
            settings.target_account_ids,
            settings.target_role_name,
            lambda assumed: assumed_gateway(assumed, clients, settings.retry_delay),
            lambda: external_id(settings, clients),
        )

    def expect_lookups(self, lookups: Mapping[str, int]) -> None:
        """How many users step 1 will look up in each account (account id -> count), said before records run in
        parallel: the hub's directory is read now, a member's right after its AssumeRole, each only when that saves
        calls. Every lookup still gets an ARN IAM returned in this invocation."""
        self._lookups = dict(lookups)
        self._read_directory(self.hub)

    def _read_directory(self, gateway: IamGateway) -> None:
        gateway.read_directory_for(self._lookups.get(gateway.account_id, 0))

    def role_arn(self, account_id: str) -> str:
        return f"arn:{self.hub.partition}:iam::{account_id}:role/{self._role_name}"

    def gateway(self, account_id: str, record_uid: str) -> IamGateway:
        """The gateway for the account; raises the record's halt when the account is not allowed or refused us."""
        if account_id == self.hub.account_id:
            return self.hub
        if account_id not in self._allowed:
            raise skip(
                Code.ACCOUNT_NOT_ALLOWED,
                f"the record names a user of account {account_id}, which is not in TargetAccountIds (the function "
                f"runs in {self.hub.account_id}); nothing was changed",
            )
        with self._guard:
            lock = self._locks.setdefault(account_id, threading.Lock())
        with lock:  # records of one account wait for its single AssumeRole; other accounts proceed
            if account_id not in self._known:
                self._known[account_id] = self._assume(account_id, record_uid)
        known = self._known[account_id]
        if isinstance(known, RotationHaltedError):
            raise RotationHaltedError(known.status, known.code, known.message)
        return known

    def _assume(self, account_id: str, record_uid: str) -> IamGateway | RotationHaltedError:
        role_arn = self.role_arn(account_id)
        try:
            extra = {"ExternalId": known} if (known := self._external_id()) else {}
        except SecretUnavailableError as error:
            return fail(Code.ASSUME_ROLE_FAILED, f"{error}; no role was assumed and nothing was changed")
        try:
            assumed = self._sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name(record_uid), **extra)
        except AWS_ERRORS as error:
            message = f"sts:AssumeRole on {role_arn} failed ({describe_aws_error(error)}); nothing was changed"
            return fail(Code.ASSUME_ROLE_FAILED, message)
        gateway = self._connect(assumed)
        self._read_directory(gateway)
        with suppress(Exception):  # read once here; a failure is left for each record to report on its own
            gateway.password_policy  # noqa: B018 - a cached property: reading it caches it
        return gateway
