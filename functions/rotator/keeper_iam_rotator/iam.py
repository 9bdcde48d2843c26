"""IAM adapter: the four calls rotation needs, with their failure modes made explicit.

UpdateLoginProfile is sent by a client without botocore retries: a retried request whose first attempt may already
have landed can be refused (e.g. by PasswordReusePrevention) even though IAM took the password, so this module does
its own retries and reports "outcome unknown" instead of a refusal whenever an earlier attempt might have applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

from .passwords import PasswordPolicy
from .sensitive import Secret

RETRYABLE_CODES = frozenset({"EntityTemporarilyUnmodifiable", "Throttling", "ThrottlingException", "ServiceFailure"})
log = logging.getLogger(__name__)
NOT_SENT = (EndpointConnectionError, ConnectTimeoutError)  # the request never reached IAM


@dataclass(frozen=True)
class IamUser:
    name: str
    arn: str


class IamRefused(Exception):
    """IAM answered and did not change the password."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class IamOutcomeUnknown(Exception):
    """IAM may or may not have changed the password (timeout, dropped connection, server error)."""


def error_code(error: Exception) -> str:
    if not isinstance(error, ClientError):
        return type(error).__name__
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def describe(error: Exception) -> str:
    """AWS's error code and message (never request parameters), or the exception's type for transport errors."""
    if not isinstance(error, ClientError):
        return type(error).__name__
    detail = error.response.get("Error", {})
    return f"{detail.get('Code', 'Unknown')}: {detail.get('Message', '')}".strip()


class IamGateway:
    """One per invocation: caches the account id and password policy it reads (each read once)."""

    def __init__(
        self,
        iam: Any,
        iam_writer: Any,
        sts: Any,
        attempts: int = 5,
        retry_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._iam = iam
        self._writer = iam_writer
        self._sts = sts
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._sleep = sleep
        self._directory: dict[str, str] = {}

    @cached_property
    def _caller(self) -> dict[str, Any]:
        return self._sts.get_caller_identity()

    @property
    def account_id(self) -> str:
        return str(self._caller["Account"])

    @cached_property
    def password_policy(self) -> PasswordPolicy:
        try:
            return PasswordPolicy.from_iam(self._iam.get_account_password_policy()["PasswordPolicy"])
        except ClientError as error:
            if error_code(error) == "NoSuchEntity":
                return PasswordPolicy()
            raise

    def list_users(self) -> None:
        """Read every user's ARN at once (ListUsers, 1,000 per page), so a large run verifies its records' bindings
        without a GetUser each. A failure only costs that saving: lookups fall back to GetUser."""
        try:
            pages = self._iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 1000})
            self._directory = {user["UserName"]: str(user["Arn"]) for page in pages for user in page["Users"]}
        except (ClientError, BotoCoreError) as error:
            log.warning("ListUsers failed; verifying each user with GetUser", extra={"error": describe(error)})

    def user_arn_of(self, user_name: str) -> str | None:
        """The user's real ARN (with its path), or None when no such user exists."""
        if user_name in self._directory:
            return self._directory[user_name]
        try:
            return str(self._iam.get_user(UserName=user_name)["User"]["Arn"])
        except ClientError as error:
            if error_code(error) == "NoSuchEntity":
                return None
            raise

    def has_login_profile(self, user_name: str) -> bool:
        """False when the user has no console password (or does not exist); other errors propagate."""
        try:
            self._iam.get_login_profile(UserName=user_name)
        except ClientError as error:
            if error_code(error) == "NoSuchEntity":
                return False
            raise
        return True

    def set_password(self, user_name: str, password: Secret) -> None:
        """UpdateLoginProfile with PasswordResetRequired=False (a required reset would make it single-use).

        Raises IamRefused when IAM certainly kept the old password, IamOutcomeUnknown when it may not have.
        """
        maybe_applied = False
        for attempt in range(self._attempts):
            last = attempt == self._attempts - 1
            try:
                self._writer.update_login_profile(
                    UserName=user_name, Password=password.reveal(), PasswordResetRequired=False
                )
                return
            except ClientError as error:
                status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                maybe_applied = maybe_applied or status >= 500
                if (error_code(error) not in RETRYABLE_CODES and status < 500) or last:
                    if maybe_applied:
                        raise IamOutcomeUnknown(describe(error)) from None
                    raise IamRefused(error_code(error), describe(error)) from None
            except NOT_SENT as error:
                if last:
                    if maybe_applied:
                        raise IamOutcomeUnknown(type(error).__name__) from None
                    raise IamRefused("EndpointUnreachable", f"IAM unreachable: {type(error).__name__}") from None
            except Exception as error:  # read timeout, reset connection: the request may have landed
                maybe_applied = True
                if last:
                    raise IamOutcomeUnknown(type(error).__name__) from None
            self._sleep(self._retry_delay * 2**attempt)
