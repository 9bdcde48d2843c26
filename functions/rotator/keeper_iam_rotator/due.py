"""Rotation when due: the scheduled run rotates a record only when this rotator never rotated it, or its last
successful rotation is at least its period old. Explicit requests (API, invoke, CLI) always rotate.

- Period: `RotationPeriodDays` (ROTATION_PERIOD_DAYS), or the record's custom field `rotation_period_days` (a
  positive integer, at most 365; anything else is ignored with a warning, and the default applies).
- Last rotated: the journal item of the record's IAM user keeps `rotatedAt` when it closes after a successful
  rotation. Closed items live 400 days (longer than any period) and the table is retained across redeploys, so
  "never rotated" really means never. The scheduled run reads it in the one journal Scan it already makes.
- Spread: a record is due up to EARLY_SECONDS plus a fixed share (0-10%) of its period early, the share taken from a
  hash of its uid. A daily schedule that started a few minutes late still finds a 30-day record due on day 30, and a
  fleet first rotated on one day falls into different days within a few cycles instead of every 30th day at once.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

from .journal import Entry
from .keeper import PamUser

PERIOD_FIELD = "rotation_period_days"
MAX_PERIOD_DAYS = 365
EARLY_SECONDS = 2 * 3600
JITTER_SHARE = 0.1
DAY = 86400
log = logging.getLogger(__name__)
W = TypeVar("W")


def last_rotations(entries: Iterable[Entry]) -> dict[str, float]:
    """Record uid -> the time this rotator last rotated that record's user successfully, from the items whose
    integrity MAC verifies (an unsigned or tampered item's `rotatedAt` counts for nothing: the record is due)."""
    last: dict[str, float] = {}
    for entry in entries:
        if entry.rotated_at and entry.trusted_history:
            last[entry.record_uid] = max(entry.rotated_at, last.get(entry.record_uid, 0.0))
    return last


def period_days(user: PamUser, default_days: int) -> int:
    raw = user.custom(PERIOD_FIELD)
    if not raw:
        return default_days
    if raw.isdigit() and 1 <= int(raw) <= MAX_PERIOD_DAYS:
        return int(raw)
    log.warning(
        "ignoring an invalid rotation_period_days; the default applies",
        extra={"record_uid": user.uid, "value": raw[:20], "default_days": default_days},
    )
    return default_days


def rotated_before(user: PamUser, default_days: int, now: float) -> float:
    """The latest last-rotation time at which the record is due now (the journal refuses a later one)."""
    period = period_days(user, default_days) * DAY
    return now - (period - EARLY_SECONDS - JITTER_SHARE * period * _share(user.uid))


def overdue(user: PamUser, last: dict[str, float], default_days: int, now: float) -> float:
    """How long ago the record became due, in seconds (infinite when never rotated): the budget's order."""
    rotated_at = last.get(user.uid)
    return math.inf if rotated_at is None else rotated_before(user, default_days, now) - rotated_at


def is_due(user: PamUser, last: dict[str, float], default_days: int, now: float) -> bool:
    rotated_at = last.get(user.uid)
    return rotated_at is None or rotated_at <= rotated_before(user, default_days, now)


def select(
    work: Sequence[W], last: dict[str, float], default_days: int, now: float, always: Iterable[str] = ()
) -> tuple[list[W], int]:
    """The items to run (due records, records in `always`, and anything that is not a record) and how many records
    were left alone because they are not due."""
    keep = set(always)
    chosen = [
        item
        for item in work
        if not isinstance(item, PamUser) or item.uid in keep or is_due(item, last, default_days, now)
    ]
    return chosen, len(work) - len(chosen)


def _share(uid: str) -> float:
    """A stable number in [0, 1) per record."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") / 2**64
