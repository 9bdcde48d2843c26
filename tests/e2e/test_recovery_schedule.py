"""The recovery schedule (`{"action": "recover"}`, every 15 minutes by default) finishes a rotation whose process
really died, without waiting for the main schedule, and does nothing at all when nothing is unfinished."""

from __future__ import annotations

import json

import pytest

from rotator_sandbox.hooks import CRASH_EXIT_CODE
from rotator_sandbox.stack import load_event

from .conftest import LEASE_ENV, assert_converged, assert_no_leak, held_passwords, record_outcome, statuses
from .conftest import wait_for_lease as wait_out_lease

pytestmark = pytest.mark.e2e
RECOVER = {"action": "recover"}


def test_recovery_schedule_finishes_a_scheduled_run_that_died_after_iam_changed(sb):
    users = [sb.add_user(f"e2e-recover-{i}") for i in range(3)]
    crash_env = {**LEASE_ENV, "SANDBOX_CRASH_AFTER": "aws:iam:UpdateLoginProfile#2", "ROTATION_CONCURRENCY": "1"}
    crashed = sb.invoke(load_event("scheduled.json"), crash_env)
    assert crashed.exit_code == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    seen = set().union(*(held_passwords(sb, user) for user in users))
    for user in users:
        wait_out_lease(sb, user)
    recovery = sb.invoke(RECOVER, LEASE_ENV)
    assert recovery.exit_code == 0, recovery.stderr[-2000:]
    assert [(r["status"], r.get("recovered")) for r in recovery.results] == [("rotated", True)], recovery.stdout
    for user in users:  # the dead run's first record rotated, the second was recovered, the third untouched
        assert_converged(sb, user)
    assert_no_leak(seen | set().union(*(held_passwords(sb, user) for user in users)), crashed, recovery)
    record_outcome("scheduled run dies after 2nd UpdateLoginProfile", "replace", f"recover event: {statuses(recovery)}")


def test_an_idle_recovery_run_makes_one_journal_scan_and_nothing_else(sb, tmp_path):
    sb.add_user("e2e-idle")
    stats = tmp_path / "stats.json"
    idle = sb.invoke(RECOVER, {"SANDBOX_STATS_FILE": str(stats)})
    assert idle.exit_code == 0, idle.stderr[-2000:]
    assert idle.results == []
    assert json.loads(stats.read_text())["calls"] == {"aws:dynamodb:Scan": 1}
