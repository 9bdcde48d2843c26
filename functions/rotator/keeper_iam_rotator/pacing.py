"""Pacing Keeper requests per client device, shared by every invocation through one DynamoDB table.

Keeper throttles each client device (REFERENCE: Keeper throttling). Two published models, both enforced here before a
request leaves (keeper.py's transport asks `Pacer.admit` first):
- burst: at most `burst` requests to one endpoint without a `quiet`-second pause (the SDK's model: 100 and 10 s;
  defaults 90 and 11, a margin for requests granted here but delivered later);
- per minute: at most `per_minute` requests per device in any 60 s, as slots `60/per_minute` s apart (off at 0).
Per-process sleeping cannot hold either: the schedule, 2+ queue workers, the API, recovery and the CLI all send on
the same device. So the counters live in the pacing table, one item per device and endpoint (burst) and one per
device (per minute), and every grant is a conditional UpdateItem: two invocations can never take the same slot.

Cost: one UpdateItem per Keeper request while a burst has room (two when a burst starts or a slot is reserved ahead),
and one more once it is answered (`sent`: Keeper's quiet timer restarts when a request arrives, which on a busy host
can be long after its grant), so about 4-5 writes per rotation; items are a few per device. A request that cannot be
granted within `max_wait` seconds is not sent: KeeperThrottledError, the record fails `keeper_throttled` and nothing
is lost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from .errors import AWS_ERRORS, KeeperThrottledError, describe_aws_error

WINDOW: Final = 60.0  # the per-minute model's window, seconds
SLOT_MARGIN: Final = 1.02  # per-minute slots 2% further apart than the limit allows: clocks and delivery jitter


@dataclass(frozen=True)
class Limits:
    """What one client device may send (KEEPER_BURST_LIMIT, KEEPER_QUIET_SECONDS, KEEPER_REQUESTS_PER_MINUTE)."""

    burst: int = 90
    quiet: float = 11.0
    per_minute: int = 0

    def rotations_per_second(self) -> float:
        """The most rotations one device sustains: each takes one update_secret and one finalize_secret_update
        (different endpoints, so in the burst model each endpoint's budget is used once per rotation)."""
        burst = self.burst / self.quiet
        return min(burst, self.per_minute / WINDOW / 2) if self.per_minute else burst


def device_id(client_id: str) -> str:
    """How a client device is named in the pacing table: a digest of its KSM clientId, not the id itself."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:24]


class Pacer:
    """Grants Keeper requests under `Limits`, counted in the pacing table. `clock`/`sleep`: for tests."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        limits: Limits,
        max_wait: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db, self._table, self.limits, self._max_wait = dynamodb, table, limits, max_wait
        self._clock, self._sleep = clock, sleep

    def admit(self, device: str, endpoint: str) -> None:
        """Return when a request to `endpoint` on `device` may be sent; raise KeeperThrottledError when it may not
        be within `max_wait` seconds (nothing was sent)."""
        deadline = self._clock() + self._max_wait
        try:
            if self.limits.per_minute:
                self._wait_until(self._minute_slot(device, deadline), deadline, device)
            while not self._burst_granted(f"{device}#{endpoint}", deadline):
                pass
        except AWS_ERRORS as error:
            raise KeeperThrottledError(
                f"cannot pace Keeper requests through the table {self._table} ({describe_aws_error(error)}); "
                "nothing was sent to Keeper (PACING_TABLE_NAME names the table, or --stack for the CLI)"
            ) from None

    def sent(self, device: str, endpoint: str) -> None:
        """The request granted for `endpoint` has been answered (or failed): Keeper's quiet timer restarted when it
        arrived, which may be well after its grant on a busy host, so the burst's pause counts from now."""
        now = self._clock()
        with suppress(*AWS_ERRORS):  # only a margin is lost: the grant itself was counted
            self._update(f"{device}#{endpoint}", "SET lastAt = :now", "lastAt < :now", {":now": now})

    def _wait_until(self, slot: float | None, deadline: float, device: str) -> None:
        if slot is None or slot > deadline:
            raise KeeperThrottledError(
                f"client device {device} has no Keeper request free within {self._max_wait:g} s (pacing)"
            )
        delay = slot - self._clock()
        if delay > 0:
            self._sleep(delay)

    def _minute_slot(self, device: str, deadline: float) -> float | None:
        """Reserve the device's next per-minute slot (now, or the first free one ahead) and return when it is;
        None when the first free slot is past the deadline (nothing reserved)."""
        spacing = WINDOW / self.limits.per_minute * SLOT_MARGIN
        now, key = self._clock(), f"{device}#minute"
        free = "attribute_not_exists(nextAt) OR nextAt <= :now"
        if self._update(key, "SET nextAt = :next", free, {":next": now + spacing, ":now": now})[0]:
            return now
        ahead = {":spacing": spacing, ":latest": deadline}
        granted, item = self._update(key, "SET nextAt = nextAt + :spacing", "nextAt <= :latest", ahead, "UPDATED_NEW")
        return item["nextAt"] - spacing if granted else None

    def _burst_granted(self, key: str, deadline: float) -> bool:
        """One request of the endpoint's burst: granted (True), or not yet (False: ask again, after sleeping until
        the burst's quiet pause has passed if it is full). The count restarts after `quiet` seconds without a
        grant, as Keeper's timer restarts on every request."""
        limits, now = self.limits, self._clock()
        values = {":now": now, ":burst": limits.burst, ":quiet_since": now - limits.quiet, ":one": 1}
        in_burst = "#count < :burst AND lastAt > :quiet_since"
        if self._update(key, "SET #count = #count + :one, lastAt = :now", in_burst, values)[0]:
            return True
        fresh = "attribute_not_exists(lastAt) OR lastAt <= :quiet_since"
        granted, old = self._update(key, "SET #count = :one, lastAt = :now", fresh, values, "ALL_OLD")
        if granted:
            return True
        if old.get("count", 0) >= limits.burst:  # full: Keeper counts until `quiet` seconds pass without a request
            self._wait_until(old["lastAt"] + limits.quiet, deadline, key.split("#", maxsplit=1)[0])
        return False

    def _update(
        self, key: str, update: str, condition: str, values: dict[str, float], returns: str = "NONE"
    ) -> tuple[bool, dict[str, float]]:
        """A conditional UpdateItem on the item `key`: whether it was applied, and the numbers `returns` asks for
        (on a failed condition: the item as it was, when `returns` is ALL_OLD)."""
        expressions = update + condition
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key={"id": {"S": key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues={name: {"N": repr(v)} for name, v in values.items() if name in expressions},
                **({"ExpressionAttributeNames": {"#count": "count"}} if "#count" in expressions else {}),
                ReturnValues="NONE" if returns == "ALL_OLD" else returns,
                **({"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if returns == "ALL_OLD" else {}),
            )
        except self._db.exceptions.ConditionalCheckFailedException as failed:
            return False, _numbers(failed.response.get("Item", {}))
        return True, _numbers(answer.get("Attributes", {}))


def _numbers(item: dict[str, Any]) -> dict[str, float]:
    return {name: float(value["N"]) for name, value in item.items() if "N" in value}
