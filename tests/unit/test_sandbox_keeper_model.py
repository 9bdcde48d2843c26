"""The sandbox tells the handler how to pace for the emulator's throttling model, and reports the ceiling each model
allows (rotator_sandbox.keeper_model); fleet drives scheduled runs while they defer (rotator_sandbox.fleet.drive)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ksm_emulator.throttle import BurstLimit, RateLimit
from rotator_sandbox import fleet
from rotator_sandbox.keeper_model import model_ceiling, pacing_ceiling, pacing_env, time_compression
from rotator_sandbox.stack import Invocation

KEEPER_SDK = BurstLimit(100, 10)
COMPRESSED = RateLimit(10, 2)  # Keeper's 10/60, thirty times faster


def test_the_sdk_model_gets_the_functions_defaults_and_the_per_minute_model_the_emulators_cap():
    assert pacing_env(KEEPER_SDK, None, {}) == {"KEEPER_BURST_LIMIT": "90", "KEEPER_QUIET_SECONDS": "11"}
    # compressed: the same 10 requests, over the emulator's 2-second window
    compressed = {"KEEPER_REQUESTS_PER_MINUTE": "10", "KEEPER_RATE_WINDOW_SECONDS": "2"}
    assert pacing_env(None, COMPRESSED, {}) == compressed
    assert pacing_env(None, RateLimit(7, 60), {}) == {
        "KEEPER_REQUESTS_PER_MINUTE": "7",
        "KEEPER_RATE_WINDOW_SECONDS": "60",
    }
    assert pacing_env(None, RateLimit(10, 120), {}) == {"KEEPER_REQUESTS_PER_MINUTE": "5"}
    assert pacing_env(None, None, {}) == {}


def test_the_users_pacing_variables_win():
    environ = {"KEEPER_BURST_LIMIT": " 50 ", "KEEPER_REQUESTS_PER_MINUTE": "", "KEEPER_QUIET_SECONDS": "12"}

    assert pacing_env(KEEPER_SDK, COMPRESSED, environ) == {
        "KEEPER_BURST_LIMIT": "50",
        "KEEPER_QUIET_SECONDS": "12",
        "KEEPER_REQUESTS_PER_MINUTE": "10",  # empty: not set
        "KEEPER_RATE_WINDOW_SECONDS": "2",
    }
    assert pacing_env(None, None, {"KEEPER_QUIET_SECONDS": "3"}) == {"KEEPER_QUIET_SECONDS": "3"}


def test_ceilings_per_device_hour():
    assert model_ceiling(KEEPER_SDK, None) == 36_000  # 100 update_secret and 100 finalize per 10 s
    assert model_ceiling(None, RateLimit(10, 60)) == 300  # 10 requests a minute: 5 rotations
    assert model_ceiling(None, COMPRESSED) == 9_000
    # both: 2.5 rotations/s reach the burst of 100 in 40 s, then 10 s of quiet: 100 per 50 s
    assert model_ceiling(KEEPER_SDK, COMPRESSED) == pytest.approx(7_200)
    assert model_ceiling(None, None) is None
    assert time_compression(COMPRESSED) == 30
    assert pacing_ceiling({}) == pytest.approx(3600 * 90 / 11)
    # the handler's burst pacing stays on under a per-minute cap: 90 per (36 s + 11 s)
    assert pacing_ceiling({"KEEPER_REQUESTS_PER_MINUTE": "300"}) == pytest.approx(3600 * 90 / 47)
    assert pacing_ceiling({"KEEPER_REQUESTS_PER_MINUTE": "10", "KEEPER_RATE_WINDOW_SECONDS": "2"}) == pytest.approx(
        3600 * 90 / (36 + 11)
    )
    assert pacing_ceiling({"KEEPER_BURST_LIMIT": "10", "KEEPER_QUIET_SECONDS": "1"}) == 36_000


class ScriptedSandbox:
    """Answers each scheduled run with the next summary, as the handler would, and writes its stats file."""

    def __init__(self, summaries: list[dict[str, int]]) -> None:
        self.summaries = summaries
        self.runs = 0

    def invoke(self, event: dict[str, Any], extra_env: dict[str, str], timeout: float) -> Invocation:
        Path(extra_env["SANDBOX_STATS_FILE"]).write_text(json.dumps({"calls": {}, "maxrss_kb": 1}))
        summary = self.summaries[self.runs]
        self.runs += 1
        return Invocation(0, {"summary": summary}, "", "")


class EmptyQueue:
    def receive_event(self) -> None:
        return None

    def depth(self, url: str | None = None) -> int:
        return 0


def test_fleet_runs_the_schedule_again_while_runs_defer(tmp_path, monkeypatch):
    monkeypatch.setattr(fleet, "STALL_WAIT", 0.0)
    sb = ScriptedSandbox(
        [{"rotated": 5, "deferred": 10}, {"queued": 5, "deferred": 5}, {"deferred": 5}, {"rotated": 5, "deferred": 0}]
    )

    run = fleet.drive(sb, EmptyQueue(), {}, [], tmp_path, max_runs=10)  # type: ignore[arg-type]

    assert run.error == ""
    assert [p.deferred for p in run.passes] == [10, 5, 5, 0]
    assert len(run.stats) == 4


def test_fleet_gives_up_when_runs_keep_deferring_without_planning(tmp_path, monkeypatch):
    monkeypatch.setattr(fleet, "STALL_WAIT", 0.0)
    sb = ScriptedSandbox([{"deferred": 3}] * 20)

    run = fleet.drive(sb, EmptyQueue(), {}, [], tmp_path, max_runs=10)  # type: ignore[arg-type]

    assert sb.runs == fleet.STALLS + 1
    assert "deferred 3 records and planned none" in run.error
