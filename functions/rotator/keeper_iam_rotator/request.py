"""The rotation request every trigger turns into, and the validation of what callers send (API body, direct
invoke, the CLI's `invoke`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from .errors import BadRequestError

if TYPE_CHECKING:
    from .cloudtrail import PasswordChange

MAX_RECORDS: Final = 50
RECORD_UID: Final = re.compile(r"^[A-Za-z0-9_-]{16,64}$")  # Keeper uids: url-safe base64 of 16 bytes (22 chars)
ALLOWED_KEYS: Final = frozenset({"records", "dryRun", "idempotencyKey", "bind"})
ECHOED_NAMES, ECHOED_CHARS = 3, 40  # what an error quotes back of the caller's input
NOT_AN_OBJECT: Final = 'the request must be a JSON object like {"records": ["<record uid>"]}'
IN_PROGRESS: Final = "this request is already being processed; retry later"
KEY_REUSED: Final = "this idempotency key was used with a different request"


class ErrorCode(StrEnum):
    """Why a request was refused before any record was looked at (API error bodies and direct-invoke answers)."""

    BAD_REQUEST = "bad_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    IN_PROGRESS = "in_progress"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    BIND_NOT_ALLOWED = "bind_not_allowed"


def refusal(code: ErrorCode, message: str) -> dict[str, Any]:
    """The body of a refused request: `{"error": {"code", "message"}}`, the same for the API and direct invokes."""
    return {"error": {"code": str(code), "message": message}}


class Trigger(StrEnum):
    """What started a run. It decides which records the run looks at, and it is logged with every result."""

    API = "api"  # POST /rotations: the caller names records
    INVOKE = "invoke"  # a direct invoke (or the CLI's local `rotate --record`): the caller names records
    SCHEDULE = "schedule"  # the planning run: every pamUser record in scope that is due
    QUEUE = "queue"  # records a planning run handed to the rotation queue
    RECOVER = "recover"  # only the rotations dead runs left open in the journal
    DRIFT = "drift"  # CloudTrail recorded a password change made elsewhere: the record this rotator keeps for that user

    @property
    def names_records(self) -> bool:
        """The request lists its records (else the run finds them: in Keeper's scope, or in the journal)."""
        return self in {Trigger.API, Trigger.INVOKE, Trigger.QUEUE}

    @property
    def may_bind(self) -> bool:
        """A caller named the records, so a request that asks to bind (`"bind": true`) may bind a record that has
        only a login; the API also requires the caller to be on BindCallerArns (api.py)."""
        return self in {Trigger.API, Trigger.INVOKE}

    @property
    def checks_due(self) -> bool:
        """The run rotates only what is due (the journal refuses the rest); a caller's request always rotates."""
        return self in {Trigger.SCHEDULE, Trigger.QUEUE}


@dataclass(frozen=True)
class RotationRequest:
    """One run's request. `idempotency_key`: a retry with the same key (from the same caller) returns the first
    answer (None: every request runs). `bind`: the caller asks to bind records that have only a login. `caller`:
    who sent it (the API caller's IAM identity), which scopes the key. `planned_at`: for the queue, when the
    scheduled run planned each record (record uid -> epoch seconds). `change`: for drift, the password change
    CloudTrail recorded. `rotate_all`: a scheduled run that rotates every record in scope, due or not: the CLI's
    `rotate --all`, an operator's explicit choice; no event or request body can set it. For the queue: `devices`,
    the client device each record's hand-off names (devices.py; a hint among the configured devices, nothing more),
    and `requested`, the records a caller's request handed off (rotated unless rotated since `planned_at`)."""

    trigger: Trigger
    record_uids: tuple[str, ...] = ()
    dry_run: bool = False
    idempotency_key: str | None = None
    bind: bool = False
    caller: str = ""
    planned_at: Mapping[str, float] = field(default_factory=dict, compare=False)
    change: PasswordChange | None = None
    rotate_all: bool = False
    devices: Mapping[str, int] = field(default_factory=dict, compare=False)
    requested: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.trigger.names_records != bool(self.record_uids):
            raise ValueError(f"a {self.trigger} request {'needs' if self.trigger.names_records else 'takes no'} uids")
        if self.bind and not self.trigger.may_bind:
            raise ValueError(f"a {self.trigger} request cannot bind")
        if (self.trigger is Trigger.DRIFT) != (self.change is not None):
            raise ValueError("a drift request, and only a drift request, carries a password change")
        if self.rotate_all and self.trigger is not Trigger.SCHEDULE:
            raise ValueError("only a scheduled run selects records by due date: rotate_all needs Trigger.SCHEDULE")

    @property
    def scoped_key(self) -> str | None:
        """The idempotency key within its trigger and caller: one caller's key never answers, or blocks, another's."""
        return f"{self.trigger}|{self.caller}|{self.idempotency_key}" if self.idempotency_key else None

    def to_dict(self) -> dict[str, Any]:
        """The request as idempotency compares it: a key reused with another body is refused."""
        change = {"change": self.change.to_dict()} if self.change else {}
        return {"records": list(self.record_uids), "dryRun": self.dry_run, "bind": self.bind, **change}


def parse_request(body: Any, trigger: Trigger, retry_key: str | None = None, caller: str = "") -> RotationRequest:
    """Validate `{"records": [uid, ...], "dryRun": bool, "idempotencyKey": str, "bind": bool}` from a caller.
    Unknown keys are refused, so a typo such as `dryrun` cannot turn a dry run into a real rotation. Without the
    caller's own key, `retry_key` (one a platform retry keeps) deduplicates."""
    if not isinstance(body, dict):
        raise BadRequestError(NOT_AN_OBJECT)
    unknown = sorted((name for name in body if name not in ALLOWED_KEYS), key=str)
    if unknown:
        allowed = ", ".join(sorted(ALLOWED_KEYS))
        raise BadRequestError(f"unknown field(s) {quote_some(unknown)}; allowed: {allowed}")
    records = _record_uids(body.get("records"))
    dry_run, bind = _flag(body, "dryRun"), _flag(body, "bind")
    key = body.get("idempotencyKey")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 128):
        raise BadRequestError('"idempotencyKey" must be a string of 1 to 128 characters')
    return RotationRequest(
        trigger, records, dry_run=dry_run, idempotency_key=key or retry_key, bind=bind, caller=caller
    )


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequestError(f'"{name}" must be true or false')
    return value


def _record_uids(records: Any) -> tuple[str, ...]:
    if not isinstance(records, list) or not records:
        raise BadRequestError('"records" must be a non-empty list of Keeper record uids')
    if len(records) > MAX_RECORDS:
        raise BadRequestError(f'"records" lists {len(records)} uids; at most {MAX_RECORDS} per request')
    for uid in records:
        if not isinstance(uid, str) or not RECORD_UID.fullmatch(uid):
            raise BadRequestError(f'"records" must hold Keeper record uids (url-safe base64); {quote(uid)} is not one')
    return tuple(dict.fromkeys(records))


def quote(value: Any) -> str:
    """Caller input quoted back in an error, bounded: a string truncated, anything else by its type."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    return repr(value[:ECHOED_CHARS] + ("..." if len(value) > ECHOED_CHARS else ""))


def quote_some(names: list[Any]) -> str:
    more = len(names) - ECHOED_NAMES
    return ", ".join(quote(name) for name in names[:ECHOED_NAMES]) + (f" and {more} more" if more > 0 else "")
