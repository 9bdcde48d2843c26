"""Pacing Keeper requests per client device, shared by every invocation through one DynamoDB table.

Keeper throttles each client device (REFERENCE: Keeper throttling). Two published models, both enforced here before a
request leaves (keeper.py's transport asks `Pacer.admit` first and reports the answer with `Pacer.sent`):
- burst: at most `burst` requests to one endpoint without a `quiet`-second pause (the SDK's model: 100 and 10 s;
  defaults 90 and 11, a margin for requests granted here but delivered later);
- per minute: at most `per_minute` (N) requests per device in any `window` (60 s; off at 0). A request takes one of
  N slots, free once the request that held it last was *answered* a window ago. An answer comes after its request
  arrived, so however late a request is delivered, no window of Keeper's ever holds more than N of them (slots
  counted from send times cannot promise that on a busy host: 2.5 % were throttled in the sandbox).
Per-process sleeping cannot hold either: the schedule, 2+ queue workers, the API, recovery and the CLI all send on
the same device. So the counters live in the pacing table, one item per device and endpoint (burst) and one per
device (per minute: a ring of the last N requests' answer times), and every grant is a conditional UpdateItem: two
invocations can never take the same slot.

Cost: one UpdateItem per Keeper request while a burst has room (two when a burst starts) and one more once it is
answered (`sent`: Keeper's quiet timer restarts when a request arrives, which on a busy host can be long after its
grant); the per-minute cap adds one of each (and a retry when another invocation took the slot first), on an item
of about 10 bytes per slot. A request that cannot be granted within `max_wait` seconds is not sent:
KeeperThrottledError, the record fails `keeper_throttled` and nothing is lost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from .errors import AWS_ERRORS, KeeperThrottledError, describe_aws_error

ANSWER_POLL: Final = 0.25  # seconds between looks at a burst or ring slot whose request is still unanswered
RATE_MARGIN: Final = 1.05  # plans count a per-minute window 5% longer: it opens at an answer, a round trip late


@dataclass(frozen=True)
class Limits:
    """What one client device may send (KEEPER_BURST_LIMIT, KEEPER_QUIET_SECONDS, KEEPER_REQUESTS_PER_MINUTE)."""

    burst: int = 90
    quiet: float = 11.0
    per_minute: int = 0
    window: float = 60.0  # seconds `per_minute` counts over (KEEPER_RATE_WINDOW_SECONDS: only the sandbox's differs)

    def rotations_per_second(self) -> float:
        """The most rotations one device sustains: each takes one update_secret and one finalize_secret_update
        (different endpoints, so in the burst model each endpoint's budget is used once per rotation)."""
        burst = self.burst / self.quiet
        return min(burst, self.per_minute / (self.window * RATE_MARGIN) / 2) if self.per_minute else burst


class RingSlot(NamedTuple):
    """A per-minute ring slot a request holds: its position, and the time written there until the answer."""

    position: int
    held: float


@dataclass(frozen=True)
class Grant:
    """A request `Pacer.admit` let go: what `Pacer.sent` marks answered (`slot`: None without a per-minute cap)."""

    device: str
    endpoint: str
    slot: RingSlot | None = None


def device_id(client_id: str) -> str:
    """How a client device is named in the pacing table: a digest of its KSM clientId, not the id itself."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:24]


class Pacer:
    """Grants Keeper requests under `Limits`, counted in the pacing table. `request_timeout`: the longest a granted
    request can be on its way (Keeper's timeouts); `clock`/`sleep`: for tests."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        limits: Limits,
        max_wait: float,
        request_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db, self._table, self.limits, self._max_wait = dynamodb, table, limits, max_wait
        self._request_timeout, self._clock, self._sleep = request_timeout, clock, sleep
        # each device's ring as last seen here: the next grant's first guess
        self._rings: dict[str, tuple[float, ...] | None] = {}

    def admit(self, device: str, endpoint: str) -> Grant:
        """Return when a request to `endpoint` on `device` may be sent; raise KeeperThrottledError when it may not
        be within `max_wait` seconds (nothing was sent, nothing is held)."""
        deadline = self._clock() + self._max_wait
        try:
            slot = self._minute_slot(device, deadline) if self.limits.per_minute else None
            try:
                while not self._burst_granted(f"{device}#{endpoint}", deadline):
                    pass
            except (KeeperThrottledError, *AWS_ERRORS):
                self._release(device, slot, 0.0)  # never sent: free again (its last answer was a window old)
                raise
        except AWS_ERRORS as error:
            raise KeeperThrottledError(
                f"cannot pace Keeper requests through the table {self._table} ({describe_aws_error(error)}); "
                "nothing was sent to Keeper (PACING_TABLE_NAME names the table, or --stack for the CLI)"
            ) from None
        return Grant(device, endpoint, slot)

    def sent(self, grant: Grant) -> None:
        """The request `grant` let go has been answered (or failed): it arrived at Keeper by now. Keeper's quiet
        timer restarted when it arrived, which may be well after its grant on a busy host, so the burst's pause
        counts from now, and so does the per-minute window its ring slot holds."""
        values = {":now": _ms(self._clock()), ":one": 1, ":zero": 0}
        with suppress(*AWS_ERRORS):  # a request not marked answered stops counting after request_timeout
            self._update(
                f"{grant.device}#{grant.endpoint}",
                "SET lastAt = :now, inflight = inflight - :one",
                "inflight > :zero",
                values,
            )
        self._release(grant.device, grant.slot, values[":now"])

    def _release(self, device: str, slot: RingSlot | None, answered: float) -> None:
        """Write the answer time into the ring slot a request held, unless a later request has taken the slot since
        (this one was presumed dead)."""
        if slot is None:
            return
        index, held = slot
        with suppress(*AWS_ERRORS):
            self._update(
                f"{device}#minute",
                f"SET ring[{index}] = :answered",
                f"ring[{index}] = :held",
                {":answered": answered, ":held": held},
            )
        ring = self._rings.get(device)
        if ring is not None and index < len(ring) and ring[index] == held:
            self._rings[device] = _replaced(ring, index, answered)

    def _wait_until(self, slot: float, deadline: float, device: str) -> None:
        if slot > deadline:
            raise KeeperThrottledError(
                f"client device {device} has no Keeper request free within {self._max_wait:g} s (pacing)"
            )
        delay = slot - self._clock()
        if delay > 0:
            self._sleep(delay)

    def _minute_slot(self, device: str, deadline: float) -> RingSlot:
        """Take one of the device's N per-minute ring slots, the one free longest: a slot is free once the answer to
        the request that last held it is a window old. Of any N+1 requests two held one slot, the later granted a
        window after the earlier was answered, so no window of Keeper's holds N+1. While held, a slot reads the time
        its request stops counting if never answered (a dead process): `deadline` plus request_timeout, later than
        any answer, so a slot "in the future" is on its way."""
        limits, key = self.limits, f"{device}#minute"
        held = _ms(deadline + self._request_timeout)
        while True:
            now, ring = self._clock(), self._rings.get(device)
            if ring is None or len(ring) != limits.per_minute:
                fresh = _ring(ring, held, limits.per_minute)
                create = "attribute_not_exists(ring) OR size(ring) <> :n"
                values = {":n": limits.per_minute, ":ring": list(fresh)}
                granted, old = self._update(key, "SET ring = :ring", create, values, "ALL_OLD", raw=True)
                self._rings[device] = fresh if granted else _read_ring(old)
                if granted:
                    return RingSlot(0, held)
                continue
            index = _longest_free(ring, now)
            free_at = ring[index] + limits.window if ring[index] <= now else now + ANSWER_POLL  # all on their way
            if free_at > now:
                self._wait_until(free_at, deadline, device)
                now = self._clock()
            values = {":held": held, ":free_before": now - limits.window}
            free = f"ring[{index}] <= :free_before"
            granted, old = self._update(key, f"SET ring[{index}] = :held", free, values, "ALL_OLD", raw=True)
            before = _read_ring(old)  # the item before this update, whether or not it applied
            if granted and before is not None:
                self._rings[device] = _replaced(before, index, held)
                return RingSlot(index, held)
            self._rings[device] = before

    def _burst_granted(self, key: str, deadline: float) -> bool:
        """One request of the endpoint's burst: granted (True), or not yet (False: ask again, after sleeping if the
        burst is full). Keeper's count restarts after `quiet` seconds without a request *arriving*, so a burst
        restarts only once every granted request has been answered (`inflight` 0) and `quiet` seconds have passed
        since; a request unanswered after `request_timeout` is dead (its process crashed) and no longer counts."""
        limits, now = self.limits, self._clock()
        values = {
            ":now": now,
            ":burst": limits.burst,
            ":quiet_since": now - limits.quiet,
            ":stale_since": now - limits.quiet - self._request_timeout,
            ":one": 1,
            ":zero": 0,
        }
        in_burst = "#count < :burst AND (lastAt > :quiet_since OR inflight > :zero)"
        grant = "SET #count = #count + :one, lastAt = :now, inflight = if_not_exists(inflight, :zero) + :one"
        if self._update(key, grant, in_burst, values)[0]:
            return True
        quiet = "lastAt <= :quiet_since AND (attribute_not_exists(inflight) OR inflight <= :zero)"
        fresh = f"attribute_not_exists(lastAt) OR lastAt <= :stale_since OR ({quiet})"
        start = "SET #count = :one, lastAt = :now, inflight = :one"
        granted, old = self._update(key, start, fresh, values, "ALL_OLD")
        if granted:
            return True
        if old.get("count", 0) >= limits.burst:  # full: wait for the quiet pause, or for the last answers
            until = old["lastAt"] + limits.quiet if old.get("inflight", 0) <= 0 else now + ANSWER_POLL
            self._wait_until(until, deadline, key.split("#", maxsplit=1)[0])
        return False

    def _update(
        self, key: str, update: str, condition: str, values: dict[str, Any], returns: str = "NONE", raw: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        """A conditional UpdateItem on the item `key`: whether it was applied, and the top-level numbers `returns`
        asks for (ALL_OLD: the item before, whether or not the condition held), or the item as DynamoDB answers it
        when `raw`. `values`: numbers, and lists of numbers."""
        expressions = update + condition
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key={"id": {"S": key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues={name: _value(v) for name, v in values.items() if name in expressions},
                **({"ExpressionAttributeNames": {"#count": "count"}} if "#count" in expressions else {}),
                ReturnValues=returns,
                **({"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if returns == "ALL_OLD" else {}),
            )
        except self._db.exceptions.ConditionalCheckFailedException as failed:
            old = failed.response.get("Item", {})
            return False, old if raw else _numbers(old)
        attributes = answer.get("Attributes", {})
        return True, attributes if raw else _numbers(attributes)


def _read_ring(item: dict[str, Any]) -> tuple[float, ...] | None:
    """A device's per-minute ring as DynamoDB answered it: each slot's answer time, or the time it stops counting
    while its request is on its way (None: no ring yet)."""
    return tuple(float(slot["N"]) for slot in item["ring"]["L"]) if "ring" in item else None


def _ring(old: tuple[float, ...] | None, held: float, slots: int) -> tuple[float, ...]:
    """A new ring whose first slot is held: its other slots free now, or, replacing a ring of another size (the cap
    changed), a window after the old ring's last answer."""
    last = max((t for t in old if t <= held), default=0.0) if old else 0.0
    return (held, *([last] * (slots - 1)))


def _longest_free(ring: tuple[float, ...], now: float) -> int:
    """The slot whose last answer is oldest (the first slot when every one is still on its way)."""
    return min(range(len(ring)), key=lambda i: ring[i] if ring[i] <= now else float("inf"))


def _replaced(ring: tuple[float, ...], index: int, at: float) -> tuple[float, ...]:
    return (*ring[:index], at, *ring[index + 1 :])


def _ms(seconds: float) -> float:
    """Times are stored to the millisecond: short items, and a held slot compares equal to what was written."""
    return round(seconds, 3)


def _value(value: float | list[float]) -> dict[str, Any]:
    if isinstance(value, list):
        return {"L": [{"N": repr(v)} for v in value]}
    return {"N": repr(value)}


def _numbers(item: dict[str, Any]) -> dict[str, float]:
    return {name: float(value["N"]) for name, value in item.items() if "N" in value}
