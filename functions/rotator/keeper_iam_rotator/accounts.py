"""Which AWS account a record's IAM user lives in, and the IAM gateway that may rotate it there.

The function's own account is rotated with the execution role. Another account must be listed in TargetAccountIds;
its users are rotated with credentials from sts:AssumeRole on `arn:<partition>:iam::<account>:role/<TargetRoleName>`
(the role `member-account.yaml` creates). The role is assumed once per account per invocation: the gateway keeps the
credentials, the account's password policy and (in large runs) its user directory. A refused AssumeRole is
remembered too, so every record of that account fails the same way after one call, and nothing changes there.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection
from contextlib import suppress
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .iam import IamGateway, describe
from .results import Code, RotationStop, fail, skip
from .settings import Settings

SESSION_PREFIX = "keeper-iam-rotator-"
SESSION_NAME_MAX = 64  # sts:AssumeRole RoleSessionName: 2-64 characters of [\w+=,.@-]
_NOT_SESSION_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)


def account_of(arn: str) -> str:
    """The account field of an ARN (arn:partition:service:region:account:resource)."""
    return arn.split(":")[4]


def session_name(record_uid: str) -> str:
    """CloudTrail in the member account shows which record the rotator acted for."""
    return (SESSION_PREFIX + _NOT_SESSION_CHARS.sub("_", record_uid))[:SESSION_NAME_MAX]


def not_allowed(account_id: str, hub_account_id: str) -> RotationStop:
    return skip(
        Code.ACCOUNT_NOT_ALLOWED,
        f"the record names a user of account {account_id}, which is not in TargetAccountIds (the function runs in "
        f"{hub_account_id}); nothing was changed",
    )


def assumed_gateway(assumed: dict[str, Any], reads: Config, writes: Config, retry_delay: float) -> IamGateway:
    """An IAM gateway acting with a member account's role (`assumed`: the AssumeRole answer). The clients come from
    the process's shared boto3 session, so the service models it has loaded are reused (a new session per account
    would reload them), and the account is known from the role's ARN (no GetCallerIdentity)."""
    credentials, arn = assumed["Credentials"], assumed["AssumedRoleUser"]["Arn"]
    keys = {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }
    return IamGateway(
        boto3.client("iam", config=reads, **keys),
        boto3.client("iam", config=writes, **keys),
        sts=None,
        retry_delay=retry_delay,
        identity={"Account": account_of(arn), "Arn": arn},
    )


def for_settings(hub: IamGateway, sts: Any, settings: Settings, reads: Config, writes: Config) -> Accounts:
    """The function's own account and the member accounts it may rotate in (TargetAccountIds)."""
    return Accounts(
        hub,
        sts,
        settings.target_account_ids,
        settings.target_role_name,
        lambda assumed: assumed_gateway(assumed, reads, writes, settings.retry_delay),
        settings.target_external_id,
    )


class Accounts:
    """One per invocation: the hub's gateway, and one gateway per allowed member account, made on first use."""

    def __init__(
        self,
        hub: IamGateway,
        sts: Any,
        allowed: Collection[str],
        role_name: str,
        connect: Callable[[dict[str, Any]], IamGateway],  # the AssumeRole answer -> its account's gateway
        external_id: str = "",
    ) -> None:
        self.hub = hub
        self._sts = sts
        self._allowed = frozenset(allowed)
        self._role_name = role_name
        self._connect = connect
        self._external_id = external_id
        self.list_users = False  # set for large runs: each member account's users are then read in one ListUsers
        self._known: dict[str, IamGateway | RotationStop] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def role_arn(self, account_id: str) -> str:
        return f"arn:{self.hub.partition}:iam::{account_id}:role/{self._role_name}"

    def gateway(self, account_id: str, record_uid: str) -> IamGateway:
        """The gateway for the account; raises the record's stop when the account is not allowed or refused us."""
        if account_id == self.hub.account_id:
            return self.hub
        if account_id not in self._allowed:
            raise not_allowed(account_id, self.hub.account_id)
        with self._guard:
            lock = self._locks.setdefault(account_id, threading.Lock())
        with lock:  # records of one account wait for its single AssumeRole; other accounts proceed
            if account_id not in self._known:
                self._known[account_id] = self._assume(account_id, record_uid)
        known = self._known[account_id]
        if isinstance(known, RotationStop):
            raise RotationStop(known.status, known.code, known.message)
        return known

    def _assume(self, account_id: str, record_uid: str) -> IamGateway | RotationStop:
        role_arn = self.role_arn(account_id)
        extra = {"ExternalId": self._external_id} if self._external_id else {}
        try:
            assumed = self._sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name(record_uid), **extra)
        except (ClientError, BotoCoreError) as error:
            message = f"sts:AssumeRole on {role_arn} failed ({describe(error)}); nothing was changed"
            return fail(Code.ASSUME_ROLE_FAILED, message)
        gateway = self._connect(assumed)
        if self.list_users:
            gateway.list_users()
        with suppress(Exception):  # read once here; a failure is left for each record to report on its own
            gateway.password_policy  # noqa: B018 - a cached property: reading it caches it
        return gateway
