"""Lambda entry point: recognise the trigger, turn its event into a RotationRequest, return the results.

Triggers: API Gateway `POST /rotations` (IAM-authenticated), the EventBridge schedule (rotate every pamUser record
in scope), and a direct invoke / `sam local invoke` with `{"records": [...], "dryRun": false}`.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from keeper_iam_rotator import service
from keeper_iam_rotator.observability import logger, metrics, quiet_chatty_loggers, report, tracer
from keeper_iam_rotator.requests_model import BadRequest, RotationRequest, parse_request
from keeper_iam_rotator.settings import Settings

api = APIGatewayRestResolver()
quiet_chatty_loggers()


def execute(request: RotationRequest, trigger: str, context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    metrics.add_dimension(name="trigger", value=trigger)
    invocation = service.Invocation(
        settings=settings,
        owner=context.aws_request_id,
        lease_seconds=context.get_remaining_time_in_millis() / 1000 + settings.lease_margin,
        load_ksm_config=lambda: service.load_ksm_config(settings.ksm_config_secret_id, settings.ksm_config_max_age),
        observe=report,
    )
    return {"results": [result.to_dict() for result in service.run(request, invocation)]}


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@api.post("/rotations")
def post_rotations() -> dict[str, Any] | Response:
    try:
        body = json.loads(api.current_event.decoded_body or "")
    except ValueError:
        return _error(400, "bad_request", "the body is not valid JSON")
    try:
        request = parse_request(body)
    except BadRequest as error:
        return _error(400, "bad_request", str(error))
    return execute(request, "api", api.lambda_context)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "httpMethod" in event and "requestContext" in event:
        return api.resolve(event, context)
    if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        return execute(RotationRequest(record_uids=None), "schedule", context)
    try:
        request = parse_request(event)
    except BadRequest as error:
        return {"error": {"code": "bad_request", "message": str(error)}}
    return execute(request, "invoke", context)
