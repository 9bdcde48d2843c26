"""Fan-out for large scheduled runs: the run rotates up to InlineRotationLimit due records itself and hands the rest,
one SQS message per record, to the rotation queue, whose events the same function handles (queue_worker.py). A
caller's request beyond what Keeper's pace lets it finish in 29 s hands its rest over the same way (budget.py).

A message carries only what the worker cannot re-derive: the record uid, its account and client device (the one it
is staged and committed through, and read through first) and when the run planned it. The worker trusts nothing else
in it: it binds the record again under the schedule's rules (vouching only from the record's folder), and the
journal refuses a record that is not due (unless a caller asked) or was rotated after `plannedAt` (a redelivered
message rotates nothing). Only the function's role may send to the queue (its queue policy). Messages are
interleaved across KSM applications and accounts, so the queue's concurrent workers spread Keeper and IAM calls
instead of draining one application or account.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from itertools import chain, zip_longest
from typing import Any, Final

from .binding import Claim
from .errors import AWS_ERRORS, BadQueueMessageError, describe_aws_error
from .results import Code, RecordResult, Status

SQS_BATCH: Final = 10  # SendMessageBatch's maximum
# The event source mapping's BatchSize (template.yaml): one Keeper read per batch, so 25 records share it (Keeper
# requests per rotation 2 + 1/25); a batch still fits the function's timeout at 10 Keeper requests per minute.
QUEUE_BATCH: Final = 25
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handoff:
    """One queued record. `planned_at`: when the run planned it (0: unknown, a message of an earlier version); a
    record rotated after that is skipped. `device`: the position in KSM_CONFIG_SECRET_ID of the client device it
    was read through (a hint: the worker reads and writes it there first, among the configured devices only).
    `requested`: a caller's request handed it off (rotated due or not, unless rotated after `planned_at`); only the
    function's role can send to the queue, and that caller could rotate the record anyway. Other fields a body
    carries (an earlier version's `vouched`) are ignored: the worker decides binding and vouching itself."""

    record_uid: str
    account_id: str
    planned_at: float = 0.0
    device: int = 0
    requested: bool = False

    def body(self) -> str:
        extra = {"requested": True} if self.requested else {}
        return json.dumps(
            {
                "recordUid": self.record_uid,
                "accountId": self.account_id,
                "plannedAt": self.planned_at,
                "device": self.device,
                **extra,
            }
        )

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
        device = data.get("device", 0)
        device = device if isinstance(device, int) and not isinstance(device, bool) and 0 <= device < 100 else 0
        requested = data.get("requested") is True
        return cls(data["recordUid"], str(data.get("accountId", "")), float(planned_at), device, requested)


@dataclass(frozen=True)
class Plan:
    """What every hand-off of one run shares: when it was planned, each record's device and the devices of the same
    KSM application (`peers_of` a device, in list order), whether a caller asked."""

    planned_at: float
    device_of: Callable[[str], int]
    requested: bool = False
    peers_of: Callable[[int], tuple[int, ...]] = lambda device: (device,)


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


def interleave(
    handoffs: Sequence[Handoff], peers_of: Callable[[int], tuple[int, ...]] = lambda device: (device,)
) -> list[Handoff]:
    """Runs of one queue batch per KSM application (`peers_of` a device: the devices that see the same records),
    round-robin over the applications: a worker's batch then needs one Keeper read. Within an application the
    records are dealt round-robin over its devices, each written through the device dealt (devices.py), so every
    device carries an equal share whichever batches the workers take; and they are ordered by account, each
    application starting at a different account, so a batch holds one or two accounts (one AssumeRole each) and
    concurrent batches hit different accounts."""
    position = {account: n for n, account in enumerate(sorted({handoff.account_id for handoff in handoffs}))}
    by_application: dict[tuple[int, ...], list[Handoff]] = {}
    for handoff in handoffs:
        by_application.setdefault(peers_of(handoff.device), []).append(handoff)
    runs: list[list[list[Handoff]]] = []
    for peers, same in sorted(by_application.items()):
        same.sort(key=lambda handoff: (position[handoff.account_id] - peers[0]) % len(position))
        dealt = [replace(handoff, device=peers[n % len(peers)]) for n, handoff in enumerate(same)]
        runs.append([dealt[i : i + QUEUE_BATCH] for i in range(0, len(dealt), QUEUE_BATCH)])
    return [handoff for run in chain.from_iterable(zip_longest(*runs, fillvalue=[])) for handoff in run]


def hand_off(
    items: list[Claim | RecordResult], queue: RotationQueue, limit: int, first: Collection[str], plan: Plan
) -> list[Claim | RecordResult]:
    """Keep `limit` bound records to rotate inline (those in `first`, unfinished rotations, before any other) and
    queue the rest; each queued record's result is `queued`, or `failed`/`queue_unavailable` if it was not sent."""
    claims = [item for item in items if not isinstance(item, RecordResult)]
    inline = [claim for claim in claims if claim.user.uid in first]
    inline += [claim for claim in claims if claim.user.uid not in first][: max(limit - len(inline), 0)]
    kept = {claim.user.uid for claim in inline}
    queued = [claim for claim in claims if claim.user.uid not in kept]
    handoffs = [
        Handoff(c.user.uid, c.account_id, plan.planned_at, plan.device_of(c.user.uid), plan.requested) for c in queued
    ]
    unsent = queue.send(interleave(handoffs, plan.peers_of))
    results = {claim.user.uid: _queued(claim, claim.user.uid in unsent, plan.requested) for claim in queued}
    return [item if isinstance(item, RecordResult) else results.get(item.user.uid, item) for item in items]


QUEUED_FOR_A_CALLER: Final = (
    "more records than Keeper's pace lets one request rotate within API Gateway's 29 s: queued; its outcome is the "
    "function's log line and metrics for this record uid (or send the request again later: a rotated record is "
    "reported rotated)"
)


def _queued(claim: Claim, unsent: bool, requested: bool) -> RecordResult:
    result = RecordResult(claim.user.uid, Status.QUEUED, user_name=claim.target.name, account_id=claim.account_id)
    if requested and not unsent:
        result.message = QUEUED_FOR_A_CALLER
    if unsent:
        result.status, result.code = Status.FAILED, Code.QUEUE_UNAVAILABLE
        result.message = "the rotation queue did not take the record; nothing changed, the next scheduled run retries"
    return result
