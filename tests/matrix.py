"""Collects fault-matrix outcomes so the run can print them as one table at the end (see conftest.py)."""

from __future__ import annotations

OUTCOMES: list[tuple[str, str, str]] = []


def record(case: str, first_run: str, after_recovery: str) -> None:
    OUTCOMES.append((case, first_run, after_recovery))
