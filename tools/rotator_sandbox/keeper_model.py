"""What the sandbox's Keeper throttling model means for the handler: the pacing settings a sandbox gives the handler
so that it paces under the emulator's limits, and the rotations per client device-hour each model allows.

A rotation costs one ``update_secret`` (stage) and one ``finalize_secret_update`` (commit) on the device that serves
it, so:
- the SDK's model (``--throttle burst=N,quiet=Q``: at most N requests per device *and endpoint* without a Q-second
  pause) allows at most N rotations per Q seconds per device: 3600·N/Q rotations per device-hour;
- the per-minute model (``--rate-limit N/W``: N requests per W seconds per device, all endpoints together) allows
  R = N·60/W requests per minute, R/2 rotations per minute: 30·R per device-hour;
- both at once: at r = R/120 rotations per second a burst of N takes N/r seconds and must then pause Q, so
  N/(N/r + Q) rotations per second. The handler paces under both whenever a per-minute cap is set (its burst pacing
  is always on), so its own ceiling is that combination even when the emulator runs the per-minute model alone.
``--rate-limit 10/2`` is Keeper's documented 10/60 thirty times faster: the sandbox compresses time, and the handler
is told the compressed cap (KEEPER_REQUESTS_PER_MINUTE = N over KEEPER_RATE_WINDOW_SECONDS = W: see rate_env).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ksm_emulator.throttle import BurstLimit, RateLimit

FUNCTION_BURST_LIMIT = 90  # template.yaml's KeeperBurstLimit default: 10 below Keeper's 100, for other clients
FUNCTION_QUIET_SECONDS = 11  # KeeperQuietSeconds: 1 s above Keeper's 10, for clock and network slack
KEEPER_RATE = RateLimit(10, 60)  # Keeper's documented per-device default
REQUESTS_PER_ROTATION = 2  # update_secret + finalize_secret_update
PACING_VARIABLES = (
    "KEEPER_BURST_LIMIT",
    "KEEPER_QUIET_SECONDS",
    "KEEPER_REQUESTS_PER_MINUTE",
    "KEEPER_RATE_WINDOW_SECONDS",
)


def rate_env(rate: RateLimit) -> dict[str, str]:
    """The per-minute cap the handler gets for the emulator's N/W: N per window of W seconds when W is at most a
    minute (compressed time: the handler counts its window from answers, so a loaded host's late deliveries need no
    extra margin), else N·60/W per minute, rounded down (never above the model)."""
    if rate.seconds <= KEEPER_RATE.seconds:
        return {"KEEPER_REQUESTS_PER_MINUTE": str(rate.requests), "KEEPER_RATE_WINDOW_SECONDS": f"{rate.seconds:g}"}
    return {"KEEPER_REQUESTS_PER_MINUTE": str(max(1, math.floor(rate.requests * 60 / rate.seconds + 1e-9)))}


def pacing_env(throttle: BurstLimit | None, rate: RateLimit | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The handler's pacing variables for a sandbox whose emulator throttles with `throttle` and `rate`: the
    function's defaults under the SDK's model, the emulator's cap (per minute) under the per-minute one, and any of
    PACING_VARIABLES set (non-empty) in `environ` instead."""
    env: dict[str, str] = {}
    if throttle is not None:
        env |= {"KEEPER_BURST_LIMIT": str(FUNCTION_BURST_LIMIT), "KEEPER_QUIET_SECONDS": str(FUNCTION_QUIET_SECONDS)}
    if rate is not None:
        env |= rate_env(rate)
    env |= {name: environ[name].strip() for name in PACING_VARIABLES if environ.get(name, "").strip()}
    return env


def time_compression(rate: RateLimit) -> float:
    """How much faster than Keeper's documented 10/60 the emulator's per-minute model runs (10/2: 30)."""
    return (rate.requests / rate.seconds) / (KEEPER_RATE.requests / KEEPER_RATE.seconds)


def _combined(burst: float | None, quiet: float, per_second: float) -> float:
    """Rotations per device-hour under a burst limit (None: none) and a cap of requests per second (0: none), both at
    once."""
    rate = per_second / REQUESTS_PER_ROTATION if per_second else math.inf  # rotations per second
    if burst is None:
        return 3600 * rate
    return 3600 * burst / (burst / rate + quiet)


def model_ceiling(throttle: BurstLimit | None, rate: RateLimit | None) -> float | None:
    """Rotations per device-hour the emulator's models allow (both when both are on); None when neither is."""
    if throttle is None and rate is None:
        return None
    per_second = 0.0 if rate is None else rate.requests / rate.seconds
    return _combined(throttle and throttle.burst, throttle.quiet if throttle else 0.0, per_second)


def pacing_ceiling(env: Mapping[str, str]) -> float:
    """Rotations per device-hour the handler's pacing allows itself (its defaults where `env` is silent): its burst
    pacing, slowed further by a per-minute cap when one is set."""
    burst = float(env.get("KEEPER_BURST_LIMIT") or FUNCTION_BURST_LIMIT)
    quiet = float(env.get("KEEPER_QUIET_SECONDS") or FUNCTION_QUIET_SECONDS)
    window = float(env.get("KEEPER_RATE_WINDOW_SECONDS") or KEEPER_RATE.seconds)
    return _combined(burst, quiet, float(env.get("KEEPER_REQUESTS_PER_MINUTE") or 0) / window)
