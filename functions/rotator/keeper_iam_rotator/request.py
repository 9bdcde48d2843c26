"""The rotation request every trigger turns into, and the validation of what callers send (API body, direct
invoke, the CLI's `invoke`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .errors import BadRequestError

MAX_RECORDS: Final = 50
RECORD_UID: Final = re.compile(r"^[A-Za-z0-9_-]{16,64}$")  # Keeper uids: url-safe base64 of 16 bytes (22 chars)
ALLOWED_KEYS: Final = frozenset({"records", "dryRun", "idempotencyKey"})
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

    @property
    def names_records(self) -> bool:
        """The request lists its records (else the run finds them: in Keeper's scope, or in the journal)."""
        return self in {Trigger.API, Trigger.INVOKE, Trigger.QUEUE}

    @property
    def operator_named(self) -> bool:
        """A person (or their automation) named the records: that vouches for records with only a login."""
        return self in {Trigger.API, Trigger.INVOKE}


@dataclass(frozen=True)
class RotationRequest:
    """One run's request. `idempotency_key`: a retry with the same key returns the first answer (None: every
    request runs). `vouched_uids`: for the queue, the records the planning run vouched for. `rotate_all`: a
    scheduled run that rotates every record in scope, due or not: the CLI's `rotate --all`, an operator's explicit
    choice; no event or request body can set it."""

    trigger: Trigger
    record_uids: tuple[str, ...] = ()
    dry_run: bool = False
    idempotency_key: str | None = None
    vouched_uids: frozenset[str] = frozenset()
    rotate_all: bool = False

    def __post_init__(self) -> None:
        if self.trigger.names_records != bool(self.record_uids):
            raise ValueError(f"a {self.trigger} request {'needs' if self.trigger.names_records else 'takes no'} uids")
        if self.rotate_all and self.trigger is not Trigger.SCHEDULE:
            raise ValueError("only a scheduled run selects records by due date: rotate_all needs Trigger.SCHEDULE")

    def to_dict(self) -> dict[str, Any]:
        """The request as idempotency compares it: a key reused with another body is refused."""
        return {"records": list(self.record_uids), "dryRun": self.dry_run}


def parse_request(body: Any, trigger: Trigger, retry_key: str | None = None) -> RotationRequest:
    """Validate `{"records": [uid, ...], "dryRun": bool, "idempotencyKey": str}` from a caller. Unknown keys are
    refused, so a typo such as `dryrun` cannot turn a dry run into a real rotation. Without the caller's own key,
    `retry_key` (one a platform retry keeps) deduplicates."""
    if not isinstance(body, dict):
        raise BadRequestError(NOT_AN_OBJECT)
    unknown = sorted((name for name in body if name not in ALLOWED_KEYS), key=str)
    if unknown:
        raise BadRequestError(f"unknown field(s) {quote_some(unknown)}; allowed: records, dryRun, idempotencyKey")
    records = _record_uids(body.get("records"))
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadRequestError('"dryRun" must be true or false')
    key = body.get("idempotencyKey")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 128):
        raise BadRequestError('"idempotencyKey" must be a string of 1 to 128 characters')
    return RotationRequest(trigger, records, dry_run=dry_run, idempotency_key=key or retry_key)


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
