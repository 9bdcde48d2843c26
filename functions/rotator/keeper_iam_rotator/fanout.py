"""Fan-out for large scheduled runs: the run rotates up to InlineRotationLimit due records itself and hands the rest,
one SQS message per record, to the rotation queue, whose events the same function handles (queue_worker.py).

A message carries only what the worker cannot re-derive: the record uid, its account (for interleaving) and when the
run planned it. The worker trusts nothing else in it: it binds the record again under the schedule's rules (vouching
only from the record's folder), and the journal refuses a record that is not due or was rotated after `plannedAt`
(a redelivered message rotates nothing). Only the function's role may send to the queue (its queue policy). Messages
are interleaved across accounts, so the queue's concurrent workers spread IAM calls over accounts instead of
draining one account.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Any, Final

from .binding import Claim
from .errors import AWS_ERRORS, BadQueueMessageError, describe_aws_error
from .results import Code, RecordResult, Status

SQS_BATCH: Final = 10  # SendMessageBatch's maximum
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handoff:
    """One queued record. `planned_at`: when the scheduled run planned it (0: unknown, a message of an earlier
    version); a record rotated after that is skipped. Other fields a body carries (an earlier version's `vouched`)
    are ignored: the worker decides binding and vouching itself."""

    record_uid: str
    account_id: str
    planned_at: float = 0.0

    def body(self) -> str:
        return json.dumps({"recordUid": self.record_uid, "accountId": self.account_id, "plannedAt": self.planned_at})

    @classmethod
    def parse(cls, body: str) -> Handoff:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep to be a hand-off
            raise BadQueueMessageError("the message body is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("recordUid"), str) or not data["recordUid"]:
            raise BadQueueMessageError(
                'the message is not a hand-off: {"recordUid": ..., "accountId": ..., "plannedAt": ...}'
            )
        planned_at = data.get("plannedAt", 0.0)
        if isinstance(planned_at, bool) or not isinstance(planned_at, int | float) or not 0 <= planned_at < 1e11:
            raise BadQueueMessageError('"plannedAt" must be the epoch seconds the hand-off was planned at')
        return cls(data["recordUid"], str(data.get("accountId", "")), float(planned_at))


class RotationQueue:
    def __init__(self, sqs: Any, url: str) -> None:
        self._sqs = sqs
        self._url = url

    def send(self, handoffs: Sequence[Handoff]) -> set[str]:
        """Send in batches of ten; returns the record uids that could not be sent."""
        unsent: set[str] = set()
        for start in range(0, len(handoffs), SQS_BATCH):
            batch = handoffs[start : start + SQS_BATCH]
            entries = [{"Id": str(n), "MessageBody": h.body()} for n, h in enumerate(batch)]
            try:
                answer = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
            except AWS_ERRORS as error:
                log.warning("SendMessageBatch failed", extra={"error": describe_aws_error(error)})
                unsent |= {h.record_uid for h in batch}
                continue
            unsent |= {batch[int(failed["Id"])].record_uid for failed in answer.get("Failed", [])}
        return unsent


def interleave(handoffs: Sequence[Handoff]) -> list[Handoff]:
    """Round-robin over accounts in runs of one SQS batch: a worker's batch then usually holds one account (one
    AssumeRole, one ListUsers), and the batches concurrent workers take hit different accounts."""
    by_account: dict[str, list[Handoff]] = {}
    for handoff in handoffs:
        by_account.setdefault(handoff.account_id, []).append(handoff)
    runs = [[same[i : i + SQS_BATCH] for i in range(0, len(same), SQS_BATCH)] for same in by_account.values()]
    return [handoff for run in chain.from_iterable(zip_longest(*runs, fillvalue=[])) for handoff in run]


def hand_off(
    items: list[Claim | RecordResult], queue: RotationQueue, limit: int, first: Collection[str], planned_at: float
) -> list[Claim | RecordResult]:
    """Keep `limit` bound records to rotate inline (those in `first`, unfinished rotations, before any other) and
    queue the rest; each queued record's result is `queued`, or `failed`/`queue_unavailable` if it was not sent."""
    claims = [item for item in items if not isinstance(item, RecordResult)]
    inline = [claim for claim in claims if claim.user.uid in first]
    inline += [claim for claim in claims if claim.user.uid not in first][: max(limit - len(inline), 0)]
    kept = {claim.user.uid for claim in inline}
    queued = [claim for claim in claims if claim.user.uid not in kept]
    unsent = queue.send(interleave([Handoff(c.user.uid, c.account_id, planned_at) for c in queued]))
    results = {claim.user.uid: _queued(claim, claim.user.uid in unsent) for claim in queued}
    return [item if isinstance(item, RecordResult) else results.get(item.user.uid, item) for item in items]


def _queued(claim: Claim, unsent: bool) -> RecordResult:
    result = RecordResult(claim.user.uid, Status.QUEUED, user_name=claim.target.name, account_id=claim.account_id)
    if unsent:
        result.status, result.code = Status.FAILED, Code.QUEUE_UNAVAILABLE
        result.message = "the rotation queue did not take the record; nothing changed, the next scheduled run retries"
    return result
