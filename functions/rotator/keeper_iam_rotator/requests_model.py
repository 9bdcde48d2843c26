"""The rotation request every trigger turns into, and the validation of caller input (API body, direct invoke)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_RECORDS = 50
RECORD_UID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")  # Keeper uids: url-safe base64 of 16 bytes (22 chars)
ALLOWED_KEYS = frozenset({"records", "dryRun", "idempotencyKey"})
MAX_BODY_CHARS = 256 * 1024  # a full request is under 3 KB; API Gateway would pass 10 MB
MAX_JSON_DEPTH = 32  # a request nests 2 levels; json.loads recurses once per level
ECHOED_NAMES, ECHOED_CHARS = 3, 40  # what an error quotes back of the caller's input
JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
NOT_AN_OBJECT = 'the request must be a JSON object like {"records": ["<record uid>"]}'
# API Gateway's REST proxy envelope: field -> accepted types (absent counts as None). Only a direct invoke that
# imitates API Gateway can break it; it is checked before the router reads it.
ENVELOPE_FIELDS: dict[str, tuple[type, ...]] = {
    "httpMethod": (str,),
    "path": (str,),
    "requestContext": (dict,),
    "resource": (str, type(None)),
    "body": (str, type(None)),
    "isBase64Encoded": (bool, type(None)),
}
ENVELOPE_MAPS: dict[str, type] = {  # field -> type of each value; keys are strings
    "headers": str,
    "multiValueHeaders": list,
    "queryStringParameters": str,
    "multiValueQueryStringParameters": list,
    "pathParameters": str,
    "stageVariables": str,
}


class BadRequest(ValueError):
    """Caller input that cannot be a rotation request; nothing is changed."""


class PayloadTooLarge(BadRequest):
    """A body far larger than any rotation request (HTTP 413)."""


@dataclass(frozen=True)
class RotationRequest:
    """`record_uids=None` means every pamUser record in scope (the scheduled run); `recover_only` means only the
    records whose rotation a dead run left unfinished in the journal (the recovery schedule); `queued` means records a
    scheduled run handed to the rotation queue (the schedule's binding rules, plus its vouching in `vouched_uids`)."""

    record_uids: tuple[str, ...] | None
    dry_run: bool = False
    idempotency_key: str | None = None
    recover_only: bool = False
    queued: bool = False
    vouched_uids: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The request as idempotency compares it: a key reused with another body is refused."""
        return {"records": list(self.record_uids or ()), "dryRun": self.dry_run}


def parse_request(body: Any) -> RotationRequest:
    """Validate `{"records": [uid, ...], "dryRun": bool}`. Unknown keys are refused, so a typo such as `dryrun`
    cannot turn a dry run into a real rotation."""
    if not isinstance(body, dict):
        raise BadRequest(NOT_AN_OBJECT)
    unknown = sorted((name for name in body if name not in ALLOWED_KEYS), key=str)
    if unknown:
        raise BadRequest(f"unknown field(s) {_quote_some(unknown)}; allowed: records, dryRun, idempotencyKey")
    records = body.get("records")
    if not isinstance(records, list) or not records:
        raise BadRequest('"records" must be a non-empty list of Keeper record uids')
    if len(records) > MAX_RECORDS:
        raise BadRequest(f'"records" lists {len(records)} uids; at most {MAX_RECORDS} per request')
    for uid in records:
        if not isinstance(uid, str) or not RECORD_UID.fullmatch(uid):
            raise BadRequest(f'"records" must hold Keeper record uids (url-safe base64); {_quote(uid)} is not one')
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadRequest('"dryRun" must be true or false')
    key = body.get("idempotencyKey")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 128):
        raise BadRequest('"idempotencyKey" must be a string of 1 to 128 characters')
    return RotationRequest(record_uids=tuple(dict.fromkeys(records)), dry_run=dry_run, idempotency_key=key)


def check_api_envelope(event: dict[str, Any]) -> None:
    """Refuse an API Gateway proxy event whose fields have types API Gateway never sends."""
    for name, types in ENVELOPE_FIELDS.items():
        if not isinstance(event.get(name), types):
            raise BadRequest(f'malformed API event: "{name}" is missing or of the wrong type')
    for name, value_type in ENVELOPE_MAPS.items():
        value = {} if event.get(name) is None else event[name]  # a falsy non-map (False, 0, "") is malformed too
        if not isinstance(value, dict) or not all(
            isinstance(key, str) and isinstance(item, value_type) for key, item in value.items()
        ):
            raise BadRequest(f'malformed API event: "{name}" must map names to {value_type.__name__}s')
    identity = event["requestContext"].get("identity")
    if not isinstance(identity or {}, dict) or not isinstance((identity or {}).get("userArn"), str | None):
        raise BadRequest('malformed API event: "requestContext.identity" must be an object')


def parse_body(raw: str, base64_encoded: bool) -> Any:
    """The API body as JSON, refusing before parsing what no rotation request looks like: a huge body (413) or
    one nested deeper than json.loads can recurse."""
    if len(raw) > MAX_BODY_CHARS:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_CHARS // 1024} KB; send at most {MAX_RECORDS} uids")
    try:
        text = base64.b64decode(raw, validate=True).decode() if base64_encoded else raw
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
        raise BadRequest("the body is not valid base64-encoded UTF-8") from None
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None


def _nesting_depth(text: str) -> int:
    """How deep JSON arrays and objects nest in `text`, found without recursing (brackets in strings ignored)."""
    depth = deepest = 0
    for bracket in re.sub(r"[^\[\]{}]", "", JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _quote(value: Any) -> str:
    """Caller input quoted back in an error, bounded: a string truncated, anything else by its type."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    return repr(value[:ECHOED_CHARS] + ("..." if len(value) > ECHOED_CHARS else ""))


def _quote_some(names: list[Any]) -> str:
    more = len(names) - ECHOED_NAMES
    return ", ".join(_quote(name) for name in names[:ECHOED_NAMES]) + (f" and {more} more" if more > 0 else "")
