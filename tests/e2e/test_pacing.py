"""Keeper pacing shared by concurrent invocations: two handler processes on one client device, against an emulator
that throttles like Keeper, never receive a throttled answer (counted by the emulator), and every password lands."""

from __future__ import annotations

import pytest

from rotator_sandbox import Sandbox

from .conftest import assert_converged, record_outcome, statuses

pytestmark = pytest.mark.e2e


def rotate_concurrently(sb: Sandbox, users: list, env: dict[str, str]) -> list:
    """Two direct invokes at once, each naming half of the records, on the sandbox's one client device."""
    halves = [users[: len(users) // 2], users[len(users) // 2 :]]
    processes = [sb.start_invoke({"records": [u.uid for u in half]}, env) for half in halves]
    return [sb.finish(process, timeout=300) for process in processes]


def test_two_invocations_on_one_device_stay_under_the_burst_limit(sb):
    """Keeper's SDK model scaled down (burst 10, quiet 1 s): 24 rotations send 24 update_secret and 24
    finalize_secret_update requests, well past one burst, from two processes at once."""
    sb.keeper.vault.set_throttle(10, quiet=1.0)
    users = [sb.add_user(f"e2e-paced-{n}") for n in range(24)]

    runs = rotate_concurrently(sb, users, {"KEEPER_BURST_LIMIT": "8", "KEEPER_QUIET_SECONDS": "1.5"})

    assert all(run.exit_code == 0 for run in runs), runs[0].stderr[-2000:]
    assert [(r["status"], r.get("error")) for run in runs for r in run.results] == [("rotated", None)] * 24
    assert sb.keeper.vault.throttled_total == 0
    assert sb.keeper.vault.calls["update_secret"] == len(users)  # three bursts' worth on one device
    for user in users:
        assert_converged(sb, user)
    record_outcome("2 processes, 1 device, burst 10/1 s", "-", " + ".join(statuses(run) for run in runs))


def test_two_invocations_on_one_device_stay_under_the_per_minute_cap(sb):
    """The per-minute model compressed thirty times (10 requests per 2 s), paced at exactly that cap: no margin for
    a busy host's late deliveries, because each window is counted from an answer (pacing.py)."""
    sb.keeper.vault.set_rate_limit(10, seconds=2.0)
    users = [sb.add_user(f"e2e-minute-{n}") for n in range(12)]

    runs = rotate_concurrently(sb, users, {"KEEPER_REQUESTS_PER_MINUTE": "10", "KEEPER_RATE_WINDOW_SECONDS": "2"})

    assert all(run.exit_code == 0 for run in runs), runs[0].stderr[-2000:]
    assert [(r["status"], r.get("error")) for run in runs for r in run.results] == [("rotated", None)] * 12
    assert sum(sb.keeper.vault.calls.values()) > 2 * 10  # the cap was binding: more than two windows' worth
    assert sb.keeper.vault.throttled_total == 0
    for user in users:
        assert_converged(sb, user)
    record_outcome("2 processes, 1 device, 10 per 2 s", "-", " + ".join(statuses(run) for run in runs))


def test_without_pacing_the_same_load_is_throttled(sb):
    """The test above can fail: with pacing off, the emulator throttles the same load, and the records it throttles
    end `keeper_throttled` with nothing lost."""
    sb.keeper.vault.set_rate_limit(10, seconds=2.0)
    users = [sb.add_user(f"e2e-unpaced-{n}") for n in range(6)]

    runs = rotate_concurrently(sb, users, {"KEEPER_PACING": "false"})

    assert sb.keeper.vault.throttled_total > 0
    codes = {r.get("error", {}).get("code") for run in runs for r in run.results}
    assert "keeper_throttled" in codes
    for user in users:
        assert sb.iam_password(user.name) in {sb.keeper_password(user.uid), *sb.journal_passwords()}
