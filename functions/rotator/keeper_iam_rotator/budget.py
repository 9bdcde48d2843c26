"""Keeper's budget: how many rotations the client devices can serve, for the scheduled run's plan and for a caller's
request (pacing.py enforces the pace itself; this only keeps plans within it).

- A scheduled run plans at most what its usable devices rotate at their pace before the next run, less HEADROOM
  (the API, the queue's retries and recovery share the devices); the rest is `deferred`, most overdue first, and
  the next run picks it up. A first deployment over thousands of never-rotated records is spread that way.
- A caller's request rotates itself what fits in API Gateway's 29 s at the pace (REQUEST_SECONDS); the rest is
  handed to the rotation queue and answered `queued`.
"""

from __future__ import annotations

from typing import Final

from .pacing import Limits

HEADROOM: Final = 0.25  # of the devices' capacity left to the API, the queue's retries and recovery
REQUEST_SECONDS: Final = 20.0  # of API Gateway's 29 s, the part a request's rotations may spend waiting for pace


def per_scheduled_run(limits: Limits, devices: int, period_seconds: float) -> int:
    """Rotations one scheduled run may plan: what `devices` serve in one schedule period, less the headroom."""
    return int(devices * limits.rotations_per_second() * period_seconds * (1 - HEADROOM))


def within_a_request(limits: Limits, devices: int) -> int:
    """Rotations a caller's request does itself (at least one): what `devices` serve in REQUEST_SECONDS."""
    return max(1, int(devices * limits.rotations_per_second() * REQUEST_SECONDS))
