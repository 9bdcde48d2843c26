"""Fleets (issue 11): member accounts through an assumed role, rotation when due, and fan-out on the rotation queue.

Member accounts are moto backends reached with AssumeRole credentials (moto maps them to the role's account); moto's
STS is made to refuse a role that does not exist, as AWS does. Every case asserts the real state: each account's
stored password against Keeper's committed record.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable

import boto3
import pytest
from moto.sts.models import sts_backends

import app
from keeper_iam_rotator.aws import clear_ksm_config_cache
from keeper_iam_rotator.fanout import Handoff
from rotator_sandbox.accounts import (
    TARGET_ROLE,
    create_target_role,
    iam_password,
    member_session,
    roles_must_exist,
    trust_policy,
)
from rotator_sandbox.queue import LocalQueue
from rotator_sandbox.stack import JOURNAL_TABLE, PACING_TABLE, SCOPE_TAG, add_bound_record, field_value, load_event
from test_binding import CallCounter, by_uid, code, crash_after_update_login_profile

from conftest import ACCOUNT, INITIAL_PASSWORD, age_rotation
from faults import AwsFaults
from test_rotation import api_event, assert_rotated, only

MEMBER = "222222222222"
OUTSIDER = "333333333333"
NO_ROLE = "444444444444"
HUB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/keeper-iam-rotator-RotatorFunctionRole"
DAY = 86400


@pytest.fixture
def fleet(stack, monkeypatch):
    """The hub (the stack) plus member accounts: MEMBER with the target role, OUTSIDER with the role but not in
    TargetAccountIds, NO_ROLE allowed but without the role."""
    with roles_must_exist():
        for account in (MEMBER, OUTSIDER):
            create_target_role(member_session(boto3.session.Session, account).client("iam"), HUB_ROLE)
        monkeypatch.setenv("TARGET_ACCOUNT_IDS", f"{MEMBER},{NO_ROLE}")
        yield stack


def member_pair(stack, account: str, name: str, **custom: str) -> str:
    """An IAM user with a console password in `account`, and its bound record in the hub's Keeper."""
    iam = member_session(boto3.session.Session, account).client("iam")
    arn = iam.create_user(UserName=name, Tags=[SCOPE_TAG])["User"]["Arn"]
    iam.create_login_profile(UserName=name, Password=INITIAL_PASSWORD)
    return record(stack, name, arn, **custom)


def record(stack, login: str, dn: str, **custom: str) -> str:
    return add_bound_record(stack.keeper.vault, login, INITIAL_PASSWORD, dn, custom=custom)


def assert_member_rotated(stack, account: str, uid: str, name: str) -> None:
    password = stack.keeper_password(uid)
    assert password != INITIAL_PASSWORD
    assert iam_password(account, name) == password
    assert field_value(stack.keeper_record(uid), "text", "account_id_or_alias") == account


def assert_member_unchanged(stack, account: str, uid: str, name: str) -> None:
    assert iam_password(account, name) == INITIAL_PASSWORD
    assert stack.keeper_password(uid) == INITIAL_PASSWORD


def scheduled(stack) -> dict:
    """A new daily run (a new EventBridge event id: the same id would be answered by idempotency)."""
    return stack.invoke(load_event("scheduled.json") | {"id": str(uuid.uuid4())})


# --- many accounts -----------------------------------------------------------------------------------------------


def test_a_member_accounts_user_is_rotated_with_the_assumed_role(fleet, monkeypatch):
    fleet.add_user("alice")  # the hub's namesake must not be touched
    uid = member_pair(fleet, MEMBER, "alice")
    counter = CallCounter()
    result = only(fleet.rotate(uid))
    assert (result["status"], result["accountId"]) == ("rotated", MEMBER)
    assert_member_rotated(fleet, MEMBER, uid, "alice")
    assert fleet.iam_password("alice") == INITIAL_PASSWORD
    assert counter.calls["sts:AssumeRole"] == 1
    sessions = [r.session_name for r in sts_backends[MEMBER]["aws"].assumed_roles if r.role_arn.endswith(TARGET_ROLE)]
    assert sessions == [f"keeper-iam-rotator-{uid}"]  # the member's CloudTrail names the record
    assert [item["userArn"]["S"] for item in fleet.journal_items()] == [f"arn:aws:iam::{MEMBER}:user/alice"]


def test_the_role_is_assumed_once_per_account_with_the_external_id(fleet, monkeypatch):
    monkeypatch.setenv("TARGET_EXTERNAL_ID", "fleet-external-id")
    iam = member_session(boto3.session.Session, MEMBER).client("iam")
    iam.update_assume_role_policy(RoleName=TARGET_ROLE, PolicyDocument=trust_policy(HUB_ROLE, "fleet-external-id"))
    uids = {name: member_pair(fleet, MEMBER, name) for name in ("bob", "carol", "dave")}
    counter = CallCounter()
    results = by_uid(fleet.rotate(*uids.values()))
    assert counter.calls["sts:AssumeRole"] == 1
    for name, uid in uids.items():
        assert code(results[uid]) == ("rotated", "")
        assert_member_rotated(fleet, MEMBER, uid, name)


def test_the_external_id_is_read_from_its_secret_on_the_first_assume_role(fleet, monkeypatch):
    iam = member_session(boto3.session.Session, MEMBER).client("iam")
    iam.update_assume_role_policy(RoleName=TARGET_ROLE, PolicyDocument=trust_policy(HUB_ROLE, "from-the-secret"))
    uid = member_pair(fleet, MEMBER, "frank")
    monkeypatch.setenv("TARGET_EXTERNAL_ID_SECRET", "keeper-iam-rotator/no-such-secret")
    result = only(fleet.rotate(uid))
    assert code(result) == ("failed", "assume_role_failed")
    assert "cannot read the ExternalId secret" in result["error"]["message"]
    assert_member_unchanged(fleet, MEMBER, uid, "frank")
    secret = boto3.client("secretsmanager").create_secret(Name="external-id", SecretString="from-the-secret")
    monkeypatch.setenv("TARGET_EXTERNAL_ID_SECRET", secret["ARN"])
    assert code(only(fleet.rotate(uid))) == ("rotated", "")
    assert_member_rotated(fleet, MEMBER, uid, "frank")


def test_a_wrong_external_id_is_refused_and_changes_nothing(fleet, monkeypatch):
    uid = member_pair(fleet, MEMBER, "erin")
    iam = member_session(boto3.session.Session, MEMBER).client("iam")
    iam.update_assume_role_policy(RoleName=TARGET_ROLE, PolicyDocument=trust_policy(HUB_ROLE, "the-right-one"))
    monkeypatch.setenv("TARGET_EXTERNAL_ID", "a-wrong-one")
    assert code(only(fleet.rotate(uid))) == ("failed", "assume_role_failed")
    assert_member_unchanged(fleet, MEMBER, uid, "erin")


def test_an_account_not_in_target_account_ids_is_refused_without_assuming_anything(fleet):
    uid = member_pair(fleet, OUTSIDER, "mallory")
    counter = CallCounter()
    for result in (only(fleet.rotate(uid)), by_uid(scheduled(fleet)["results"])[uid]):
        assert code(result) == ("skipped", "account_not_allowed")
        assert result["accountId"] == OUTSIDER
        assert OUTSIDER in result["error"]["message"]
    assert counter.calls["sts:AssumeRole"] == 0
    assert_member_unchanged(fleet, OUTSIDER, uid, "mallory")
    assert fleet.journal_items() == []


def test_assume_role_denied_fails_every_record_of_that_account_and_changes_nothing(fleet):
    ghosts = [record(fleet, f"ghost{i}", f"arn:aws:iam::{NO_ROLE}:user/ghost{i}") for i in range(2)]
    ok = member_pair(fleet, MEMBER, "frank")
    counter = CallCounter()
    results = by_uid(fleet.rotate(*ghosts, ok))
    for uid in ghosts:
        assert code(results[uid]) == ("failed", "assume_role_failed")
        assert results[uid]["accountId"] == NO_ROLE  # the record's account, not the hub's
        assert f"arn:aws:iam::{NO_ROLE}:role/keeper-iam-rotator-target" in results[uid]["error"]["message"]
        assert fleet.keeper_password(uid) == INITIAL_PASSWORD
    assert counter.calls["sts:AssumeRole"] == 2  # one refused for NO_ROLE (remembered), one for MEMBER
    assert_member_rotated(fleet, MEMBER, ok, "frank")
    assert [item["userArn"]["S"] for item in fleet.journal_items()] == [f"arn:aws:iam::{MEMBER}:user/frank"]


def test_duplicate_claims_on_a_member_accounts_user_report_that_account(fleet):
    owner = member_pair(fleet, MEMBER, "henry")
    twin = record(fleet, "henry", f"arn:aws:iam::{MEMBER}:user/henry")
    results = by_uid(fleet.rotate(owner, twin))
    assert code(results[twin]) == ("skipped", "duplicate_user")
    assert results[twin]["accountId"] == MEMBER
    assert (code(results[owner]), results[owner]["accountId"]) == (("rotated", ""), MEMBER)
    assert_member_rotated(fleet, MEMBER, owner, "henry")


def test_a_login_alone_means_the_hubs_account(fleet):
    member_session(boto3.session.Session, MEMBER).client("iam").create_user(UserName="gina")
    uid = fleet.add_pair("gina", bound=False)
    assert only(fleet.rotate(uid, bind=True))["accountId"] == ACCOUNT
    assert_rotated(fleet, uid, "gina")


def test_recovery_reports_the_password_when_its_account_left_the_allowed_accounts(fleet, monkeypatch):
    monkeypatch.setenv("JOURNAL_LEASE_MARGIN_SECONDS", "0")
    fleet.remaining_ms = 0
    uid = member_pair(fleet, MEMBER, "maria")
    crash_after_update_login_profile(fleet, uid)
    working = iam_password(MEMBER, "maria")
    assert working != INITIAL_PASSWORD and working in fleet.journal_passwords()
    monkeypatch.setenv("TARGET_ACCOUNT_IDS", NO_ROLE)  # the member account left TargetAccountIds
    result = only(fleet.invoke({"action": "recover"})["results"])
    assert code(result) == ("failed", "password_in_journal")
    assert "not in TargetAccountIds" in result["error"]["message"]
    assert iam_password(MEMBER, "maria") == working and working in fleet.journal_passwords()


# --- rotation when due -------------------------------------------------------------------------------------------


def test_a_recently_rotated_record_waits_for_the_schedule_but_not_for_a_request(stack):
    fresh, never = stack.add_pair("alice"), stack.add_pair("bob")
    assert code(only(stack.rotate(fresh))) == ("rotated", "")
    rotated_once = stack.keeper_password(fresh)
    response = scheduled(stack)
    results = by_uid(response["results"])
    assert fresh not in results
    assert code(results[never]) == ("rotated", "")
    assert response["summary"] == {
        "rotated": 1,
        "planned": 0,
        "skipped": 0,
        "failed": 0,
        "queued": 0,
        "notDue": 1,
        "deferred": 0,
    }
    assert stack.keeper_password(fresh) == rotated_once == stack.iam_password("alice")
    assert code(only(stack.rotate(fresh))) == ("rotated", "")  # an explicit request always rotates
    assert_rotated(stack, fresh, "alice", previous=rotated_once)


def test_a_record_is_due_again_after_its_period(stack):
    uid = stack.add_pair("alice")
    stack.rotate(uid)
    age_rotation(stack, uid, 26)  # due at most 10% (+2 h) early: spread, see due.py
    assert uid not in by_uid(scheduled(stack)["results"])
    age_rotation(stack, uid, 4)  # 30 days since
    before = stack.keeper_password(uid)
    assert code(by_uid(scheduled(stack)["results"])[uid]) == ("rotated", "")
    assert_rotated(stack, uid, "alice", previous=before)


def test_rotation_period_days_on_the_record_overrides_the_default(stack, monkeypatch):
    monkeypatch.setenv("ROTATION_PERIOD_DAYS", "30")
    weekly = record(stack, "alice", stack.add_user("alice"), rotation_period_days="7")
    default = record(stack, "bob", stack.add_user("bob"))
    garbage = record(stack, "carol", stack.add_user("carol"), rotation_period_days="soon")
    stack.rotate(weekly, default, garbage)
    for uid in (weekly, default, garbage):
        age_rotation(stack, uid, 8)
    passwords = {uid: stack.keeper_password(uid) for uid in (weekly, default, garbage)}
    response = scheduled(stack)
    assert set(by_uid(response["results"])) == {weekly}  # an invalid value falls back to the default
    assert response["summary"]["notDue"] == 2
    assert_rotated(stack, weekly, "alice", previous=passwords[weekly])
    assert stack.iam_password("bob") == stack.keeper_password(default) == passwords[default]


def test_a_rotation_that_failed_cleanly_leaves_the_record_due(stack):
    """A rotation that failed cleanly (nothing changed) leaves the record due again, so the next run retries."""
    uid = stack.add_pair("alice")
    stack.rotate(uid)
    faults = AwsFaults()
    faults.fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")
    app.CLIENTS.clear()  # faults reach clients created after they were armed
    assert code(only(stack.rotate(uid)))[1] == "iam_update_refused"
    assert code(by_uid(scheduled(stack)["results"])[uid]) == ("rotated", "")
    assert_rotated(stack, uid, "alice")


# --- fan-out on the rotation queue -------------------------------------------------------------------------------


@pytest.fixture
def queue(stack, monkeypatch):
    local = LocalQueue(boto3.client("sqs")).create()
    monkeypatch.setenv("ROTATION_QUEUE_URL", local.url)
    return local


def test_a_scheduled_run_with_no_inline_budget_queues_everything_and_the_queue_rotates_it(fleet, queue, monkeypatch):
    monkeypatch.setenv("INLINE_ROTATION_LIMIT", "0")
    hub = {f"hub{i}": fleet.add_pair(f"hub{i}") for i in range(12)}
    member = {f"mem{i}": member_pair(fleet, MEMBER, f"mem{i}") for i in range(3)}
    outsider = member_pair(fleet, OUTSIDER, "mallory")
    response = scheduled(fleet)
    results = by_uid(response["results"])
    assert {uid: results[uid]["status"] for uid in [*hub.values(), *member.values()]} == dict.fromkeys(
        [*hub.values(), *member.values()], "queued"
    )
    assert code(results[outsider]) == ("skipped", "account_not_allowed")  # decided by the planner, never queued
    assert response["summary"]["queued"] == 15
    assert all(fleet.keeper_password(uid) == INITIAL_PASSWORD for uid in results)  # nothing rotated yet
    answers = []
    assert queue.drain(lambda event: answers.append(fleet.invoke(event)) or answers[-1]) == 2
    assert all(answer == {"batchItemFailures": []} for answer in answers)
    for name, uid in hub.items():
        assert_rotated(fleet, uid, name)
    for name, uid in member.items():
        assert_member_rotated(fleet, MEMBER, uid, name)
    assert_member_unchanged(fleet, OUTSIDER, outsider, "mallory")
    assert queue.depth() == 0
    assert scheduled(fleet)["summary"]["notDue"] == 15  # the queue's rotations count as rotations


def test_the_inline_budget_is_rotated_by_the_run_and_the_rest_is_queued(stack, queue, monkeypatch):
    monkeypatch.setenv("INLINE_ROTATION_LIMIT", "2")
    uids = [stack.add_pair(f"user{i}") for i in range(5)]
    results = by_uid(scheduled(stack)["results"])
    statuses = [results[uid]["status"] for uid in uids]
    assert sorted(statuses) == ["queued", "queued", "queued", "rotated", "rotated"]
    assert queue.depth() == 3


def test_a_batch_with_one_failing_record_reports_only_that_one(stack, queue, monkeypatch):
    monkeypatch.setenv("INLINE_ROTATION_LIMIT", "0")
    monkeypatch.setenv("ROTATION_CONCURRENCY", "1")  # records run in message order: the first one meets the fault
    uids = {f"user{i}": stack.add_pair(f"user{i}") for i in range(3)}
    scheduled(stack)
    event = queue.receive_event()
    event["Records"].append({**event["Records"][0], "messageId": "not-a-handoff", "body": "{}"})
    first = event["Records"][0]
    faults = AwsFaults()
    faults.fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")
    app.CLIENTS.clear()  # faults reach clients created after they were armed
    answer = stack.invoke(event)
    assert sorted(item["itemIdentifier"] for item in answer["batchItemFailures"]) == sorted(
        [first["messageId"], "not-a-handoff"]
    )
    failing = next(uid for uid in uids.values() if uid in first["body"])
    for name, uid in uids.items():
        if uid == failing:
            assert stack.iam_password(name) == stack.keeper_password(uid) == INITIAL_PASSWORD
        else:
            assert_rotated(stack, uid, name)
    retry = {"Records": [first]}  # SQS delivers it again; this time IAM takes the password
    assert stack.invoke(retry) == {"batchItemFailures": []}
    name = next(name for name, uid in uids.items() if uid == failing)
    assert_rotated(stack, failing, name)


# --- AWS calls per rotated user (issue 18): at most 4 on every path ------------------------------------------------
# Every path pays GetLoginProfile, UpdateLoginProfile and the journal's two PutItems (open, close) per user. The user
# lookup of step 1 is one ListUsers page per account per invocation wherever a run looks up two or more users of the
# account (a queue batch, a request, a planning run), not a GetUser per user. Compared as the difference between a
# small and a larger run of the same shape, so what each invocation pays once cancels out.

PER_USER = {"iam:GetLoginProfile": 1.0, "iam:UpdateLoginProfile": 1.0, f"dynamodb:PutItem@{JOURNAL_TABLE}": 2.0}


class Calls(CallCounter):
    """CallCounter with DynamoDB's calls by table (the journal's are per user, the idempotency table's per run)."""

    def _count(self, model, params=None, **_: object) -> None:
        name = f"{model.service_model.service_name}:{model.name}"
        if model.service_model.service_name == "dynamodb":
            name += "@" + json.loads(params["body"])["TableName"]
        self.calls[name] += 1


def calls_of(run: Callable[[], object]) -> Counter[str]:
    """The AWS calls `run` makes, by operation, each run starting from the same warm state (no cached clients or
    KSM config), so two runs differ only by what their users cost."""
    app.CLIENTS.clear()
    clear_ksm_config_cache()
    counter = Calls()
    run()
    return counter.calls


def per_extra_user(small: Counter[str], large: Counter[str], extra_users: int) -> dict[str, float]:
    """The calls each extra user costs, Keeper pacing's aside: its grants are per Keeper request (about 2 writes per
    request, see pacing.py and tests/unit/test_pacing.py), not IAM or journal work."""
    return {
        op: (large[op] - small[op]) / extra_users
        for op in sorted(small | large)
        if large[op] != small[op] and not op.endswith(f"@{PACING_TABLE}")
    }


def queue_event(*uids: str) -> dict:
    """The batch Lambda's SQS event source delivers: one hand-off per record, planned now."""
    (template,) = load_event("sqs-rotation.json")["Records"]
    body = {uid: Handoff(uid, "", time.time()).body() for uid in uids}
    return {"Records": [template | {"messageId": str(uuid.uuid4()), "body": body[uid]} for uid in uids]}


def test_a_queue_batch_lists_each_account_once_instead_of_a_get_user_per_record(fleet):
    hub = {f"hub{i}": fleet.add_pair(f"hub{i}") for i in range(7)}
    member = {f"mem{i}": member_pair(fleet, MEMBER, f"mem{i}") for i in range(7)}
    hubs, members = list(hub.values()), list(member.values())
    answers = []
    small = calls_of(lambda: answers.append(fleet.invoke(queue_event(*hubs[:2], *members[:2]))))
    large = calls_of(lambda: answers.append(fleet.invoke(queue_event(*hubs[2:], *members[2:]))))
    assert answers == [{"batchItemFailures": []}] * 2
    for name, uid in hub.items():
        assert_rotated(fleet, uid, name)
    for name, uid in member.items():
        assert_member_rotated(fleet, MEMBER, uid, name)
    assert [(run["iam:ListUsers"], run["iam:GetUser"]) for run in (small, large)] == [(2, 0), (2, 0)]
    assert per_extra_user(small, large, extra_users=6) == PER_USER  # was GetUser 1.0 more


def test_a_scheduled_run_rotating_inline_lists_each_account_once(stack):
    warm = stack.add_pair("warm")
    scheduled(stack)  # a rotated user: both measured runs reconcile drift (one credential report each)
    first = {f"early{i}": stack.add_pair(f"early{i}") for i in range(2)}
    small = calls_of(lambda: scheduled(stack))
    later = {f"late{i}": stack.add_pair(f"late{i}") for i in range(10)}  # the early ones are not due again
    large = calls_of(lambda: scheduled(stack))
    for name, uid in (first | later | {"warm": warm}).items():
        assert_rotated(stack, uid, name)
    assert [(run["iam:ListUsers"], run["iam:GetUser"]) for run in (small, large)] == [(1, 0), (1, 0)]
    assert per_extra_user(small, large, extra_users=8) == PER_USER


@pytest.mark.parametrize("route", ["invoke", "api"])
def test_a_request_naming_records_lists_each_account_once(fleet, route):
    def request(*uids: str) -> None:
        if route == "api":
            assert fleet.invoke(api_event(json.dumps({"records": list(uids)})))["statusCode"] == 200
        else:
            assert {r["status"] for r in fleet.rotate(*uids)} == {"rotated"}

    hub = {f"hub{i}": fleet.add_pair(f"hub{i}") for i in range(6)}
    member = {f"mem{i}": member_pair(fleet, MEMBER, f"mem{i}") for i in range(6)}
    hubs, members = list(hub.values()), list(member.values())
    small = calls_of(lambda: request(*hubs[:2], *members[:2]))
    large = calls_of(lambda: request(*hubs[2:], *members[2:]))
    for name, uid in hub.items():
        assert_rotated(fleet, uid, name)
    for name, uid in member.items():
        assert_member_rotated(fleet, MEMBER, uid, name)
    assert [(run["iam:ListUsers"], run["iam:GetUser"]) for run in (small, large)] == [(2, 0), (2, 0)]
    assert per_extra_user(small, large, extra_users=4) == PER_USER


def test_a_run_with_one_user_in_an_account_asks_iam_about_that_user_alone(fleet):
    """A GetUser costs what one ListUsers page does, and IAM checks the scope tag on it as well."""
    hub, member = fleet.add_pair("alice"), member_pair(fleet, MEMBER, "bob")
    calls = calls_of(lambda: fleet.rotate(hub, member))
    assert (calls["iam:ListUsers"], calls["iam:GetUser"]) == (0, 2)
    assert_rotated(fleet, hub, "alice")
    assert_member_rotated(fleet, MEMBER, member, "bob")


def test_a_batch_of_member_records_reads_no_password_policy_of_the_hub(fleet):
    uids = {f"mem{i}": member_pair(fleet, MEMBER, f"mem{i}") for i in range(3)}
    calls = calls_of(lambda: fleet.invoke(queue_event(*uids.values())))
    assert calls["iam:GetAccountPasswordPolicy"] == 1  # the member account's, read once after its AssumeRole
    for name, uid in uids.items():
        assert_member_rotated(fleet, MEMBER, uid, name)
