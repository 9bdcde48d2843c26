"""IAM adapter: the calls rotation needs, with their failure modes made explicit, and the credential report the
drift reconcile reads.

UpdateLoginProfile is sent by a client without botocore retries: a retried request whose first attempt may already
have landed can be refused (e.g. by PasswordReusePrevention) even though IAM took the password, so this module does
its own retries and reports "outcome unknown" instead of a refusal whenever an earlier attempt might have applied.

Binding (step 1) asks IAM for each record's user ARN: a GetUser per user, or the account's directory read with
ListUsers when that takes fewer calls (read_directory_for). Either way the ARN is one IAM returned in this invocation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Final

from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

from .errors import (
    AWS_ERRORS,
    AwsErrorCode,
    IamOutcomeUnknownError,
    IamRefusedError,
    aws_error_code,
    describe_aws_error,
    is_aws_error,
)
from .passwords import PasswordPolicy
from .sensitive import Secret

RETRYABLE_CODES = frozenset({"EntityTemporarilyUnmodifiable", "Throttling", "ThrottlingException", "ServiceFailure"})
log = logging.getLogger(__name__)
NOT_SENT = (EndpointConnectionError, ConnectTimeoutError)  # the request never reached IAM
LIST_USERS_PAGE: Final = 1000  # ListUsers' largest page (MaxItems)

# account id -> how many ListUsers pages its directory took when this process (a warm container) last read it all,
# or, when a read stopped at its budget, one more than it read (a lower bound). A cost estimate, nothing more: it
# decides whether a run lists the directory, never what a lookup answers (the directory itself is never kept
# from one invocation to the next).
_directory_pages: dict[str, int] = {}


@dataclass(frozen=True)
class IamUser:
    name: str
    arn: str


class IamGateway:
    """One per invocation: caches the account id, password policy and directory it reads (each read once)."""

    def __init__(
        self,
        iam: Any,
        iam_writer: Any,
        sts: Any,
        attempts: int = 5,
        retry_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self._iam = iam
        self._writer = iam_writer
        self._sts = sts
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._sleep = sleep
        self._directory: dict[str, str] = {}
        self._identity = identity  # known already (an assumed role's account): no GetCallerIdentity

    @cached_property
    def identity(self) -> dict[str, Any]:
        """Who this gateway acts as (`Account`, `Arn`): STS GetCallerIdentity once, unless known already."""
        return self._identity or dict(self._sts.get_caller_identity())

    @property
    def account_id(self) -> str:
        return str(self.identity["Account"])

    @property
    def partition(self) -> str:
        """aws, aws-cn, aws-us-gov: member accounts' role ARNs are built in the caller's partition."""
        return str(self.identity["Arn"]).split(":")[1]

    @cached_property
    def password_policy(self) -> PasswordPolicy:
        try:
            return PasswordPolicy.from_iam(self._iam.get_account_password_policy()["PasswordPolicy"])
        except ClientError as error:
            if is_aws_error(error, AwsErrorCode.NO_SUCH_ENTITY):
                return PasswordPolicy()
            raise

    def read_directory_for(self, lookups: int) -> None:
        """Before `lookups` calls of user_arn_of in this invocation: read the account's directory when that takes
        fewer calls than a GetUser per lookup. A directory of unknown size is taken to fit one page (1,000 users);
        the read stops after `lookups - 1` pages, so it never costs more calls than the GetUsers it replaces (users
        it did not reach are still looked up with GetUser, once for each account per warm container: then its page
        count is known, and a run with fewer lookups than that does not list it). One lookup is always a GetUser:
        as cheap as a page, and IAM checks the scope tag on it too (ListUsers names users without their tags; the
        tag is checked by IAM on GetLoginProfile, step 2, before anything changes)."""
        if lookups > _directory_pages.get(self.account_id, 1):
            self.list_users(max_pages=lookups - 1)

    def list_users(self, max_pages: int | None = None) -> None:
        """Read users' ARNs (ListUsers, LIST_USERS_PAGE per page; all of them, or up to `max_pages` pages), so the
        run verifies its records' bindings without a GetUser each. Every page read is kept, a failure only costs
        the rest of that saving: user_arn_of falls back to GetUser for any user it did not list."""
        pages = 0
        try:
            paginator = self._iam.get_paginator("list_users")
            for page in paginator.paginate(PaginationConfig={"PageSize": LIST_USERS_PAGE}):
                pages += 1
                self._directory.update({user["UserName"]: str(user["Arn"]) for user in page["Users"]})
                if max_pages is not None and pages >= max_pages and page.get("IsTruncated"):
                    pages += 1  # at least one more page: what the next run's estimate needs
                    break
        except AWS_ERRORS as error:
            log.warning(
                "ListUsers failed; verifying each user with GetUser", extra={"error": describe_aws_error(error)}
            )
            return
        _directory_pages[self.account_id] = pages

    def user_arn_of(self, user_name: str) -> str | None:
        """The user's real ARN (with its path), or None when no such user exists: from the directory this
        invocation read (list_users), else GetUser (a user the directory lacks may have been created since)."""
        if user_name in self._directory:
            return self._directory[user_name]
        try:
            return str(self._iam.get_user(UserName=user_name)["User"]["Arn"])
        except ClientError as error:
            if is_aws_error(error, AwsErrorCode.NO_SUCH_ENTITY):
                return None
            raise

    def generate_credential_report(self) -> str:
        """GenerateCredentialReport: COMPLETE when a report at most 4 hours old exists (IAM then makes no new one),
        else STARTED or INPROGRESS."""
        return str(self._iam.generate_credential_report()["State"])

    def credential_report(self) -> tuple[bytes, datetime]:
        """GetCredentialReport: the CSV and when IAM generated it (ReportInProgress, ReportExpired, ReportNotPresent
        as AWS errors)."""
        report = self._iam.get_credential_report()
        return bytes(report["Content"]), report["GeneratedTime"]

    def has_login_profile(self, user_name: str) -> bool:
        """False when the user has no console password (or does not exist); other errors propagate."""
        try:
            self._iam.get_login_profile(UserName=user_name)
        except ClientError as error:
            if is_aws_error(error, AwsErrorCode.NO_SUCH_ENTITY):
                return False
            raise
        return True

    def set_password(self, user_name: str, password: Secret) -> None:
        """UpdateLoginProfile with PasswordResetRequired=False (a required reset would make it single-use).

        Raises IamRefusedError when IAM certainly kept the old password, IamOutcomeUnknownError when it may not have.
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
                if (aws_error_code(error) not in RETRYABLE_CODES and status < 500) or last:
                    if maybe_applied:
                        raise IamOutcomeUnknownError(describe_aws_error(error)) from None
                    raise IamRefusedError(aws_error_code(error), describe_aws_error(error)) from None
            except NOT_SENT as error:
                if last:
                    if maybe_applied:
                        raise IamOutcomeUnknownError(type(error).__name__) from None
                    raise IamRefusedError("EndpointUnreachable", f"IAM unreachable: {type(error).__name__}") from None
            except Exception as error:  # read timeout, reset connection: the request may have landed
                maybe_applied = True
                if last:
                    raise IamOutcomeUnknownError(type(error).__name__) from None
            self._sleep(self._retry_delay * 2**attempt)
