"""The scheduled run's drift reconcile: IAM's credential report against the journal's last rotations, because
CloudTrail's events reach EventBridge best-effort. moto's report rows are shaped at the client boundary
(iam_reports.py: moto records no password change times); everything else is moto and the KSM emulator.
"""

from __future__ import annotations

import time

import boto3
import pytest

from iam_reports import CredentialReports
from keeper_iam_rotator import reconcile
from keeper_iam_rotator.credential_report import Password, Report, read_reports
from keeper_iam_rotator.journal import Entry, EntryState
from rotator_sandbox.accounts import iam_password, member_session
from test_binding import CallCounter, by_uid
from test_drift import OUT_OF_BAND, rotated_earlier, set_out_of_band
from test_fleet import MEMBER, fleet, member_pair, scheduled  # noqa: F401 - fleet is a fixture

from conftest import age_rotation
from test_rotation import assert_rotated, assert_unchanged


@pytest.fixture
def reports(stack) -> CredentialReports:
    import app

    shaped = CredentialReports()
    app.CLIENTS.clear()
    return shaped


def test_a_report_row_newer_than_the_journals_rotation_is_drift_and_is_rotated(stack, reports):
    uid = rotated_earlier(stack)  # an hour ago: far from due (30 days)
    set_out_of_band(stack)
    reports.password_changed("alice", time.time() - 60)

    response = scheduled(stack)

    result = by_uid(response["results"])[uid]
    assert (result["status"], result["error"]["code"], result["drift"]) == ("rotated", "drift", True)
    assert "IAM's credential report" in result["error"]["message"]
    assert_rotated(stack, uid, "alice", previous=OUT_OF_BAND)
    assert response["summary"]["notDue"] == 0


def test_no_drift_when_the_report_shows_nothing_after_the_rotation(stack, reports):
    uid = rotated_earlier(stack)
    committed = stack.keeper_password(uid)
    reports.password_changed("alice", time.time() - 3600 - 5)  # the rotation's own change (it closed an hour ago)

    response = scheduled(stack)

    assert response["results"] == [] and response["summary"]["notDue"] == 1
    assert_unchanged(stack, uid, "alice", committed)


def test_alert_reports_the_drift_and_changes_nothing(stack, reports, monkeypatch):
    monkeypatch.setenv("DRIFT_ACTION", "alert")
    uid = rotated_earlier(stack)
    committed = stack.keeper_password(uid)
    set_out_of_band(stack)
    reports.password_changed("alice", time.time() - 60)

    response = scheduled(stack)

    result = by_uid(response["results"])[uid]
    assert (result["status"], result["error"]["code"], result["drift"]) == ("skipped", "drift", True)
    assert response["summary"]["notDue"] == 0
    assert stack.iam_password("alice") == OUT_OF_BAND
    assert stack.keeper_password(uid) == committed


def test_a_due_record_that_drifted_is_rotated_and_says_so_under_alert_too(stack, reports, monkeypatch):
    monkeypatch.setenv("DRIFT_ACTION", "alert")
    uid = rotated_earlier(stack)
    age_rotation(stack, uid, 31)
    set_out_of_band(stack)
    reports.password_changed("alice", time.time() - 60)

    result = by_uid(scheduled(stack)["results"])[uid]

    assert (result["status"], result["error"]["code"], result["drift"]) == ("rotated", "drift", True)
    assert_rotated(stack, uid, "alice", previous=OUT_OF_BAND)


def test_console_access_removed_is_reported_and_nothing_is_created(stack, reports):
    uid = rotated_earlier(stack)
    committed = stack.keeper_password(uid)
    stack.iam.delete_login_profile(UserName="alice")

    result = by_uid(scheduled(stack)["results"])[uid]

    assert (result["status"], result["error"]["code"], result["drift"]) == ("skipped", "no_login_profile", True)
    assert stack.iam_password("alice") is None
    assert stack.keeper_password(uid) == committed


def test_a_report_generated_before_the_rotation_says_nothing(stack, reports):
    uid = rotated_earlier(stack)
    stack.iam.delete_login_profile(UserName="alice")
    reports.generated_at = time.time() - 2 * 3600  # before the rotation an hour ago
    assert scheduled(stack)["results"] == []
    assert stack.keeper_password(uid)  # untouched


def test_a_report_still_in_progress_is_left_for_a_later_run_without_waiting_minutes(stack, reports, monkeypatch):
    monkeypatch.setattr(reconcile, "WAIT_SECONDS", 1.0)
    rotated_earlier(stack)
    due_now = stack.add_pair("bob")  # never rotated: due
    reports.in_progress = True

    started = time.monotonic()
    results = by_uid(scheduled(stack)["results"])

    assert time.monotonic() - started < 30
    unchecked = results["*"]
    assert (unchecked["status"], unchecked["error"]["code"]) == ("skipped", "credential_report_unavailable")
    assert "still generating" in unchecked["error"]["message"]
    assert results[due_now]["status"] == "rotated"  # the run itself goes on


def test_the_reconcile_costs_one_generate_and_one_get_per_account(stack, reports):
    for name in ("alice", "bob", "carol"):
        rotated_earlier(stack, name)
    counter = CallCounter()
    import app

    app.CLIENTS.clear()
    scheduled(stack)
    calls = {call: n for call, n in counter.calls.items() if "CredentialReport" in call}
    assert calls == {"iam:GenerateCredentialReport": 1, "iam:GetCredentialReport": 1}


def test_drift_in_a_member_account_is_rotated_with_its_role(fleet, reports):  # noqa: F811 - the fixture
    uid = member_pair(fleet, MEMBER, "gina")
    assert by_uid(scheduled(fleet)["results"])[uid]["status"] == "rotated"
    age_rotation(fleet, uid, 1 / 24)
    member_session(boto3.session.Session, MEMBER).client("iam").update_login_profile(
        UserName="gina", Password=OUT_OF_BAND
    )
    reports.password_changed("gina", time.time() - 60)

    result = by_uid(scheduled(fleet)["results"])[uid]

    assert (result["status"], result["error"]["code"], result["accountId"]) == ("rotated", "drift", MEMBER)
    assert iam_password(MEMBER, "gina") == fleet.keeper_password(uid) != OUT_OF_BAND


# --- the report reader on its own ----------------------------------------------------------------------------------


class FakeGateway:
    def __init__(self, states: list[str], ready_after: int) -> None:
        self.states, self.ready_after, self.gets = states, ready_after, 0

    def generate_credential_report(self) -> str:
        return self.states.pop(0)

    def credential_report(self):
        from datetime import UTC, datetime

        from botocore.exceptions import ClientError

        self.gets += 1
        if self.gets <= self.ready_after:
            raise ClientError({"Error": {"Code": "ReportInProgress", "Message": "wait"}}, "GetCredentialReport")
        content = b"user,arn,password_enabled,password_last_changed\nann,arn:aws:iam::1:user/ann,true,N/A\n"
        return content, datetime.fromtimestamp(1000, UTC)


def test_reports_are_generated_everywhere_first_then_read_with_a_bounded_wait():
    clock = {"now": 0.0}
    slow, quick = FakeGateway(["STARTED"], ready_after=100), FakeGateway(["COMPLETE"], ready_after=2)

    def sleep(seconds: float) -> None:
        clock["now"] += seconds

    answers = read_reports({"slow": slow, "quick": quick}, 10.0, sleep=sleep, clock=lambda: clock["now"])

    assert answers["quick"] == Report(1000.0, {"arn:aws:iam::1:user/ann": Password(True, None)})
    assert isinstance(answers["slow"], str) and "still generating" in answers["slow"]
    assert clock["now"] <= 10.0 and slow.gets >= 3


def test_a_change_after_iam_took_the_rotators_password_is_drift_even_before_the_journal_closed():
    """IAM took the rotator's password between 5000 and 5001; its journal closed at 5030 (a slow Keeper commit). A
    change at 5010 came after the rotator's and is drift; 5002 is within the reports' whole-second skew: its own."""
    entry = Entry("arn:aws:iam::1:user/ann", "rec", EntryState.CLOSED, "run", 0.0, None, 5030.0, (5000.0, 5001.0))
    user = reconcile.Candidate(user=None, target=reconcile.IamUser("ann", "arn:aws:iam::1:user/ann"), last=entry)
    report = Report(9000.0, {"arn:aws:iam::1:user/ann": Password(True, 5000 + 3)})
    assert reconcile.compare(user, report) is None
    drifted = Report(9000.0, {"arn:aws:iam::1:user/ann": Password(True, 5000 + 10)})
    assert reconcile.compare(user, drifted) is not None


def test_an_item_written_before_the_journal_kept_the_window_falls_back_to_the_close_time():
    entry = Entry("arn:aws:iam::1:user/ann", "rec", EntryState.CLOSED, "run", 0.0, None, 5000.0)
    user = reconcile.Candidate(user=None, target=reconcile.IamUser("ann", "arn:aws:iam::1:user/ann"), last=entry)
    assert reconcile.compare(user, Report(9000.0, {"arn:aws:iam::1:user/ann": Password(True, 5001)})) is None
    assert reconcile.compare(user, Report(9000.0, {"arn:aws:iam::1:user/ann": Password(True, 5003)})) is not None
