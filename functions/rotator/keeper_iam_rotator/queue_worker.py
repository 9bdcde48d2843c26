"""The rotation queue's worker: SQS events carry records a scheduled run handed off (fanout.py).

A batch runs as one rotation request (so it assumes each member account's role once and reads Keeper once) under
the schedule's rules, re-derived here rather than read from the message: binding and vouching from Keeper (only a
folder declared AWS-only vouches for an unbound record), and "due" from the journal (a record that is not due, or
was rotated after the message was planned, is skipped: a redelivered message rotates nothing).

Binding is checked against IAM by the batch itself: an account holding two or more of its users is read with one
ListUsers page (per 1,000 users) instead of a GetUser per record (executor._accounts), so a batch of 25 costs the
four calls per user every rotation needs (GetLoginProfile, UpdateLoginProfile, the journal's open and close) plus
what each invocation pays once. Neither the message (record uid, plannedAt; its accountId only spreads the queue)
nor an earlier batch supplies a fact the worker acts on: a directory read by one invocation is not reused by the
next, even in a warm container (a user deleted and recreated elsewhere must fail its binding at once), and IAM
checks the scope tag on GetLoginProfile before anything changes.

The answer reports per message (`ReportBatchItemFailures`): a message whose record failed is returned in
`batchItemFailures` and comes back after the visibility timeout (the backoff for Keeper `throttled` and IAM
throttling that outlasted the in-call retries), then goes to the dead-letter queue. Skipped records (not bound, not
due, locked by another run) are done: retrying would not help. Only the function's role may send to the queue, but
the function itself can be invoked with an SQS-shaped event: whatever arrives gets a bounded answer, never an
exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .errors import BadQueueMessageError
from .fanout import QUEUE_BATCH, Handoff
from .request import RotationRequest, Trigger
from .results import Status

MAX_BATCH: Final = QUEUE_BATCH  # the event source mapping's BatchSize: a real event never holds more
MESSAGE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,100}")  # SQS message ids (UUIDs); nothing else is echoed back


@dataclass(frozen=True)
class Message:
    """One record of the event: its id (None when it has no usable one) and its hand-off (None when malformed)."""

    message_id: str | None
    handoff: Handoff | None


def is_sqs(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return bool(records) and isinstance(records, list) and all(_from_sqs(record) for record in records)


def _from_sqs(record: Any) -> bool:
    return isinstance(record, dict) and record.get("eventSource") == "aws:sqs"


def handle(event: dict[str, Any], run: Callable[[RotationRequest], dict[str, Any]]) -> dict[str, Any]:
    """Rotate the batch's records and answer `{"batchItemFailures": [...]}`: the ids of the messages to deliver
    again (a failed record, a malformed hand-off). A message without a usable id cannot be named, so it is left out
    (SQS never sends one); messages beyond MAX_BATCH are returned unread."""
    messages = [_read(record) for record in event["Records"]]
    batch, beyond = messages[:MAX_BATCH], messages[MAX_BATCH:]
    handoffs = [m.handoff for m in batch if m.handoff is not None and m.message_id is not None]
    results: dict[str, dict[str, Any]] = {}
    if handoffs:
        request = RotationRequest(
            Trigger.QUEUE,
            record_uids=tuple(dict.fromkeys(h.record_uid for h in handoffs)),
            planned_at={h.record_uid: h.planned_at for h in handoffs if h.planned_at},
            devices={h.record_uid: h.device for h in handoffs},
            requested=frozenset(h.record_uid for h in handoffs if h.requested and h.planned_at),
        )
        results = {result["recordUid"]: result for result in run(request)["results"]}
    failed = [m.message_id for m in batch if m.message_id and not _done(m, results)]
    failed += [m.message_id for m in beyond if m.message_id]
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def _read(record: dict[str, Any]) -> Message:
    message_id = record.get("messageId")
    usable_id = message_id if isinstance(message_id, str) and MESSAGE_ID.fullmatch(message_id) else None
    body = record.get("body")
    try:
        handoff = Handoff.parse(body) if isinstance(body, str) else None
    except BadQueueMessageError:
        handoff = None
    return Message(usable_id, handoff)


def _done(message: Message, results: dict[str, dict[str, Any]]) -> bool:
    """Rotated or skipped: the message may be deleted. Failed, missing or malformed: deliver it again."""
    if message.handoff is None:
        return False
    result = results.get(message.handoff.record_uid)
    return result is not None and result["status"] != Status.FAILED
