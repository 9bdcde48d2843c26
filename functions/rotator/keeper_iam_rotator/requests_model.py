"""The rotation request every trigger turns into, and the validation of caller input (API body, direct invoke)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_RECORDS = 50
RECORD_UID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")  # Keeper uids: url-safe base64 of 16 bytes (22 chars)
ALLOWED_KEYS = frozenset({"records", "dryRun", "idempotencyKey"})


class BadRequest(ValueError):
    """Caller input that cannot be a rotation request; nothing is changed."""


@dataclass(frozen=True)
class RotationRequest:
    """`record_uids=None` means every pamUser record in scope (the scheduled run); `recover_only` means only the
    records whose rotation a dead run left unfinished in the journal (the recovery schedule)."""

    record_uids: tuple[str, ...] | None
    dry_run: bool = False
    idempotency_key: str | None = None
    recover_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The request as idempotency compares it: a key reused with another body is refused."""
        return {"records": list(self.record_uids or ()), "dryRun": self.dry_run}


def parse_request(body: Any) -> RotationRequest:
    """Validate `{"records": [uid, ...], "dryRun": bool}`. Unknown keys are refused, so a typo such as `dryrun`
    cannot turn a dry run into a real rotation."""
    if not isinstance(body, dict):
        raise BadRequest('the request must be a JSON object like {"records": ["<record uid>"]}')
    unknown = sorted(set(body) - ALLOWED_KEYS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: records, dryRun, idempotencyKey")
    records = body.get("records")
    if not isinstance(records, list) or not records:
        raise BadRequest('"records" must be a non-empty list of Keeper record uids')
    if len(records) > MAX_RECORDS:
        raise BadRequest(f'"records" lists {len(records)} uids; at most {MAX_RECORDS} per request')
    for uid in records:
        if not isinstance(uid, str) or not RECORD_UID.fullmatch(uid):
            raise BadRequest(f'"records" must hold Keeper record uids (url-safe base64); {str(uid)[:40]!r} is not one')
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadRequest('"dryRun" must be true or false')
    key = body.get("idempotencyKey")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 128):
        raise BadRequest('"idempotencyKey" must be a string of 1 to 128 characters')
    return RotationRequest(record_uids=tuple(dict.fromkeys(records)), dry_run=dry_run, idempotency_key=key)
