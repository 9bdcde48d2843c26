"""Every exception the rotator raises, and the one way it reads an AWS error.

Naming rule: every class ends in `Error` and derives from `RotatorError`. Messages name things (a secret's id, a
user's ARN, an AWS error code) and never carry a secret value: they end up in results and logs.
"""

from __future__ import annotations

from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from .results import Code, Status

AWS_ERRORS = (ClientError, BotoCoreError)


class AwsErrorCode(StrEnum):
    """The AWS error codes the rotator decides on (everything else is reported as it comes)."""

    NO_SUCH_ENTITY = "NoSuchEntity"
    ACCESS_DENIED = "AccessDenied"
    ACCESS_DENIED_EXCEPTION = "AccessDeniedException"
    CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"
    RESOURCE_NOT_FOUND = "ResourceNotFoundException"
    REPORT_IN_PROGRESS = "ReportInProgress"


def aws_error_code(error: BaseException) -> str:
    """AWS's error code for a service error, the exception's type for a transport error."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__


def is_aws_error(error: BaseException, *codes: AwsErrorCode) -> bool:
    return aws_error_code(error) in codes


def describe_aws_error(error: BaseException) -> str:
    """AWS's error code and message (never request parameters), or the exception's type for transport errors."""
    if not isinstance(error, ClientError):
        return type(error).__name__
    detail = error.response.get("Error", {})
    return f"{detail.get('Code', 'Unknown')}: {detail.get('Message', '')}".strip()


class RotatorError(Exception):
    """Base of every rotator exception."""


class ConfigurationError(RotatorError, ValueError):
    """A setting is missing or malformed; the message names the variable and never its secret content."""


class BadRequestError(RotatorError, ValueError):
    """Caller input that cannot be a rotation request; nothing is changed."""


class PayloadTooLargeError(BadRequestError):
    """A body far larger than any rotation request (HTTP 413)."""


class SecretUnavailableError(RotatorError):
    """A Secrets Manager secret could not be read; the message names the secret, never its value."""


class KsmConfigUnavailableError(SecretUnavailableError):
    """The KSM config secret could not be read, or is not a KSM config; the message never quotes its value."""


class KsmConfigUntrustedError(RotatorError):
    """The KSM config points at a host or server key that is not Keeper's (trust.py); nothing was sent there."""


class KeeperCallError(RotatorError):
    """A Keeper call failed; the message is the SDK's error text (codes and server messages, never record data)."""


class KeeperThrottledError(KeeperCallError):
    """Keeper throttled the client device, or pacing (pacing.py) could not grant the request in time: the request was
    answered `throttled` or never sent, and nobody waited inside the SDK."""


class IamRefusedError(RotatorError):
    """IAM answered and did not change the password."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class IamOutcomeUnknownError(RotatorError):
    """IAM may or may not have changed the password (timeout, dropped connection, server error)."""


class JournalUnavailableError(RotatorError):
    """The journal could not be read or written (DynamoDB or KMS)."""


class JournalTamperedError(RotatorError):
    """A journal item fails its integrity check (integrity.py): someone other than the rotator changed it. It is
    reported and never used to skip, re-own or rotate; the message says so and what to do."""

    def __init__(self, user_arn: str) -> None:
        super().__init__(
            f"the journal item for {user_arn[:200]!r} fails its integrity check (changed by someone other than the "
            "rotator): it is not used to skip, re-own or rotate; nothing was changed. Find the writer in CloudTrail, "
            "then delete the item (the user's next rotation writes a new one)"
        )
        self.user_arn = user_arn


class LeaseHeldError(RotatorError):
    """Another invocation holds this user's lease (or took it over since we read it)."""


class OwnedElsewhereError(RotatorError):
    """The user was last rotated from another Keeper record."""

    def __init__(self, record_uid: str) -> None:
        super().__init__(record_uid)
        self.record_uid = record_uid


class NotDueError(RotatorError):
    """The user's last rotation (from this record) is too recent: the record is not due, or it was rotated after
    its hand-off was planned."""

    def __init__(self, rotated_at: float) -> None:
        super().__init__(rotated_at)
        self.rotated_at = rotated_at


class RequestInProgressError(RotatorError):
    """The same request is being processed by another invocation right now."""


class IdempotencyKeyReusedError(RotatorError):
    """The idempotency key was used before with a different request."""


class BadQueueMessageError(RotatorError, ValueError):
    """A queue message that is not a hand-off; it fails, and the queue moves it to the dead-letter queue."""


class RunFailedError(RotatorError):
    """Every record of a run fails the same way before any is touched (STS, the KSM config, Keeper, the journal)."""

    def __init__(self, code: Code, message: str, account_id: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.account_id = code, message, account_id


class RotationHaltedError(RotatorError):
    """Ends one record's rotation with a result. Protocol steps raise it; the executor turns it into the record's
    result, so a refusal deep in a step needs no return-code plumbing through every caller."""

    def __init__(self, status: Status, code: Code, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def skip(code: Code, message: str) -> RotationHaltedError:
    """Nothing was attempted and nothing changed."""
    return RotationHaltedError(Status.SKIPPED, code, message)


def fail(code: Code, message: str) -> RotationHaltedError:
    return RotationHaltedError(Status.FAILED, code, message)
