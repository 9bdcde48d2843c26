"""CloudTrail's password change events read strictly, the drift request they become, and DRIFT_ACTION."""

from __future__ import annotations

import pytest

from keeper_iam_rotator.cloudtrail import PasswordCall, is_cloudtrail_event, password_change
from keeper_iam_rotator.errors import ConfigurationError
from keeper_iam_rotator.request import RotationRequest, Trigger
from keeper_iam_rotator.settings import DriftAction, Settings
from rotator_sandbox.stack import load_event


def test_the_shipped_events_read_as_the_changes_they_record():
    update = password_change(load_event("cloudtrail-update-login-profile.json"))
    assert (update.call, update.account_id, update.user_name) == (
        PasswordCall.UPDATE_LOGIN_PROFILE,
        "123456789012",
        "alice",
    )
    assert update.caller == "arn:aws:sts::123456789012:assumed-role/Admin/jdoe"
    assert update.issuer == "arn:aws:iam::123456789012:role/Admin"
    assert update.at == 1795773600.0  # 2026-11-27T10:00:00Z

    own = password_change(load_event("cloudtrail-change-password.json"))
    assert (own.call, own.user_name, own.issuer) == (PasswordCall.CHANGE_PASSWORD, "alice", "")
    assert own.caller == "arn:aws:iam::123456789012:user/alice"


def test_only_cloudtrail_envelopes_are_taken_for_cloudtrail_events():
    assert is_cloudtrail_event(load_event("cloudtrail-change-password.json"))
    assert not is_cloudtrail_event(load_event("scheduled.json"))
    assert not is_cloudtrail_event({"source": "aws.iam", "detail-type": "Something else"})
    assert not is_cloudtrail_event(["aws.iam"])


def test_a_drift_request_carries_its_change_and_compares_it_for_idempotency():
    change = password_change(load_event("cloudtrail-update-login-profile.json"))
    request = RotationRequest(Trigger.DRIFT, change=change)
    assert request.to_dict()["change"]["eventId"] == change.event_id
    with pytest.raises(ValueError, match="carries a password change"):
        RotationRequest(Trigger.DRIFT)
    with pytest.raises(ValueError, match="carries a password change"):
        RotationRequest(Trigger.SCHEDULE, change=change)
    assert not Trigger.DRIFT.names_records and not Trigger.DRIFT.may_bind and not Trigger.DRIFT.checks_due


def test_drift_action_defaults_to_rotate_and_refuses_anything_else():
    assert Settings.from_env({}).drift_action is DriftAction.ROTATE
    assert Settings.from_env({"DRIFT_ACTION": " Alert "}).drift_action is DriftAction.ALERT
    with pytest.raises(ConfigurationError, match="DRIFT_ACTION must be rotate or alert"):
        Settings.from_env({"DRIFT_ACTION": "ignore"})
