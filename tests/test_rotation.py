"""Rotation through the Lambda handler, with moto as IAM and the KSM emulator as Keeper.

Every successful rotation is checked against the truth on both sides: the password moto stores for the user equals
the password Keeper has committed, it is new, and PasswordResetRequired is not set.
"""

from __future__ import annotations

import json

import pytest

from keeper_iam_rotator.passwords import PasswordPolicy
from rotator_sandbox.stack import field_value, load_event

from conftest import INITIAL_PASSWORD, custom_value
from faults import AwsFaults
from policy_checker import violations

EVENT_UID = load_event("direct-invoke.json")["records"][0]


def assert_rotated(stack, uid: str, name: str, previous: str = INITIAL_PASSWORD) -> str:
    password = stack.iam_password(name)
    assert password == stack.keeper_password(uid)
    assert password and password != previous
    assert not stack.iam_reset_required(name)
    assert stack.keeper.vault.staged(uid) is None
    return password


def assert_unchanged(stack, uid: str, name: str, password: str = INITIAL_PASSWORD) -> None:
    assert stack.iam_password(name) == password
    assert stack.keeper_password(uid) == password
    assert stack.keeper.vault.staged(uid) is None


def only(results: list[dict]) -> dict:
    assert len(results) == 1
    return results[0]


# --- the three triggers, with the shipped events -------------------------------------------------------------------


def _seed_event_record(stack, name="alice"):
    """The shipped events name a fixed record uid."""
    arn = stack.add_user(name)
    stack.add_record(name, uid=EVENT_UID, dn=arn)
    return arn


def test_direct_invoke_event_rotates(stack):
    arn = _seed_event_record(stack)
    result = only(stack.invoke(load_event("direct-invoke.json"))["results"])
    assert result == {"recordUid": EVENT_UID, "status": "rotated", "userName": "alice", "accountId": "123456789012"}
    assert_rotated(stack, EVENT_UID, "alice")
    record = stack.keeper_record(EVENT_UID)
    assert custom_value(record, "account_id_or_alias") == "123456789012"
    assert field_value(record, "text", "distinguishedName") == arn
    assert [item["state"]["S"] for item in stack.journal_items()] == ["closed"]
    assert all("secret" not in item for item in stack.journal_items())


def test_api_event_rotates(stack):
    _seed_event_record(stack)
    response = stack.invoke(load_event("api-post-rotations.json"))
    assert response["statusCode"] == 200
    assert only(json.loads(response["body"])["results"])["status"] == "rotated"
    assert_rotated(stack, EVENT_UID, "alice")


def test_scheduled_event_rotates_every_pam_user_and_nothing_else(stack):
    uids = {name: stack.add_pair(name) for name in ("alice", "bob")}
    login_record = stack.add_record("carol", record_type="login")
    results = stack.invoke(load_event("scheduled.json"))["results"]
    assert sorted((r["userName"], r["status"]) for r in results) == [("alice", "rotated"), ("bob", "rotated")]
    for name, uid in uids.items():
        assert_rotated(stack, uid, name)
    assert stack.keeper_password(login_record) == INITIAL_PASSWORD


def test_scheduled_run_honours_folder_scope(stack, monkeypatch):
    folder = stack.keeper.vault.add_folder(name="production")
    inside = stack.add_pair("alice", folder=folder)
    outside = stack.add_pair("bob")
    monkeypatch.setenv("ROTATION_FOLDER_UIDS", f" {folder} ,")
    results = stack.invoke(load_event("scheduled.json"))["results"]
    assert [r["recordUid"] for r in results] == [inside]
    assert_rotated(stack, inside, "alice")
    assert_unchanged(stack, outside, "bob")


def test_dry_run_event_plans_and_changes_nothing(stack):
    _seed_event_record(stack)
    result = only(stack.invoke(load_event("dry-run.json"))["results"])
    assert result["status"] == "planned"
    assert_unchanged(stack, EVENT_UID, "alice")
    assert stack.journal_items() == []


def test_audit_mode_setting_forces_dry_run(stack, monkeypatch):
    uid = stack.add_pair("alice")
    monkeypatch.setenv("DRY_RUN", "true")
    assert only(stack.rotate(uid))["status"] == "planned"
    assert_unchanged(stack, uid, "alice")


# --- policies --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        {},
        {"MinimumPasswordLength": 6},
        {"MinimumPasswordLength": 64, "RequireSymbols": True, "RequireNumbers": True},
        {"MinimumPasswordLength": 128, "RequireUppercaseCharacters": True, "RequireLowercaseCharacters": True},
        {"MinimumPasswordLength": 20, "PasswordReusePrevention": 24, "MaxPasswordAge": 90},
    ],
)
def test_rotated_password_meets_the_account_policy(stack, policy):
    if policy:
        stack.set_password_policy(**policy)
    uid = stack.add_pair("alice")
    assert only(stack.rotate(uid))["status"] == "rotated"
    password = assert_rotated(stack, uid, "alice")
    effective = PasswordPolicy.from_iam(policy) if policy else PasswordPolicy()
    assert violations(password, effective) == []
    assert len(password) == max(32, policy.get("MinimumPasswordLength", 0))


# --- records that are not rotated ------------------------------------------------------------------------------------


def test_user_without_console_password_is_skipped_and_gets_none(stack):
    stack.add_user("svc", password=None)
    uid = stack.add_record("svc")
    result = only(stack.rotate(uid, bind=True))
    assert (result["status"], result["error"]["code"]) == ("skipped", "no_login_profile")
    with pytest.raises(stack.iam.exceptions.NoSuchEntityException):
        stack.iam.get_login_profile(UserName="svc")
    assert stack.keeper_password(uid) == INITIAL_PASSWORD


def test_unknown_record_uid_is_skipped(stack):
    uid = stack.add_pair("alice")
    results = stack.rotate("ZZZZZZZZZZZZZZZZZZZZZZ", uid)
    assert results[0] == {
        "recordUid": "ZZZZZZZZZZZZZZZZZZZZZZ",
        "status": "skipped",
        "accountId": "123456789012",
        "error": {"code": "record_not_found", "message": "no such record is shared with the KSM application"},
    }
    assert results[1]["status"] == "rotated"
    assert_rotated(stack, uid, "alice")


def test_wrong_record_type_is_skipped(stack):
    stack.add_user("alice")
    uid = stack.add_record("alice", record_type="login")
    result = only(stack.rotate(uid))
    assert (result["status"], result["error"]["code"]) == ("skipped", "not_pam_user")
    assert_unchanged(stack, uid, "alice")


def test_record_without_login_is_skipped(stack):
    uid = stack.add_record(None)
    assert only(stack.rotate(uid))["error"]["code"] == "missing_login"


def test_missing_iam_user_is_skipped(stack):
    uid = stack.add_record("ghost")
    assert only(stack.rotate(uid, bind=True))["error"]["code"] == "iam_user_not_found"


def test_arn_in_distinguished_name_wins(stack):
    arn = stack.add_user("ops-admin", path="/division/")
    stack.add_user("alice")
    uid = stack.add_record("alice", dn=arn)
    result = only(stack.rotate(uid))
    assert (result["status"], result["userName"]) == ("rotated", "ops-admin")
    assert_rotated(stack, uid, "ops-admin")
    assert stack.iam_password("alice") == INITIAL_PASSWORD


def test_arn_of_another_account_is_skipped(stack):
    stack.add_user("alice")
    uid = stack.add_record("alice", dn="arn:aws:iam::210987654321:user/alice")
    result = only(stack.rotate(uid))
    assert (result["status"], result["error"]["code"]) == ("skipped", "account_not_allowed")
    assert_unchanged(stack, uid, "alice")


def test_access_denied_on_read_is_skipped_without_change(stack):
    faults = AwsFaults()
    faults.fail("iam", "GetLoginProfile", "AccessDenied", status=403)
    uid = stack.add_pair("alice")
    assert only(stack.rotate(uid))["error"]["code"] == "iam_access_denied"
    assert_unchanged(stack, uid, "alice")


def test_one_failure_does_not_stop_the_others(stack):
    good = [stack.add_pair(name) for name in ("alice", "bob")]
    stack.add_user("svc", password=None)
    bad = stack.add_record("svc")
    results = stack.rotate(good[0], bad, good[1])
    assert [r["status"] for r in results] == ["rotated", "skipped", "rotated"]


# --- failures --------------------------------------------------------------------------------------------------------


def test_iam_refusal_rolls_keeper_back(stack):
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")
    uid = stack.add_pair("alice")
    result = only(stack.rotate(uid))
    assert (result["status"], result["error"]["code"]) == ("failed", "iam_update_refused")
    assert "PasswordPolicyViolation" in result["error"]["message"]
    assert_unchanged(stack, uid, "alice")
    assert stack.keeper.vault.calls["rollback_secret_update"] == 1
    assert [item["state"]["S"] for item in stack.journal_items()] == ["closed"]


def test_entity_temporarily_unmodifiable_once_is_retried(stack):
    faults = AwsFaults()
    faults.fail("iam", "UpdateLoginProfile", "EntityTemporarilyUnmodifiable", status=409)
    uid = stack.add_pair("alice")
    assert only(stack.rotate(uid))["status"] == "rotated"
    assert faults.calls["UpdateLoginProfile"] == 2
    assert_rotated(stack, uid, "alice")


def test_keeper_commit_failure_puts_iam_back(stack):
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="error", status=500, times=10)
    uid = stack.add_pair("alice")
    result = only(stack.rotate(uid))
    assert (result["status"], result["error"]["code"]) == ("failed", "keeper_commit_failed_iam_restored")
    assert_unchanged(stack, uid, "alice")
    assert [item["state"]["S"] for item in stack.journal_items()] == ["closed"]


def test_keeper_down_before_staging_changes_nothing(stack):
    uid = stack.add_pair("alice")
    stack.keeper.vault.inject_fault("update_secret", kind="error", status=503, times=10)
    result = only(stack.rotate(uid))
    assert (result["status"], result["error"]["code"]) == ("failed", "keeper_stage_failed")
    assert_unchanged(stack, uid, "alice")


def test_unreadable_config_secret_fails_every_record_cleanly(stack, monkeypatch):
    monkeypatch.setenv("KSM_CONFIG_SECRET_ID", "no-such-secret")
    uid = stack.add_pair("alice")
    result = only(stack.rotate(uid))
    assert (result["status"], result["error"]["code"]) == ("failed", "ksm_config_unreadable")
    assert_unchanged(stack, uid, "alice")


# --- the API's contract ----------------------------------------------------------------------------------------------


def api_event(body: str, path: str = "/rotations", method: str = "POST") -> dict:
    event = load_event("api-post-rotations.json")
    event.update(body=body, path=path, httpMethod=method, isBase64Encoded=False)
    return event


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "",
        "{}",
        '{"records": "AbCdEfGhIjKlMnOpQrStUv"}',
        '{"records": []}',
        '{"records": [1]}',
        json.dumps({"records": [f"AbCdEfGhIjKlMnOpQrSt{i:02d}" for i in range(51)]}),
        '{"records": ["AbCdEfGhIjKlMnOpQrStUv"], "dryRun": "no"}',
        '{"records": ["AbCdEfGhIjKlMnOpQrStUv"], "userName": "root"}',
    ],
)
def test_api_bad_input_is_400_and_changes_nothing(stack, body):
    uid = stack.add_pair("alice")
    response = stack.invoke(api_event(body))
    assert response["statusCode"] == 400
    error = json.loads(response["body"])["error"]
    assert error["code"] == "bad_request" and error["message"]
    assert_unchanged(stack, uid, "alice")
    assert stack.keeper.vault.calls["update_secret"] == 0


def test_api_unknown_route_is_404(stack):
    assert stack.invoke(api_event("{}", path="/users"))["statusCode"] == 404
    assert stack.invoke(api_event("{}", method="GET"))["statusCode"] == 404


def test_direct_invoke_bad_input_is_a_clear_error(stack):
    assert stack.invoke({"records": "alice"}) == {
        "error": {"code": "bad_request", "message": '"records" must be a non-empty list of Keeper record uids'}
    }


# --- idempotency -----------------------------------------------------------------------------------------------------


def test_async_retry_of_the_same_invocation_does_not_rotate_twice(stack):
    uid = stack.add_pair("alice")
    first = stack.invoke({"records": [uid]}, aws_request_id="req-1")
    password = stack.iam_password("alice")
    again = stack.invoke({"records": [uid]}, aws_request_id="req-1")  # Lambda's async retry keeps the request id
    assert again == first
    assert stack.iam_password("alice") == password == stack.keeper_password(uid)


def test_api_idempotency_key_returns_the_first_answer(stack):
    uid = stack.add_pair("alice")
    event = api_event(json.dumps({"records": [uid]}))
    event["headers"]["Idempotency-Key"] = "rotate-alice-2026-11"
    first = stack.invoke(event)
    password = stack.iam_password("alice")
    assert json.loads(stack.invoke(event)["body"]) == json.loads(first["body"])
    assert stack.iam_password("alice") == password
    other = api_event(json.dumps({"records": [uid], "dryRun": True}))
    other["headers"]["Idempotency-Key"] = "rotate-alice-2026-11"
    refused = stack.invoke(other)
    assert refused["statusCode"] == 422
    assert json.loads(refused["body"])["error"]["code"] == "idempotency_key_reused"


def test_without_a_key_each_api_call_rotates(stack):
    uid = stack.add_pair("alice")
    stack.invoke(api_event(json.dumps({"records": [uid]})))
    first = stack.iam_password("alice")
    stack.invoke(api_event(json.dumps({"records": [uid]})))
    assert stack.iam_password("alice") != first
    assert_rotated(stack, uid, "alice", previous=first)


def test_parallel_scheduled_run_keeps_every_pair_in_agreement(stack, monkeypatch):
    monkeypatch.setenv("ROTATION_CONCURRENCY", "8")
    uids = {f"user{i:02d}": stack.add_pair(f"user{i:02d}") for i in range(16)}
    results = stack.invoke(load_event("scheduled.json"))["results"]
    assert sorted(r["userName"] for r in results if r["status"] == "rotated") == sorted(uids)
    passwords = {assert_rotated(stack, uid, name) for name, uid in uids.items()}
    assert len(passwords) == len(uids)


# --- one PAM User record per IAM user --------------------------------------------------------------------------------


def test_two_records_for_one_user_in_one_run_rotate_once(stack):
    first = stack.add_pair("alice")
    twin = stack.add_record("alice", title="a second record for alice")
    results = {r["recordUid"]: r for r in stack.rotate(first, twin, bind=True)}
    assert results[first]["status"] == "rotated"
    assert (results[twin]["status"], results[twin]["error"]["code"]) == ("skipped", "duplicate_user")
    assert first in results[twin]["error"]["message"]
    assert_rotated(stack, first, "alice")


def test_a_second_record_for_a_rotated_user_is_refused_until_the_first_lets_go(stack, keeper):
    from keeper_secrets_manager_core import SecretsManager
    from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

    first = stack.add_pair("alice")
    assert only(stack.rotate(first))["status"] == "rotated"
    twin = stack.add_record("alice", title="a second record for alice")
    assert only(stack.rotate(twin, bind=True))["error"]["code"] == "duplicate_user"
    stack.add_user("bob")
    sdk = SecretsManager(config=InMemoryKeyValueStorage(keeper.client_config()))  # an admin repoints the first record
    record = sdk.get_secrets([first])[0]
    record.set_standard_field_value("login", "bob")
    record.set_standard_field_value("distinguishedName", "")
    sdk.save(record)
    assert only(stack.rotate(twin, bind=True))["status"] == "rotated"  # the user now belongs to the second record
    assert_rotated(stack, twin, "alice", previous=stack.keeper_password(first))


def test_config_secret_may_hold_the_decoded_json(stack):
    """Keeper's tools print the config as base64; some operators store the JSON inside it. Both work."""
    import base64

    import boto3

    from conftest import CONFIG_SECRET

    decoded = base64.b64decode(stack.keeper.client_config()).decode()
    boto3.client("secretsmanager").put_secret_value(SecretId=CONFIG_SECRET, SecretString=decoded)
    uid = stack.add_pair("alice")
    assert only(stack.rotate(uid))["status"] == "rotated"
    assert_rotated(stack, uid, "alice")


def test_a_config_that_is_not_a_ksm_config_fails_without_quoting_it(stack):
    import boto3

    from conftest import CONFIG_SECRET

    boto3.client("secretsmanager").put_secret_value(SecretId=CONFIG_SECRET, SecretString="not-a-config-Sup3rS3cret")
    uid = stack.add_pair("alice")
    result = only(stack.rotate(uid))
    assert (result["status"], result["error"]["code"]) == ("failed", "ksm_config_unreadable")
    assert "Sup3rS3cret" not in json.dumps(result)
    assert_unchanged(stack, uid, "alice")
