"""What a rotation reports: one result per record, with stable machine-readable codes, and the run's outcome.

Results are returned to callers and logged, so nothing in here may ever hold a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class Status(StrEnum):
    ROTATED = "rotated"
    PLANNED = "planned"
    SKIPPED = "skipped"
    FAILED = "failed"
    QUEUED = "queued"  # handed to the rotation queue; its worker reports the outcome with the same metrics


class Code(StrEnum):
    """Why a record was skipped or failed. The README's "Result codes" table documents each one."""

    # skipped: nothing was attempted and nothing changed
    RECORD_NOT_FOUND = "record_not_found"
    NOT_PAM_USER = "not_pam_user"
    NOT_IAM_RECORD = "not_iam_record"
    NOT_BOUND = "not_bound"
    ARN_MISMATCH = "arn_mismatch"
    MISSING_LOGIN = "missing_login"
    RECORD_NOT_EDITABLE = "record_not_editable"
    ACCOUNT_NOT_ALLOWED = "account_not_allowed"
    IAM_USER_NOT_FOUND = "iam_user_not_found"
    NO_LOGIN_PROFILE = "no_login_profile"
    IAM_ACCESS_DENIED = "iam_access_denied"
    LOCKED = "locked"
    DUPLICATE_USER = "duplicate_user"
    MANAGED_BY_KEEPERPAM = "managed_by_keeperpam"
    # drift (a password changed outside the rotator): `drift` is rotated (DriftAction=rotate) or skipped (alert)
    DRIFT = "drift"
    NO_DRIFT = "no_drift"
    NOT_MANAGED = "not_managed"
    CREDENTIAL_REPORT_UNAVAILABLE = "credential_report_unavailable"
    NOT_DUE = "not_due"
    # failed, nothing changed
    KSM_CONFIG_UNREADABLE = "ksm_config_unreadable"
    KSM_CONFIG_UNTRUSTED = "ksm_config_untrusted"
    KEEPER_UNAVAILABLE = "keeper_unavailable"
    KEEPER_STAGE_FAILED = "keeper_stage_failed"
    KEEPER_THROTTLED = "keeper_throttled"
    IAM_ERROR = "iam_error"
    ASSUME_ROLE_FAILED = "assume_role_failed"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    IAM_UPDATE_REFUSED = "iam_update_refused"
    JOURNAL_UNAVAILABLE = "journal_unavailable"
    # failed, IAM restored to the password Keeper holds
    KEEPER_COMMIT_FAILED_IAM_RESTORED = "keeper_commit_failed_iam_restored"
    # failed, the working password is held (encrypted) in the journal; the next run converges
    IAM_OUTCOME_UNKNOWN = "iam_outcome_unknown"
    PASSWORD_IN_JOURNAL = "password_in_journal"  # noqa: S105 - a code, not a password
    JOURNAL_UNREADABLE = "journal_unreadable"
    # failed: a journal item was changed by someone other than the rotator; nothing was changed, an operator looks
    JOURNAL_TAMPERED = "journal_tampered"
    INTERNAL_ERROR = "internal_error"


# Codes after which IAM may hold a password Keeper's committed record does not: an operator must look.
RECOVERY_PENDING_CODES: Final = frozenset({Code.IAM_OUTCOME_UNKNOWN, Code.PASSWORD_IN_JOURNAL, Code.JOURNAL_UNREADABLE})
# Codes that mean someone wrote an input the rotator refuses to be steered by: an operator must look (an alarm).
TAMPERING_CODES: Final = frozenset({Code.KSM_CONFIG_UNTRUSTED, Code.JOURNAL_TAMPERED})
WHOLE_RUN: Final = "*"  # the record uid of a result that stands for every record of a run that failed before any
# (and of a drift result that concerns no record: a user no record names, a whole account's credential report)


@dataclass
class RecordResult:
    record_uid: str
    status: Status
    user_name: str | None = None
    account_id: str | None = None
    code: Code | None = None
    message: str | None = None
    recovered: bool = False
    drift: bool = False  # the password was changed (or console access removed) outside the rotator
    binding_changed: bool = False  # rotated for a user the journal named no owner for, or another record as owner

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"recordUid": self.record_uid, "status": str(self.status)}
        if self.user_name:
            out["userName"] = self.user_name
        if self.account_id:
            out["accountId"] = self.account_id
        if self.recovered:
            out["recovered"] = True
        if self.drift:
            out["drift"] = True
        if self.code:
            out["error"] = {"code": str(self.code), "message": self.message or ""}
        return out


MAX_LISTED_RESULTS: Final = 1000  # a fleet's scheduled run must fit DynamoDB's 400 KB (idempotency), Lambda's 6 MB
LISTING_ORDER: Final = (Status.FAILED, Status.SKIPPED, Status.ROTATED, Status.PLANNED, Status.QUEUED)


@dataclass(frozen=True)
class Outcome:
    """What one run did: a result per record, the records in scope the scheduled run left alone (not due), and the
    due records it left for a later run because Keeper's budget for this run was spent (deferred)."""

    results: list[RecordResult] = field(default_factory=list)
    not_due: int = 0
    deferred: int = 0

    def document(self) -> dict[str, Any]:
        """The invocation's answer: every result (at most MAX_LISTED_RESULTS, failures first, `resultsOmitted`
        counting the rest: each record has its log line anyway), and counts per status plus `notDue` and `deferred`."""
        listed = self.results
        if len(listed) > MAX_LISTED_RESULTS:
            listed = sorted(listed, key=lambda result: LISTING_ORDER.index(result.status))[:MAX_LISTED_RESULTS]
        counts = {str(status): 0 for status in Status}
        for result in self.results:
            counts[str(result.status)] += 1
        answer: dict[str, Any] = {"results": [result.to_dict() for result in listed]}
        answer["summary"] = counts | {"notDue": self.not_due, "deferred": self.deferred}
        if len(listed) < len(self.results):
            answer["resultsOmitted"] = len(self.results) - len(listed)
        return answer
