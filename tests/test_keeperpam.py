"""Never a second rotator: records KeeperPAM rotates itself (their links carry enabled rotation settings, served by
the KSM emulator the way the SDK 17.3 parses them) are skipped on every path, unless the operator opts in per
record; a rotation this rotator already began is still finished."""

from __future__ import annotations

import time

import pytest

from iam_reports import CredentialReports
from keeper_iam_rotator.keeperpam import OPT_IN_FIELD, OPT_IN_VALUE
from test_binding import crash_after_update_login_profile, scheduled
from test_drift import change_event, rotated_earlier, set_out_of_band

from conftest import INITIAL_PASSWORD
from test_rotation import assert_rotated, assert_unchanged, only


def managed_pair(stack, name: str = "alice", **settings) -> str:
    uid = stack.add_pair(name)
    stack.keeper.vault.set_pam_rotation(uid, **settings)
    return uid


def opt_in(stack, uid: str) -> None:
    field = {"type": "text", "label": OPT_IN_FIELD, "value": [OPT_IN_VALUE]}
    stack.edit_record(uid, lambda data: data["custom"].append(field))


def test_a_record_keeperpam_rotates_is_skipped_on_request_and_by_the_schedule(stack):
    uid = managed_pair(stack)

    on_request = only(stack.rotate(uid))
    by_schedule = scheduled(stack)[uid]

    for result in (on_request, by_schedule):
        assert (result["status"], result["error"]["code"]) == ("skipped", "managed_by_keeperpam")
        assert OPT_IN_FIELD in result["error"]["message"]
    assert_unchanged(stack, uid, "alice")


@pytest.mark.parametrize(
    "settings",
    [{"enabled": False}, {"noop": True}, {"allowed": False}],
    ids=["rotation-disabled", "noop-rotation", "pam-settings-disallow-rotation"],
)
def test_a_record_keeperpam_knows_but_does_not_rotate_is_rotated_here(stack, settings):
    uid = managed_pair(stack, **settings)
    assert only(stack.rotate(uid))["status"] == "rotated"
    assert_rotated(stack, uid, "alice")


def test_the_operator_may_opt_a_record_in(stack):
    uid = managed_pair(stack)
    opt_in(stack, uid)
    assert only(stack.rotate(uid))["status"] == "rotated"
    assert_rotated(stack, uid, "alice")


def test_a_rotation_begun_before_keeperpam_took_the_record_over_is_finished(stack, monkeypatch):
    monkeypatch.setenv("JOURNAL_LEASE_MARGIN_SECONDS", "0")
    stack.remaining_ms = 0
    uid = stack.add_pair("alice")
    crash_after_update_login_profile(stack, uid)
    stack.keeper.vault.set_pam_rotation(uid)

    result = scheduled(stack)[uid]

    assert (result["status"], result.get("recovered")) == ("rotated", True)
    assert stack.iam_password("alice") == stack.keeper_password(uid) != INITIAL_PASSWORD


def test_keeperpams_own_change_is_expected_not_drift(stack):
    uid = rotated_earlier(stack)
    stack.keeper.vault.set_pam_rotation(uid)  # KeeperPAM took the record over and rotated it
    set_out_of_band(stack)

    result = only(stack.invoke(change_event())["results"])

    assert (result["status"], result["error"]["code"]) == ("skipped", "managed_by_keeperpam")
    assert "drift" not in result


def test_the_reconcile_leaves_keeperpams_records_alone(stack):
    reports = CredentialReports()
    import app

    app.CLIENTS.clear()
    uid = rotated_earlier(stack)
    stack.keeper.vault.set_pam_rotation(uid)
    set_out_of_band(stack)
    reports.password_changed("alice", time.time() - 60)

    assert uid not in scheduled(stack)
    assert stack.iam_password("alice") != stack.keeper_password(uid)  # KeeperPAM's business, not ours
