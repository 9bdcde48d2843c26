"""Drift: a console password changed outside the rotator, seen through CloudTrail's event (EventBridge) and answered
through the Lambda handler, with moto as IAM and the KSM emulator as Keeper.

The truth on both sides is read back after every event: the password moto stores for the user and the one Keeper
has committed. moto does not implement ChangePassword: the user's own call is answered at the client boundary
(`change_own_password`), which applies it to moto's user exactly as IAM would, and then CloudTrail's event for it is
delivered like EventBridge delivers it.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
from moto.iam.models import iam_backends

from rotator_sandbox.stack import load_event

from conftest import ACCOUNT, age_rotation
from faults import _Http
from test_rotation import assert_rotated, assert_unchanged, only

OUT_OF_BAND = "Out-of-band-Passw0rd!"
MEMBER = "210987654321"


def change_event(
    call: str = "UpdateLoginProfile",
    user: str = "alice",
    at: float | None = None,
    issuer: str | None = "arn:aws:iam::123456789012:role/Admin",
    account: str = ACCOUNT,
    event_id: str | None = None,
) -> dict[str, Any]:
    """CloudTrail's record of a password call as EventBridge delivers it (from the shipped events)."""
    if call == "ChangePassword":
        event = load_event("cloudtrail-change-password.json")
        identity = event["detail"]["userIdentity"]
        identity["userName"], identity["arn"] = user, f"arn:aws:iam::{account}:user/{user}"
    else:
        event = load_event("cloudtrail-update-login-profile.json")
        event["detail"]["eventName"] = call
        event["detail"]["requestParameters"]["userName"] = user
        session = event["detail"]["userIdentity"]["sessionContext"]
        if issuer is None:
            del event["detail"]["userIdentity"]["sessionContext"]
        else:
            session["sessionIssuer"]["arn"] = issuer
    event["account"] = event["detail"]["recipientAccountId"] = account
    event["detail"]["eventTime"] = datetime.fromtimestamp(at or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["detail"]["eventID"] = event_id or str(uuid.uuid4())
    return event


def rotated_earlier(stack, name: str = "alice") -> str:
    """A bound pair the rotator rotated an hour ago (the journal names its record as the user's owner)."""
    uid = stack.add_pair(name)
    assert only(stack.rotate(uid))["status"] == "rotated"
    age_rotation(stack, uid, 1 / 24)
    return uid


def set_out_of_band(stack, name: str = "alice", password: str = OUT_OF_BAND) -> None:
    """An administrator's UpdateLoginProfile, made with someone else's credentials (moto stores it)."""
    stack.iam.update_login_profile(UserName=name, Password=password, PasswordResetRequired=False)
    assert stack.iam_password(name) == password


def drift_result(response: dict[str, Any]) -> dict[str, Any]:
    return only(response["results"])


# --- the event path: a change is rotated away ----------------------------------------------------------------------


def test_out_of_band_update_login_profile_is_rotated_away(stack):
    uid = rotated_earlier(stack)
    keeper_before = stack.keeper_password(uid)
    set_out_of_band(stack)

    result = drift_result(stack.invoke(change_event()))

    assert result["status"] == "rotated" and result["drift"] is True
    assert result["error"]["code"] == "drift"
    assert "UpdateLoginProfile by arn:aws:sts::123456789012:assumed-role/Admin/jdoe" in result["error"]["message"]
    password = assert_rotated(stack, uid, "alice", previous=OUT_OF_BAND)
    assert password != keeper_before  # a new password, not Keeper's old one put back
    assert stack.iam_password("alice") != OUT_OF_BAND  # the out-of-band password no longer signs in


def test_a_change_seconds_after_a_rotation_is_drift_too(stack):
    """A change 5 s after IAM took the rotator's password (inside the 10 s the close time used to allow) is drift."""
    uid = stack.add_pair("alice")
    assert only(stack.rotate(uid))["status"] == "rotated"
    age_rotation(stack, uid, 5 / 86400)  # the rotation's password reached IAM 5 s ago, not an hour
    set_out_of_band(stack)

    result = drift_result(stack.invoke(change_event()))

    assert (result["status"], result["error"]["code"]) == ("rotated", "drift")
    assert_rotated(stack, uid, "alice", previous=OUT_OF_BAND)


def test_a_change_the_last_rotation_overwrote_is_settled(stack):
    uid = rotated_earlier(stack)
    keeper = stack.keeper_password(uid)
    result = drift_result(stack.invoke(change_event(at=time.time() - 2 * 3600)))  # before the rotation an hour ago
    assert (result["status"], result["error"]["code"]) == ("skipped", "no_drift")
    assert (stack.iam_password("alice"), stack.keeper_password(uid)) == (keeper, keeper)


def test_change_password_by_the_user_himself_is_rotated_away(stack):
    uid = rotated_earlier(stack)
    change_own_password(stack, "alice", stack.keeper_password(uid), OUT_OF_BAND)

    result = drift_result(stack.invoke(change_event("ChangePassword")))

    assert (result["status"], result["error"]["code"], result["drift"]) == ("rotated", "drift", True)
    assert "ChangePassword by arn:aws:iam::123456789012:user/alice" in result["error"]["message"]
    assert_rotated(stack, uid, "alice", previous=OUT_OF_BAND)


def test_a_create_login_profile_by_an_administrator_is_rotated_away(stack):
    uid = rotated_earlier(stack)
    stack.iam.delete_login_profile(UserName="alice")
    stack.iam.create_login_profile(UserName="alice", Password=OUT_OF_BAND)

    result = drift_result(stack.invoke(change_event("CreateLoginProfile")))

    assert (result["status"], result["error"]["code"]) == ("rotated", "drift")
    assert_rotated(stack, uid, "alice", previous=OUT_OF_BAND)


def change_own_password(stack, name: str, old: str, new: str) -> None:
    """The user's own ChangePassword, with his own client. moto lacks the call, so it is answered at the client
    boundary (botocore's before-call hook): the old password is checked and the new one stored in moto."""
    client = boto3.client("iam")
    sent: dict[str, Any] = {}

    def answer(**_: Any) -> Any:
        user = iam_backends[ACCOUNT]["global"].get_user(name)
        assert sent["OldPassword"] == user.password, "ChangePassword needs the current password"
        user.password = sent["NewPassword"]
        return _Http(200, {}), {"ResponseMetadata": {"HTTPStatusCode": 200}}

    client.meta.events.register("before-parameter-build.iam.ChangePassword", lambda params, **_: sent.update(params))
    client.meta.events.register("before-call.iam.ChangePassword", answer)
    client.change_password(OldPassword=old, NewPassword=new)
    assert stack.iam_password(name) == new


# --- what an event can never do ------------------------------------------------------------------------------------


def test_the_rotators_own_update_changes_nothing(stack, monkeypatch):
    """The function's role makes an UpdateLoginProfile on every rotation; its CloudTrail event must not loop."""
    role_arn = as_function_role(monkeypatch)
    uid = rotated_earlier(stack)
    committed = stack.keeper_password(uid)

    result = drift_result(stack.invoke(change_event(issuer=role_arn)))

    assert (result["status"], result["error"]["code"]) == ("skipped", "no_drift")
    assert "own role" in result["error"]["message"] and "drift" not in result
    assert_unchanged(stack, uid, "alice", committed)


def test_a_member_accounts_target_role_is_the_rotators_own_too(stack, monkeypatch):
    monkeypatch.setenv("TARGET_ACCOUNT_IDS", MEMBER)
    issuer = f"arn:aws:iam::{MEMBER}:role/keeper-iam-rotator-target"
    result = drift_result(stack.invoke(change_event(issuer=issuer, account=MEMBER)))
    assert (result["status"], result["error"]["code"]) == ("skipped", "no_drift")


def as_function_role(monkeypatch) -> str:
    """Run the handler with a role's credentials, as Lambda runs it with its execution role."""
    iam = boto3.client("iam")
    role_arn = iam.create_role(RoleName="keeper-iam-rotator-RotatorFunctionRole-AB12", AssumeRolePolicyDocument="{}")
    role_arn = role_arn["Role"]["Arn"]
    credentials = boto3.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="keeper-iam-rotator-fn")
    for name, key in (
        ("AWS_ACCESS_KEY_ID", "AccessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "SecretAccessKey"),
        ("AWS_SESSION_TOKEN", "SessionToken"),
    ):
        monkeypatch.setenv(name, credentials["Credentials"][key])
    boto3.setup_default_session()
    import app

    app.CLIENTS.clear()
    return role_arn


def test_alert_reports_and_changes_nothing(stack, monkeypatch):
    monkeypatch.setenv("DRIFT_ACTION", "alert")
    uid = rotated_earlier(stack)
    committed = stack.keeper_password(uid)
    set_out_of_band(stack)

    result = drift_result(stack.invoke(change_event()))

    assert (result["status"], result["error"]["code"], result["drift"]) == ("skipped", "drift", True)
    assert "DriftAction=alert" in result["error"]["message"]
    assert stack.iam_password("alice") == OUT_OF_BAND
    assert stack.keeper_password(uid) == committed


def test_a_user_no_record_of_this_rotator_manages_is_reported_and_left_alone(stack):
    stack.add_user("mallory", password=OUT_OF_BAND)
    never_rotated = stack.add_pair("alice")  # bound, but the rotator never rotated it: the journal does not know it

    for name in ("mallory", "alice"):
        result = drift_result(stack.invoke(change_event(user=name)))
        assert (result["recordUid"], result["status"], result["error"]["code"]) == ("*", "skipped", "not_managed")
    assert stack.iam_password("mallory") == OUT_OF_BAND
    assert_unchanged(stack, never_rotated, "alice")
    assert stack.journal_items() == []


def test_a_record_that_no_longer_names_the_user_is_left_alone(stack):
    uid = rotated_earlier(stack)
    stack.edit_record(uid, lambda data: data["fields"].pop(2))  # distinguishedName (conftest's field order)
    set_out_of_band(stack)

    result = drift_result(stack.invoke(change_event()))

    assert (result["recordUid"], result["status"], result["error"]["code"]) == (uid, "skipped", "not_managed")
    assert stack.iam_password("alice") == OUT_OF_BAND


def test_delete_login_profile_is_reported_and_no_profile_is_created(stack):
    uid = rotated_earlier(stack)
    committed = stack.keeper_password(uid)
    stack.iam.delete_login_profile(UserName="alice")

    result = drift_result(stack.invoke(change_event("DeleteLoginProfile")))

    assert (result["status"], result["error"]["code"], result["drift"]) == ("skipped", "no_login_profile", True)
    assert stack.iam_password("alice") is None
    assert stack.keeper_password(uid) == committed


def test_an_event_of_an_account_not_allowed_changes_nothing(stack):
    rotated_earlier(stack)
    result = drift_result(stack.invoke(change_event(account=MEMBER)))
    assert (result["recordUid"], result["status"], result["error"]["code"]) == ("*", "skipped", "account_not_allowed")


# --- duplicates and bad events -------------------------------------------------------------------------------------


def test_a_second_delivery_returns_the_first_answer_and_rotates_nothing(stack):
    uid = rotated_earlier(stack)
    set_out_of_band(stack)
    event = change_event()

    first = stack.invoke(event)
    after_first = stack.iam_password("alice"), stack.keeper_password(uid)
    redelivered = copy.deepcopy(event)
    redelivered["id"] = str(uuid.uuid4())  # CloudTrail may deliver one call twice, as two EventBridge events

    assert stack.invoke(redelivered) == first
    assert (stack.iam_password("alice"), stack.keeper_password(uid)) == after_first


def test_a_late_duplicate_after_the_idempotency_window_finds_the_change_settled(stack, monkeypatch):
    uid = rotated_earlier(stack)
    set_out_of_band(stack)
    event = change_event(at=time.time() - 60)
    assert drift_result(stack.invoke(event))["status"] == "rotated"
    after_first = stack.iam_password("alice"), stack.keeper_password(uid)
    monkeypatch.setenv("IDEMPOTENCY_TABLE_NAME", "")  # the idempotency hour is long gone

    result = drift_result(stack.invoke(event))

    assert (result["status"], result["error"]["code"]) == ("skipped", "no_drift")
    assert (stack.iam_password("alice"), stack.keeper_password(uid)) == after_first


def malformed_events() -> list[tuple[str, dict[str, Any]]]:
    def edited(edit: Any, call: str = "UpdateLoginProfile") -> dict[str, Any]:
        event = change_event(call, event_id="11111111-2222-4333-8444-555555555555")
        edit(event)
        return event

    return [
        ("no detail", edited(lambda e: e.pop("detail"))),
        ("another call", edited(lambda e: e["detail"].update(eventName="AttachUserPolicy"))),
        ("another service", edited(lambda e: e["detail"].update(eventSource="sts.amazonaws.com"))),
        ("refused by IAM", edited(lambda e: e["detail"].update(errorCode="PasswordPolicyViolation"))),
        ("no user", edited(lambda e: e["detail"].update(requestParameters={}))),
        ("bad user name", edited(lambda e: e["detail"]["requestParameters"].update(userName="a/b"))),
        ("no event id", edited(lambda e: e["detail"].pop("eventID"))),
        ("bad time", edited(lambda e: e["detail"].update(eventTime="yesterday"))),
        ("accounts disagree", edited(lambda e: e["detail"].update(recipientAccountId=MEMBER))),
        ("bad account", edited(lambda e: e.update(account="12345"))),
        (
            "ChangePassword by a role",
            edited(lambda e: e["detail"]["userIdentity"].update(type="AssumedRole"), "ChangePassword"),
        ),
    ]


def test_malformed_events_get_a_clear_answer_and_change_nothing(stack):
    uid = rotated_earlier(stack)
    committed = stack.keeper_password(uid)
    set_out_of_band(stack)
    items = stack.journal_items()

    for case, event in malformed_events():
        answer = stack.invoke(event)
        assert answer["error"]["code"] == "bad_request", case
        assert answer["error"]["message"], case
        assert OUT_OF_BAND not in json.dumps(answer)

    assert stack.iam_password("alice") == OUT_OF_BAND
    assert stack.keeper_password(uid) == committed
    assert stack.journal_items() == items
