"""CloudTrail's record of a console password change, as EventBridge delivers it (detail-type `AWS API Call via
CloudTrail`, source `aws.iam`): which call, in which account, to which IAM user, by whom, and when.

The event is an input that steers the rotator, so it is read strictly and trusted for little: it may only make the
rotator look at a user whose record it already rotates (drift.py decides). Who can put such an event in front of the
function: CloudTrail itself (EventBridge refuses `PutEvents` entries whose source starts with `aws.`), a member
account's forwarding rule (the hub's bus policy admits only TargetAccountIds, and EventBridge forwards an event one hop
only), and whoever may invoke the function directly, who can already ask it to rotate any record by uid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from .errors import BadRequestError
from .request import quote

DETAIL_TYPE: Final = "AWS API Call via CloudTrail"
SOURCE: Final = "aws.iam"
EVENT_SOURCE: Final = "iam.amazonaws.com"
ACCOUNT_ID: Final = re.compile(r"\d{12}")
USER_NAME: Final = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
EVENT_ID: Final = re.compile(r"[\w-]{1,128}", re.ASCII)
MAX_ARN: Final = 2048


class PasswordCall(StrEnum):
    """The IAM calls that set, change or remove a console password."""

    CHANGE_PASSWORD = "ChangePassword"  # noqa: S105 - an API name; the user himself (also at sign-in)
    UPDATE_LOGIN_PROFILE = "UpdateLoginProfile"
    CREATE_LOGIN_PROFILE = "CreateLoginProfile"
    DELETE_LOGIN_PROFILE = "DeleteLoginProfile"


@dataclass(frozen=True)
class PasswordChange:
    """One password change CloudTrail recorded. `issuer`: the role whose session made the call ("" for a user)."""

    event_id: str
    call: PasswordCall
    account_id: str
    user_name: str
    caller: str
    issuer: str
    at: float  # eventTime, epoch seconds (CloudTrail records whole seconds)

    def to_dict(self) -> dict[str, Any]:
        """What idempotency compares: the same event id with another content is refused."""
        return {
            "eventId": self.event_id,
            "call": str(self.call),
            "accountId": self.account_id,
            "userName": self.user_name,
            "caller": self.caller,
            "issuer": self.issuer,
            "at": self.at,
        }


def is_cloudtrail_event(event: Any) -> bool:
    """An IAM API call EventBridge delivered from CloudTrail (whatever its content)."""
    return isinstance(event, dict) and event.get("source") == SOURCE and event.get("detail-type") == DETAIL_TYPE


def password_change(event: dict[str, Any]) -> PasswordChange:
    """The password change an EventBridge CloudTrail event records; BadRequestError for anything else (another
    call, a call IAM refused, a field missing or malformed)."""
    detail = _object(event.get("detail"), "detail")
    if detail.get("eventSource") != EVENT_SOURCE:
        raise BadRequestError(f"detail.eventSource must be {EVENT_SOURCE!r}")
    try:
        call = PasswordCall(str(detail.get("eventName")))
    except ValueError:
        allowed = ", ".join(PasswordCall)
        raise BadRequestError(f"detail.eventName {quote(detail.get('eventName'))} is not one of {allowed}") from None
    if detail.get("errorCode") is not None:
        raise BadRequestError(f"IAM refused this {call} ({quote(detail.get('errorCode'))}): nothing changed")
    identity = _object(detail.get("userIdentity"), "detail.userIdentity")
    return PasswordChange(
        event_id=_matching(detail.get("eventID"), EVENT_ID, "detail.eventID"),
        call=call,
        account_id=_account(event, detail),
        user_name=_user_name(call, detail, identity),
        caller=_text(identity.get("arn")),
        issuer=_issuer(identity),
        at=_time(detail.get("eventTime")),
    )


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{name} must be a JSON object")
    return value


def _matching(value: Any, pattern: re.Pattern[str], name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadRequestError(f"{name} is missing or malformed ({quote(value)})")
    return value


def _account(event: dict[str, Any], detail: dict[str, Any]) -> str:
    """The account the change happened in: the event's, which CloudTrail's recipient account must confirm."""
    account = _matching(event.get("account"), ACCOUNT_ID, "account")
    if detail.get("recipientAccountId", account) != account:
        raise BadRequestError("account and detail.recipientAccountId disagree")
    return account


def _user_name(call: PasswordCall, detail: dict[str, Any], identity: dict[str, Any]) -> str:
    """ChangePassword names no user: the caller is the user. The other calls name him in requestParameters."""
    if call is PasswordCall.CHANGE_PASSWORD:
        if identity.get("type") != "IAMUser":
            raise BadRequestError("ChangePassword must be made by an IAM user (detail.userIdentity.type IAMUser)")
        return _matching(identity.get("userName"), USER_NAME, "detail.userIdentity.userName")
    parameters = _object(detail.get("requestParameters"), "detail.requestParameters")
    return _matching(parameters.get("userName"), USER_NAME, "detail.requestParameters.userName")


def _issuer(identity: dict[str, Any]) -> str:
    session = identity.get("sessionContext")
    issuer = session.get("sessionIssuer") if isinstance(session, dict) else None
    return _text(issuer.get("arn") if isinstance(issuer, dict) else None)


def _text(value: Any) -> str:
    """An ARN the event reports, quoted in results: a string of ARN length at most, else nothing."""
    return value[:MAX_ARN] if isinstance(value, str) else ""


def _time(value: Any) -> float:
    if not isinstance(value, str):
        raise BadRequestError("detail.eventTime is missing")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(f"detail.eventTime {quote(value)} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise BadRequestError("detail.eventTime must carry its time zone (CloudTrail writes UTC, ...Z)")
    return when.timestamp()
