"""The rotation queue's worker: SQS events carry records a scheduled run handed off (fanout.py).

A batch runs as one rotation request (so it assumes each member account's role once and reads Keeper once), with
the schedule's binding rules plus the planner's vouching, and is reported per message with Powertools' batch
utility: a message whose record failed is returned in `batchItemFailures` and comes back after the visibility
timeout (the backoff for Keeper `throttled` and IAM throttling that outlasted the in-call retries), then goes to the
dead-letter queue. Skipped records (not bound any more, locked by another run) are done: retrying would not help.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from .errors import BadQueueMessageError, QueuedRotationFailedError
from .fanout import Handoff
from .request import RotationRequest, Trigger
from .results import Status

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext


def is_sqs(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return bool(records) and isinstance(records, list) and all(_from_sqs(record) for record in records)


def _from_sqs(record: Any) -> bool:
    return isinstance(record, dict) and record.get("eventSource") == "aws:sqs"


def handle(
    event: dict[str, Any], context: LambdaContext, run: Callable[[RotationRequest], dict[str, Any]]
) -> dict[str, Any]:
    # Powertools' batch utility imports asyncio and every event data class (~40 ms): only queue workers need it.
    from aws_lambda_powertools.utilities.batch import (  # noqa: PLC0415
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    handoffs: list[Handoff] = []
    for record in event["Records"]:
        with suppress(BadQueueMessageError):  # reported per message below
            handoffs.append(Handoff.parse(str(record.get("body", ""))))
    results: dict[str, dict[str, Any]] = {}
    if handoffs:
        request = RotationRequest(
            Trigger.QUEUE,
            record_uids=tuple(dict.fromkeys(h.record_uid for h in handoffs)),
            vouched_uids=frozenset(h.record_uid for h in handoffs if h.vouched),
        )
        results = {result["recordUid"]: result for result in run(request)["results"]}

    def record_handler(record: SQSRecord) -> dict[str, Any]:
        uid = Handoff.parse(record.body or "").record_uid
        result = results.get(uid)
        if result is None or result["status"] == Status.FAILED:
            code = (result or {}).get("error", {}).get("code", "no_result")
            raise QueuedRotationFailedError(f"record {uid}: {code}")
        return result

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    answer = process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    return dict(answer)
