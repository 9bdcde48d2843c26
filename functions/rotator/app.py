"""Lambda entry point: recognise the trigger, turn its event into a RotationRequest, return the results.

Triggers: API Gateway `POST /rotations` (IAM-authenticated), the EventBridge schedule (rotate the pamUser records
in scope that are due, queueing what exceeds InlineRotationLimit), the rotation queue (SQS events: the records a
scheduled run queued), the recovery schedule (`{"action": "recover"}`: finish rotations dead runs left in the
journal), and a direct invoke / `sam local invoke` with `{"records": [...], "dryRun": false}`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from keeper_iam_rotator import queue_worker, service
from keeper_iam_rotator.idempotency import AlreadyRunning, KeyReused, once
from keeper_iam_rotator.observability import (
    guard_logs,
    logger,
    metrics,
    publish_metrics,
    quiet_chatty_loggers,
    report,
    traced,
)
from keeper_iam_rotator.requests_model import (
    NOT_AN_OBJECT,
    BadRequest,
    PayloadTooLarge,
    RotationRequest,
    check_api_envelope,
    parse_body,
    parse_request,
)
from keeper_iam_rotator.results import response
from keeper_iam_rotator.settings import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

IN_PROGRESS = "this request is already being processed; retry later"
KEY_REUSED = "this idempotency key was used with a different request"
quiet_chatty_loggers()
guard_logs()


def execute(request: RotationRequest, trigger: str, context: LambdaContext, retry_key: str) -> dict[str, Any]:
    """Run the request once per idempotency key (the caller's, else `retry_key`) and return its results.

    Raises AlreadyRunning while the first attempt is still in flight (or died and its deadline has not passed), and
    KeyReused for a caller's key that came with another request.
    """
    settings = Settings.from_env()
    # The trigger is metadata, not a dimension: alarms and the dashboard select the metrics by {service} alone.
    metrics.add_metadata(key="trigger", value=trigger)
    logger.append_keys(trigger=trigger)
    invocation = service.Invocation(
        settings=settings,
        owner=context.aws_request_id,
        lease_seconds=context.get_remaining_time_in_millis() / 1000 + settings.lease_margin,
        load_ksm_config=lambda: service.load_ksm_config(settings.ksm_config_secret_id, settings.ksm_config_max_age),
        observe=report,
    )

    def work() -> dict[str, Any]:
        return response(service.run(request, invocation), invocation.not_due)

    key = request.idempotency_key or retry_key
    return once(key, request.to_dict(), settings.idempotency_table, service.client("dynamodb"), context, work)


@lru_cache(maxsize=1)
def api() -> APIGatewayRestResolver:
    """The REST API router, imported on the first API event only (the schedule and direct invokes never need it)."""
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver  # noqa: PLC0415 - API events only

    router = APIGatewayRestResolver()
    router.post("/rotations")(post_rotations)
    return router


def _error_body(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def _error(status: int, code: str, message: str) -> Response:
    from aws_lambda_powertools.event_handler import Response, content_types  # noqa: PLC0415 - API events only

    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=_error_body(code, message))


def _refused(error: BadRequest) -> Response:
    if isinstance(error, PayloadTooLarge):
        return _error(413, "payload_too_large", str(error))
    return _error(400, "bad_request", str(error))


def post_rotations() -> dict[str, Any] | Response:
    """POST /rotations: the body is a rotation request; 400 (413 when huge) for anything else, 404 (the router's)
    elsewhere."""
    event = api().current_event
    try:
        body = parse_body(event.body or "", base64_encoded=bool(event.is_base64_encoded))
        header_key = event.headers.get("Idempotency-Key")  # Powertools' headers are case-insensitive
        if isinstance(body, dict) and header_key and "idempotencyKey" not in body:
            body["idempotencyKey"] = header_key
        request = parse_request(body)
    except BadRequest as error:
        return _refused(error)
    try:
        return execute(request, "api", api().lambda_context, retry_key="")
    except AlreadyRunning:
        return _error(409, "in_progress", IN_PROGRESS)
    except KeyReused:
        return _error(422, "idempotency_key_reused", KEY_REUSED)


def api_request(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """An API Gateway event: a malformed envelope is a 400 before the router reads it; the caller's IAM identity
    goes on every log line of the invocation (Logger state is cleared when the next one starts)."""
    try:
        check_api_envelope(event)
    except BadRequest as error:
        body = _error_body("bad_request", str(error))  # no router response: it cannot read this event
        return {"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": body}
    logger.append_keys(callerArn=(event["requestContext"].get("identity") or {}).get("userArn"))
    return api().resolve(event, context)


@logger.inject_lambda_context(clear_state=True)
@publish_metrics
@traced
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:  # noqa: PLR0911 - one return per trigger
    if queue_worker.is_sqs(event):  # records a scheduled run handed to the rotation queue: scheduled work
        return queue_worker.handle(event, context, lambda request: execute(request, "schedule", context, retry_key=""))
    if isinstance(event, dict) and "httpMethod" in event and "requestContext" in event:
        return api_request(event, context)
    try:
        if not isinstance(event, dict):
            raise BadRequest(NOT_AN_OBJECT)
        if event.get("action") == "recover" and len(event) == 1:  # no idempotency: recovery is repeatable by design
            return execute(RotationRequest(record_uids=None, recover_only=True), "recover", context, retry_key="")
        if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
            return execute(RotationRequest(record_uids=None), "schedule", context, retry_key=str(event.get("id", "")))
        return execute(parse_request(event), "invoke", context, retry_key=context.aws_request_id)
    except BadRequest as error:
        return {"error": {"code": "bad_request", "message": str(error)}}
    except KeyReused:
        return {"error": {"code": "idempotency_key_reused", "message": KEY_REUSED}}
    # AlreadyRunning propagates: a function error makes Lambda retry an asynchronous event later (and finally use
    # the failure destination) instead of counting the retry as done.
