"""API Gateway `POST /rotations` (IAM-authenticated): the envelope and body checks, and the route.

Powertools' REST resolver (and its event data classes) load on the first API event only: the schedule and direct
invokes never need them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from .errors import BadRequestError, IdempotencyKeyReusedError, PayloadTooLargeError, RequestInProgressError
from .observability import logger
from .request import IN_PROGRESS, KEY_REUSED, MAX_RECORDS, ErrorCode, RotationRequest, Trigger, parse_request, refusal
from .settings import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
    from aws_lambda_powertools.utilities.typing import LambdaContext

Run = Callable[[RotationRequest], dict[str, Any]]
MAX_BODY_CHARS: Final = 256 * 1024  # a full request is under 3 KB; API Gateway would pass 10 MB
MAX_JSON_DEPTH: Final = 32  # a request nests 2 levels; json.loads recurses once per level
JSON_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
ASSUMED_ROLE: Final = re.compile(r"arn:(?P<partition>[\w-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/.+")
BIND_REFUSED: Final = 'only principals on BindCallerArns may bind records ("bind": true); nothing was changed'
# API Gateway's REST proxy envelope: field -> accepted types (absent counts as None). Only a direct invoke that
# imitates API Gateway can break it; it is checked before the router reads it.
ENVELOPE_FIELDS: Final[dict[str, tuple[type, ...]]] = {
    "httpMethod": (str,),
    "path": (str,),
    "requestContext": (dict,),
    "resource": (str, type(None)),
    "body": (str, type(None)),
    "isBase64Encoded": (bool, type(None)),
}
ENVELOPE_MAPS: Final[dict[str, type]] = {  # field -> type of each value; keys are strings
    "headers": str,
    "multiValueHeaders": list,
    "queryStringParameters": str,
    "multiValueQueryStringParameters": list,
    "pathParameters": str,
    "stageVariables": str,
}


def is_api_event(event: Any) -> bool:
    return isinstance(event, dict) and "httpMethod" in event and "requestContext" in event


def handle(event: dict[str, Any], context: LambdaContext, run: Run) -> dict[str, Any]:
    """An API Gateway event: a malformed envelope is a 400 before the router reads it; the caller's IAM identity
    goes on every log line of the invocation (Logger state is cleared when the next one starts)."""
    try:
        check_envelope(event)
    except BadRequestError as error:  # no router response: it cannot read this event
        body = json.dumps(refusal(ErrorCode.BAD_REQUEST, str(error)))
        return {"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": body}
    caller = (event["requestContext"].get("identity") or {}).get("userArn")
    logger.append_keys(callerArn=caller)
    router = _router()
    router.context.update(run=run, caller=caller or "")  # cleared by resolve() when it returns
    return router.resolve(event, context)


@lru_cache(maxsize=1)
def _router() -> APIGatewayRestResolver:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver  # noqa: PLC0415 - API events only

    router = APIGatewayRestResolver()
    router.post("/rotations")(post_rotations)
    return router


def post_rotations() -> dict[str, Any] | Response[str]:
    """POST /rotations: the body is a rotation request; 400 (413 when huge) for anything else, 404 (the router's)
    elsewhere, 409/422 for idempotent retries."""
    router = _router()
    event = router.current_event
    try:
        body = parse_body(event.body or "", base64_encoded=bool(event.is_base64_encoded))
        header_key = event.headers.get("Idempotency-Key")  # Powertools' headers are case-insensitive
        if isinstance(body, dict) and header_key and "idempotencyKey" not in body:
            body["idempotencyKey"] = header_key
        caller: str = router.context["caller"]
        request = parse_request(body, Trigger.API, caller=caller)
    except PayloadTooLargeError as error:
        return _error(413, ErrorCode.PAYLOAD_TOO_LARGE, str(error))
    except BadRequestError as error:
        return _error(400, ErrorCode.BAD_REQUEST, str(error))
    if request.bind and not may_bind(caller, Settings.from_env().bind_caller_arns):
        return _error(403, ErrorCode.BIND_NOT_ALLOWED, BIND_REFUSED)
    run: Run = router.context["run"]
    try:
        return run(request)
    except RequestInProgressError:
        return _error(409, ErrorCode.IN_PROGRESS, IN_PROGRESS)
    except IdempotencyKeyReusedError:
        return _error(422, ErrorCode.IDEMPOTENCY_KEY_REUSED, KEY_REUSED)


def may_bind(caller: str, allowed: Sequence[str]) -> bool:
    """Whether the API caller is on BindCallerArns (wildcards `*` and `?`, as API Gateway's ArnLike). API Gateway
    gives the caller's session ARN; a role's session also matches the role's ARN when the role has no path
    (`arn:aws:iam::<account>:role/<name>`), so the values AllowedCallerArns takes work here too."""
    names = [caller]
    if session := ASSUMED_ROLE.fullmatch(caller):
        names.append(f"arn:{session['partition']}:iam::{session['account']}:role/{session['role']}")
    return bool(caller) and any(fnmatchcase(name, pattern) for name in names for pattern in allowed)


def _error(status: int, code: ErrorCode, message: str) -> Response[str]:
    from aws_lambda_powertools.event_handler import Response, content_types  # noqa: PLC0415 - API events only

    body = json.dumps(refusal(code, message))
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def check_envelope(event: dict[str, Any]) -> None:
    """Refuse an API Gateway proxy event whose fields have types API Gateway never sends."""
    for name, types in ENVELOPE_FIELDS.items():
        if not isinstance(event.get(name), types):
            raise BadRequestError(f'malformed API event: "{name}" is missing or of the wrong type')
    for name, value_type in ENVELOPE_MAPS.items():
        value = {} if event.get(name) is None else event[name]  # a falsy non-map (False, 0, "") is malformed too
        if not isinstance(value, dict) or not all(
            isinstance(key, str) and isinstance(item, value_type) for key, item in value.items()
        ):
            raise BadRequestError(f'malformed API event: "{name}" must map names to {value_type.__name__}s')
    identity = event["requestContext"].get("identity")
    if not isinstance(identity or {}, dict) or not isinstance((identity or {}).get("userArn"), str | None):
        raise BadRequestError('malformed API event: "requestContext.identity" must be an object')


def parse_body(raw: str, base64_encoded: bool) -> Any:
    """The API body as JSON, refusing before parsing what no rotation request looks like: a huge body (413) or
    one nested deeper than json.loads can recurse."""
    if len(raw) > MAX_BODY_CHARS:
        raise PayloadTooLargeError(
            f"the body is larger than {MAX_BODY_CHARS // 1024} KB; send at most {MAX_RECORDS} uids"
        )
    try:
        text = base64.b64decode(raw, validate=True).decode() if base64_encoded else raw
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
        raise BadRequestError("the body is not valid base64-encoded UTF-8") from None
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise BadRequestError(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequestError("the body is not valid JSON") from None


def _nesting_depth(text: str) -> int:
    """How deep JSON arrays and objects nest in `text`, found without recursing (brackets in strings ignored)."""
    depth = deepest = 0
    for bracket in re.sub(r"[^\[\]{}]", "", JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest
