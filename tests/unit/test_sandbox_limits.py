"""The sandbox's commands hand --throttle / --rate-limit / --no-throttle to its KSM emulator."""

from __future__ import annotations

from typing import Any

import pytest

from ksm_emulator.throttle import BurstLimit, RateLimit
from rotator_sandbox import __main__ as sandbox_cli
from rotator_sandbox.stack import DEFAULT_LIMITS, DEFAULT_THROTTLE, KeeperLimits, Sandbox

RUNNERS = {
    "demo": "run_demo",
    "bench": "run_bench",
    "converge": "run_converge",
    "fleet": "run_fleet",
    "serve": "run_serve",
}


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-ins for the commands' runners: they only record the limits they were given."""
    seen: dict[str, Any] = {}
    for command, runner in RUNNERS.items():

        def record(command: str = command, **kwargs: Any) -> int:
            seen[command] = kwargs["limits"]
            return 0

        monkeypatch.setattr(sandbox_cli, runner, record)
    return seen


@pytest.mark.parametrize("command", RUNNERS)
def test_every_command_passes_the_limits(handed, command):
    assert sandbox_cli.main([command, "--throttle", "burst=5,quiet=0.5", "--rate-limit", "10/6"]) == 0
    assert handed[command] == KeeperLimits(BurstLimit(5, 0.5), RateLimit(10, 6.0))

    assert sandbox_cli.main([command]) == 0
    assert handed[command] == DEFAULT_LIMITS == KeeperLimits(DEFAULT_THROTTLE, None)

    assert sandbox_cli.main([command, "--no-throttle"]) == 0
    assert handed[command] == KeeperLimits(None, None)


@pytest.mark.parametrize(
    "args", [["--no-throttle", "--throttle", "burst=1,quiet=1"], ["--no-throttle", "--rate-limit", "1/1"]]
)
def test_no_throttle_contradicts_the_others(handed, args, capsys):
    with pytest.raises(SystemExit) as exited:
        sandbox_cli.main(["demo", *args])

    assert exited.value.code == 2
    assert "--no-throttle" in capsys.readouterr().err


def test_the_sandbox_emulator_keeps_its_limits_across_resets():
    limits = KeeperLimits(BurstLimit(7, 0.5), RateLimit(10, 6.0))
    with Sandbox(limits=limits) as sb:
        sb.keeper.vault.set_throttle(None)
        sb.reset()
        state = sb.keeper.vault.throttle_state()

    assert state["throttle"] == {"burst": 7, "quiet": 0.5}
    assert state["rate_limit"] == {"requests": 10, "seconds": 6.0}
