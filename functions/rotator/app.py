"""Lambda entry point: recognise the trigger, turn its event into a RotationRequest, return the outcome.

Triggers: API Gateway `POST /rotations` (IAM-authenticated; api.py), the EventBridge schedule (rotate the pamUser
records in scope that are due, queueing what exceeds InlineRotationLimit), the rotation queue (SQS events: the
records a scheduled run queued; queue_worker.py), the recovery schedule (`{"action": "recover"}`: finish rotations
dead runs left in the journal), CloudTrail's record of a console password change made elsewhere (EventBridge rule
PasswordChanges: rotate the record that keeps that user; cloudtrail.py, drift.py), and a direct invoke /
`sam local invoke` with `{"records": [...], "dryRun": false}`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from keeper_iam_rotator import api, cloudtrail, queue_worker, service
from keeper_iam_rotator.aws import AwsClients, load_ksm_config
from keeper_iam_rotator.context import Invocation
from keeper_iam_rotator.errors import BadRequestError, IdempotencyKeyReusedError
from keeper_iam_rotator.idempotency import once
from keeper_iam_rotator.observability import (
    guard_logs,
    logger,
    metrics,
    publish_metrics,
    quiet_chatty_loggers,
    report,
    signal,
    traced,
)
from keeper_iam_rotator.request import (
    KEY_REUSED,
    NOT_AN_OBJECT,
    ErrorCode,
    RotationRequest,
    Trigger,
    parse_request,
    refusal,
)
from keeper_iam_rotator.settings import Settings

CLIENTS = AwsClients()  # the warm container's clients: connection pools and credentials outlive an invocation
quiet_chatty_loggers()
guard_logs()


def execute(request: RotationRequest, context: LambdaContext) -> dict[str, Any]:
    """Run the request once per idempotency key and return its outcome document. Raises RequestInProgressError
    while the first attempt is still in flight, IdempotencyKeyReusedError for a key that came with another request."""
    settings = Settings.from_env()
    settings.require_ksm_config_secrets()
    # The trigger is metadata, not a dimension: alarms and the dashboard select the metrics by {service} alone.
    metrics.add_metadata(key="trigger", value=str(request.trigger))
    logger.append_keys(trigger=str(request.trigger))
    invocation = Invocation(
        settings=settings,
        clients=CLIENTS,
        owner=context.aws_request_id,
        lease_seconds=context.get_remaining_time_in_millis() / 1000 + settings.lease_margin,
        load_ksm_config=lambda secret_id: load_ksm_config(
            CLIENTS("secretsmanager"), secret_id, settings.ksm_config_max_age
        ),
        observe=report,
        signal=signal,
    )
    return once(
        request.scoped_key,
        request.to_dict(),
        settings.idempotency_table,
        CLIENTS("dynamodb"),
        context,
        lambda: service.run(request, invocation).document(),
    )


def direct_request(event: Any, context: LambdaContext) -> RotationRequest:
    """The request a direct event stands for: the recovery schedule's, the rotation schedule's, CloudTrail's, or a
    caller's."""
    if not isinstance(event, dict):
        raise BadRequestError(NOT_AN_OBJECT)
    if event.get("action") == "recover" and len(event) == 1:  # no idempotency: recovery is repeatable by design
        return RotationRequest(Trigger.RECOVER)
    if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        return RotationRequest(Trigger.SCHEDULE, idempotency_key=str(event.get("id") or "") or None)
    if cloudtrail.is_cloudtrail_event(event):  # CloudTrail's event id: a second delivery returns the first answer
        change = cloudtrail.password_change(event)
        return RotationRequest(Trigger.DRIFT, idempotency_key=f"cloudtrail-{change.event_id}", change=change)
    # an asynchronous retry of a direct invoke keeps its request id
    return parse_request(event, Trigger.INVOKE, retry_key=context.aws_request_id)


@logger.inject_lambda_context(clear_state=True)
@publish_metrics
@traced
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    def run(request: RotationRequest) -> dict[str, Any]:
        return execute(request, context)

    if queue_worker.is_sqs(event):
        return queue_worker.handle(event, run)
    if api.is_api_event(event):
        return api.handle(event, context, run)
    try:
        return run(direct_request(event, context))
    except BadRequestError as error:
        return refusal(ErrorCode.BAD_REQUEST, str(error))
    except IdempotencyKeyReusedError:
        return refusal(ErrorCode.IDEMPOTENCY_KEY_REUSED, KEY_REUSED)
    # RequestInProgressError propagates: a function error makes Lambda retry an asynchronous event later (and finally
    # use the failure destination) instead of counting the retry as done.
