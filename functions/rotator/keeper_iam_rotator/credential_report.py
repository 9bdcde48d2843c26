"""IAM's credential report, read once per account by the scheduled run's drift reconcile.

IAM generates a report at most every 4 hours: `GenerateCredentialReport` answers COMPLETE while one at most 4 hours
old exists (and makes no new one), else starts one (STARTED, then INPROGRESS). So every account's generation is
started first, then the reports are read, retrying `ReportInProgress` for at most `wait_seconds` in all: a report not
ready by then is read by a later run (the run does not wait minutes for it). The report's `password_last_changed`
and `password_enabled` per user ARN are all the reconcile reads; its other columns (access keys, MFA) are ignored.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from .errors import AWS_ERRORS, AwsErrorCode, describe_aws_error, is_aws_error
from .iam import IamGateway

FIRST_DELAY, MAX_DELAY = 0.5, 4.0
NOT_READY: Final = (
    "IAM is still generating the credential report; a later scheduled run reads it (IAM keeps a report 4 hours and "
    "makes at most one per 4 hours)"
)


@dataclass(frozen=True)
class Password:
    """One user's console password as the report states it."""

    enabled: bool
    last_changed: float | None  # epoch seconds; None when IAM reports none (N/A, no_information, not_supported)


@dataclass(frozen=True)
class Report:
    generated_at: float
    passwords: dict[str, Password]  # by user ARN


def parse(content: bytes, generated_at: datetime) -> Report:
    """The report's CSV (the columns are looked up by name: IAM has added columns before)."""
    rows = csv.DictReader(io.StringIO(content.decode("utf-8")))
    passwords = {
        row["arn"]: Password(row.get("password_enabled") == "true", _time(row.get("password_last_changed")))
        for row in rows
        if row.get("arn", "").startswith("arn:")
    }
    return Report(generated_at.timestamp(), passwords)


def _time(value: str | None) -> float | None:
    try:
        return datetime.fromisoformat(value or "").timestamp()
    except ValueError:
        return None


def read_reports(
    gateways: Mapping[str, IamGateway],
    wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Report | str]:
    """Each account's report, or why there is none (a sentence for the account's result)."""
    answers: dict[str, Report | str] = {}
    for account, gateway in gateways.items():
        try:
            gateway.generate_credential_report()
        except AWS_ERRORS as error:
            answers[account] = f"GenerateCredentialReport failed: {describe_aws_error(error)}"
    pending = [account for account in gateways if account not in answers]
    deadline, delay = clock() + wait_seconds, FIRST_DELAY
    while pending:
        pending = [account for account in pending if not _read(account, gateways[account], answers)]
        if pending and clock() + delay > deadline:
            answers |= dict.fromkeys(pending, NOT_READY)
            break
        if pending:
            sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    return answers


def _read(account: str, gateway: IamGateway, answers: dict[str, Report | str]) -> bool:
    """Read one account's report into `answers`; False while IAM is still generating it."""
    try:
        answers[account] = parse(*gateway.credential_report())
    except AWS_ERRORS as error:
        if is_aws_error(error, AwsErrorCode.REPORT_IN_PROGRESS):
            return False
        answers[account] = f"GetCredentialReport failed: {describe_aws_error(error)}"
    return True
