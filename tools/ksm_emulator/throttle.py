"""Keeper's two published throttling behaviours, per client device, as pure logic over an injectable clock.

- The SDK's model (``keeper_globals.py``, KSM-876/877): a counter per clientId **and endpoint** in memcached whose
  TTL (``quiet`` seconds) restarts on every request, so the counter only clears after ``quiet`` seconds of silence;
  beyond ``burst`` requests the service answers 403 ``throttled``. A throttled request is a request too: it bumps the
  counter and restarts the timer ("the counter only clears after 10s of silence"), so a client that keeps knocking
  stays locked out. ``retry_after`` is therefore the full quiet period.
- The rate-limit page's model: at most ``requests`` per ``seconds`` per client device, all endpoints together, as a
  sliding window of *accepted* requests. A refused request takes no slot, so ``retry_after`` (when the oldest
  accepted request leaves the window) is exact.

Every ``retry_after`` is rounded *up* to the millisecond: a client that waits exactly that long is accepted (unless
other requests from the same device arrive in between). Not thread-safe: the vault calls it under its lock.
"""

import math
import re
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

_BURST_SPEC = re.compile(r"\s*burst\s*=\s*(?P<burst>\d+)\s*,\s*quiet\s*=\s*(?P<quiet>[0-9.]+)\s*")
_RATE_SPEC = re.compile(r"\s*(?P<requests>\d+)\s*/\s*(?P<seconds>[0-9.]+)\s*")


def _positive(value: float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, not {value!r}")


@dataclass(frozen=True)
class BurstLimit:
    """The SDK's model: more than ``burst`` requests to one endpoint without a ``quiet``-second pause is throttled."""

    burst: int
    quiet: float

    def __post_init__(self) -> None:
        _positive(self.burst, "burst")
        _positive(self.quiet, "quiet")

    @classmethod
    def parse(cls, spec: str) -> Self:
        """``burst=N,quiet=Q`` (the CLI's ``--throttle``)."""
        match = _BURST_SPEC.fullmatch(spec)
        if match is None:
            raise ValueError(f"expected burst=N,quiet=SECONDS (e.g. burst=100,quiet=10), not {spec!r}")
        return cls(int(match["burst"]), float(match["quiet"]))

    def __str__(self) -> str:
        return f"burst={self.burst},quiet={self.quiet:g}"


@dataclass(frozen=True)
class RateLimit:
    """The rate-limit page's model: at most ``requests`` per ``seconds`` per device (Keeper's default is 10/60)."""

    requests: int
    seconds: float

    def __post_init__(self) -> None:
        _positive(self.requests, "requests")
        _positive(self.seconds, "seconds")

    @classmethod
    def parse(cls, spec: str) -> Self:
        """``N/S`` (the CLI's ``--rate-limit``): ``10/60`` is Keeper's; ``10/6`` compresses time tenfold."""
        match = _RATE_SPEC.fullmatch(spec)
        if match is None:
            raise ValueError(f"expected REQUESTS/SECONDS (e.g. 10/60), not {spec!r}")
        return cls(int(match["requests"]), float(match["seconds"]))

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds:g}"


def _round_up_ms(seconds: float) -> float:
    """Up to the next millisecond, ignoring float noise below a microsecond (1.0000000002 ms stays 1 ms)."""
    return math.ceil(seconds * 1000 - 1e-3) / 1000


@dataclass
class _Burst:
    count: int = 0
    last: float = -math.inf


@dataclass
class Limiter:
    """Admits or throttles each authenticated request and counts both, per client device and endpoint."""

    burst: BurstLimit | None = None
    rate: RateLimit | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    throttled: Counter[tuple[str, str]] = field(default_factory=Counter)
    throttled_by: Counter[str] = field(default_factory=Counter)  # which model refused: "burst" or "rate"
    _bursts: dict[tuple[str, str], _Burst] = field(default_factory=lambda: defaultdict(_Burst), repr=False)
    _windows: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque), repr=False)

    def admit(self, client_id: str, route: str) -> float | None:
        """None when the request may proceed, else the seconds after which it would be accepted."""
        now = self.clock()
        key = (client_id, route)
        self.requests[key] += 1
        retry_after, model = self._burst_wait(key, now), "burst"
        if retry_after is None:
            retry_after, model = self._rate_wait(client_id, now), "rate"
        if retry_after is not None:
            self.throttled[key] += 1
            self.throttled_by[model] += 1
            return _round_up_ms(retry_after)
        return None

    def _burst_wait(self, key: tuple[str, str], now: float) -> float | None:
        if self.burst is None:
            return None
        state = self._bursts[key]
        if now - state.last >= self.burst.quiet:
            state.count = 0
        state.count += 1
        state.last = now  # every request restarts the quiet timer, a throttled one included
        return self.burst.quiet if state.count > self.burst.burst else None

    def _rate_wait(self, client_id: str, now: float) -> float | None:
        if self.rate is None:
            return None
        window = self._windows[client_id]
        while window and window[0] <= now - self.rate.seconds:
            window.popleft()
        if len(window) < self.rate.requests:
            window.append(now)
            return None
        return window[0] + self.rate.seconds - now

    def set_burst(self, limit: BurstLimit | None) -> None:
        """Switch the SDK's model on (or off with None), from a clean slate."""
        self.burst = limit
        self._bursts.clear()

    def set_rate(self, limit: RateLimit | None) -> None:
        """Switch the per-device cap on (or off with None), from a clean slate."""
        self.rate = limit
        self._windows.clear()

    def reset_counts(self) -> None:
        self.requests.clear()
        self.throttled.clear()
        self.throttled_by.clear()

    def counts(self) -> dict[str, Any]:
        """JSON-safe counters: requests and throttled answers by client device, then endpoint; throttled answers by
        the model that gave them."""
        return {
            "requests": _nested(self.requests),
            "throttled": _nested(self.throttled),
            "throttled_by": dict(sorted(self.throttled_by.items())),
            "throttled_total": sum(self.throttled.values()),
        }

    def settings(self) -> dict[str, Any]:
        return {
            "throttle": None if self.burst is None else {"burst": self.burst.burst, "quiet": self.burst.quiet},
            "rate_limit": None if self.rate is None else {"requests": self.rate.requests, "seconds": self.rate.seconds},
        }


def _nested(counter: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = defaultdict(dict)
    for (client_id, route), n in sorted(counter.items()):
        nested[client_id][route] = n
    return dict(nested)
