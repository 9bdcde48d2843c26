"""A deputy nobody can aim (issue 16): every party that can steer the rotator must already hold the power it gets.

Each test is an attack that worked against the code before this issue (f9fcf51), tried the way an attacker would
against the sandbox (moto as AWS, the KSM emulator as Keeper, the real handler), and asserts the real state: the
IAM password moto stores and the password Keeper has committed. What moto cannot evaluate (resource policies, key
policies, IAM conditions) is asserted on the translated template in test_steering_template.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest

import app  # noqa: F401 - imported before capsys replaces stdout, so Powertools binds to pytest's stream
from ksm_emulator import EmulatorServer
from rotator_sandbox.queue import LocalQueue
from rotator_sandbox.stack import CONFIG_SECRET, JOURNAL_TABLE, field_value, load_event
from test_binding import code, crash_after_update_login_profile, scheduled
from test_fleet import MEMBER, NO_ROLE, fleet, member_pair  # noqa: F401 - fleet is a fixture
from test_metrics_match_alarms import emitted_metrics

from conftest import ACCOUNT, INITIAL_PASSWORD
from test_rotation import assert_rotated, assert_unchanged, only

SERVICE = frozenset({("service", "keeper-iam-rotator")})
OPERATOR = f"arn:aws:sts::{ACCOUNT}:assumed-role/rotation-operators/operator"
IAM_ADMIN = f"arn:aws:sts::{ACCOUNT}:assumed-role/iam-admins/jane"


def metric_names(capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The KeeperIamRotator metrics (with exactly the `service` dimension) printed since the last call."""
    return {name for namespace, name, dims in emitted_metrics(capsys.readouterr().out) if dims == SERVICE}


def linux_and_admin(stack) -> tuple[str, str]:
    """The README's example: a Linux record (login `admin`, no distinguishedName) in a shared folder that nobody
    declared AWS-only, and an IAM administrator called `admin`."""
    arn = stack.add_user("admin")
    linux = stack.add_record("admin", folder=stack.keeper.vault.add_folder(name="datacenter"), title="Linux admin")
    return linux, arn


def assert_admin_untouched(stack, linux: str) -> None:
    assert stack.iam_password("admin") == INITIAL_PASSWORD, "the IAM administrator's password was changed"
    assert stack.keeper_password(linux) == INITIAL_PASSWORD, "the Linux password was overwritten in Keeper"
    assert field_value(stack.keeper_record(linux), "text", "distinguishedName") is None


# --- whoever can write the KSM config secret -----------------------------------------------------------------------


@pytest.fixture
def rogue_keeper(stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An attacker's own "Keeper" on loopback, whose certificate the machine trusts (so only the rotator's own
    checks can stop it), holding a record that names the IAM administrator."""
    with EmulatorServer() as rogue:
        bundle = tmp_path / "both-cas.pem"
        bundle.write_text(Path(stack.keeper.ca_file).read_text() + Path(rogue.ca_file).read_text())
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        yield rogue


def test_a_config_secret_aimed_at_another_keeper_is_refused_and_alarmed(stack, rogue_keeper, capsys):
    admin_arn = stack.add_user("admin")
    fields = [
        {"type": "login", "value": ["admin"]},
        {"type": "password", "value": ["attacker-knows-this"]},
        {"type": "text", "label": "distinguishedName", "value": [admin_arn]},
    ]
    planted = rogue_keeper.vault.add_record(type="pamUser", title="admin", fields=fields, custom=[])
    boto3.client("secretsmanager").put_secret_value(SecretId=CONFIG_SECRET, SecretString=rogue_keeper.client_config())
    capsys.readouterr()

    response = stack.invoke(load_event("scheduled.json"))

    assert stack.iam_password("admin") == INITIAL_PASSWORD
    assert field_value(rogue_keeper.vault.committed(planted), "password") == "attacker-knows-this"
    assert rogue_keeper.vault.calls == Counter(), "a request reached the attacker's server"
    assert [code(result) for result in response["results"]] == [("failed", "ksm_config_untrusted")]
    assert {"RotationFailed", "TamperingDetected"} <= metric_names(capsys)


def test_the_sandbox_keeper_setting_is_ignored_inside_a_real_lambda(stack, monkeypatch):
    uid = stack.add_pair("alice")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "keeper-iam-rotator")  # what Lambda sets; AWS_SAM_LOCAL unset
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)
    assert code(only(stack.rotate(uid))) == ("failed", "ksm_config_untrusted")
    assert_unchanged(stack, uid, "alice")
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")  # `sam local invoke` against the sandbox (issue 20)
    assert code(only(stack.rotate(uid))) == ("rotated", "")


# --- whoever can edit a Keeper folder the application sees ---------------------------------------------------------


def test_a_first_binding_and_a_moved_owner_raise_binding_changed(stack, capsys):
    alice_arn, bob_arn = stack.add_user("alice"), stack.add_user("bob")
    owner = stack.add_record("alice", dn=alice_arn, title="alice's record")
    capsys.readouterr()
    assert code(only(stack.rotate(owner))) == ("rotated", "")
    assert "BindingChanged" in metric_names(capsys)  # the user's first binding

    assert code(only(stack.rotate(owner))) == ("rotated", "")
    assert "BindingChanged" not in metric_names(capsys)  # the same record again: nothing changed hands

    claimant = stack.add_record("alice", dn=alice_arn, title="a second record for alice")
    repoint(stack, owner, login="bob", dn=bob_arn)  # the owner no longer names alice: the claimant may take her
    assert code(only(stack.rotate(claimant))) == ("rotated", "")
    assert "BindingChanged" in metric_names(capsys)


def repoint(stack, uid: str, login: str, dn: str) -> None:
    """An edit in Keeper (a committed change, as the vault's UI would make it)."""
    record = stack.keeper_record(uid)
    for item in record["fields"]:
        if item["type"] == "login":
            item["value"] = [login]
        if item.get("label") == "distinguishedName":
            item["value"] = [dn] if dn else []
    stack.keeper.vault.update(uid, record, stack.keeper.vault.revision(uid), transactional=False)


# --- whoever can send to the rotation queue ------------------------------------------------------------------------


def sqs_event(*bodies: dict | str) -> dict:
    return {
        "Records": [
            {
                "messageId": f"forged-{n}",
                "receiptHandle": "x",
                "body": body if isinstance(body, str) else json.dumps(body),
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:{ACCOUNT}:keeper-iam-rotator-rotations",
                "awsRegion": "us-east-1",
            }
            for n, body in enumerate(bodies)
        ]
    }


def test_a_forged_handoff_cannot_vouch_for_a_linux_record(stack):
    linux, _ = linux_and_admin(stack)
    answer = stack.invoke(sqs_event({"recordUid": linux, "accountId": ACCOUNT, "vouched": True}))
    assert_admin_untouched(stack, linux)
    assert answer == {"batchItemFailures": []}  # skipped (not_bound): done, not retried


def test_a_forged_handoff_for_a_record_that_is_not_due_changes_nothing(stack):
    uid = stack.add_pair("alice")
    assert code(only(stack.rotate(uid))) == ("rotated", "")
    rotated = assert_rotated(stack, uid, "alice")
    answer = stack.invoke(sqs_event({"recordUid": uid, "accountId": ACCOUNT, "plannedAt": time.time() + 86400}))
    assert stack.iam_password("alice") == stack.keeper_password(uid) == rotated
    assert answer == {"batchItemFailures": []}


def test_a_redelivered_handoff_does_not_rotate_again(stack, monkeypatch):
    queue = LocalQueue(boto3.client("sqs")).create()
    monkeypatch.setenv("ROTATION_QUEUE_URL", queue.url)
    monkeypatch.setenv("INLINE_ROTATION_LIMIT", "0")
    uid = stack.add_pair("alice")
    assert code(scheduled(stack)[uid]) == ("queued", "")
    event = queue.receive_event()
    assert stack.invoke(event) == {"batchItemFailures": []}
    first = assert_rotated(stack, uid, "alice")
    assert stack.invoke(event) == {"batchItemFailures": []}  # SQS delivers at least once
    assert stack.iam_password("alice") == stack.keeper_password(uid) == first


def test_a_malformed_sqs_event_gets_a_bounded_answer_not_an_exception(stack):
    uid = stack.add_pair("alice")
    event = sqs_event({"recordUid": uid}, "not json", {"recordUid": uid})
    del event["Records"][0]["messageId"]
    event["Records"][2]["messageId"] = "m" * 100_000
    answer = stack.invoke(event)
    assert len(json.dumps(answer)) < 1000
    assert answer["batchItemFailures"] == [{"itemIdentifier": "forged-1"}]
    assert_unchanged(stack, uid, "alice")


# --- whoever may call the API (execute-api:Invoke: by default every principal of the account) ----------------------


def api_event(body: dict, caller: str = OPERATOR) -> dict:
    event = load_event("api-post-rotations.json")
    event.update(body=json.dumps(body), isBase64Encoded=False)
    event["requestContext"]["identity"]["userArn"] = caller
    return event


def api_answer(stack, body: dict, caller: str = OPERATOR) -> tuple[int, dict]:
    response = stack.invoke(api_event(body, caller))
    return response["statusCode"], json.loads(response["body"])


def test_an_api_caller_cannot_bind_a_login_only_record(stack):
    linux, _ = linux_and_admin(stack)
    status, body = api_answer(stack, {"records": [linux]})
    assert_admin_untouched(stack, linux)
    assert (status, code(only(body["results"]))) == (200, ("skipped", "not_bound"))


def test_binding_on_request_needs_bind_and_a_caller_allowed_to_bind(stack, monkeypatch):
    linux, admin_arn = linux_and_admin(stack)
    monkeypatch.setenv("BIND_CALLER_ARNS", f"arn:aws:sts::{ACCOUNT}:assumed-role/iam-admins/*")
    status, body = api_answer(stack, {"records": [linux], "bind": True})  # the operator may rotate, not bind
    assert (status, body["error"]["code"]) == (403, "bind_not_allowed")
    assert_admin_untouched(stack, linux)

    status, body = api_answer(stack, {"records": [linux], "bind": True}, caller=IAM_ADMIN)
    assert (status, code(only(body["results"]))) == (200, ("rotated", ""))
    assert_rotated(stack, linux, "admin")
    assert field_value(stack.keeper_record(linux), "text", "distinguishedName") == admin_arn


def test_an_idempotency_key_belongs_to_its_caller(stack):
    mallory, alice = stack.add_pair("mallory"), stack.add_pair("alice")
    squatter = f"arn:aws:sts::{ACCOUNT}:assumed-role/developers/mallory"
    assert api_answer(stack, {"records": [mallory], "idempotencyKey": "rotate-2026-11-27"}, squatter)[0] == 200
    status, body = api_answer(stack, {"records": [alice], "idempotencyKey": "rotate-2026-11-27"})
    assert (status, code(only(body["results"]))) == (200, ("rotated", ""))
    assert_rotated(stack, alice, "alice")


# --- whoever can write the journal table ---------------------------------------------------------------------------


def tamper(user_arn: str, **attributes: dict) -> None:
    ddb = boto3.client("dynamodb")
    item = ddb.get_item(TableName=JOURNAL_TABLE, Key={"userArn": {"S": user_arn}})["Item"]
    ddb.put_item(TableName=JOURNAL_TABLE, Item=item | attributes)


def test_a_forged_rotation_time_is_reported_never_obeyed(stack, capsys):
    alice_arn = stack.add_user("alice")
    uid = stack.add_record("alice", dn=alice_arn)
    assert code(only(stack.rotate(uid))) == ("rotated", "")
    tamper(alice_arn, rotatedAt={"N": f"{time.time() + 10 * 365 * 86400:.3f}"})  # "rotated" ten years from now
    capsys.readouterr()
    assert code(scheduled(stack)[uid]) == ("failed", "journal_tampered")
    assert "TamperingDetected" in metric_names(capsys)


def test_a_forged_owner_does_not_receive_the_password(stack):
    alice_arn = stack.add_user("alice")
    owner = stack.add_record("alice", dn=alice_arn, title="alice")
    assert code(only(stack.rotate(owner))) == ("rotated", "")
    current = assert_rotated(stack, owner, "alice")
    claimant = stack.add_record("alice", password="claimants-own", dn=alice_arn, title="an attacker's record")
    tamper(alice_arn, recordUid={"S": claimant})

    assert code(only(stack.rotate(claimant))) == ("failed", "journal_tampered")
    assert stack.keeper_password(claimant) == "claimants-own"
    assert stack.iam_password("alice") == current
    assert code(only(stack.rotate(owner))) == ("rotated", "")  # the rightful owner still rotates


# --- a crash, then an edit of the record, before recovery ----------------------------------------------------------


def test_recovery_finishes_the_journals_user_or_reports_the_password_it_holds(stack, monkeypatch, capsys):
    monkeypatch.setenv("JOURNAL_LEASE_MARGIN_SECONDS", "0")
    stack.remaining_ms = 0
    alice_arn, bob_arn = stack.add_user("alice"), stack.add_user("bob")
    uid = stack.add_record("alice", dn=alice_arn)
    crash_after_update_login_profile(stack, uid)
    working = stack.iam_password("alice")
    assert working != INITIAL_PASSWORD and working in stack.journal_passwords()
    repoint(stack, uid, login="bob", dn=bob_arn)  # edited between the crash and the recovery
    capsys.readouterr()

    for _ in range(2):  # every recovery run, not just the first
        result = only(stack.invoke({"action": "recover"})["results"])
        assert code(result) == ("failed", "password_in_journal")
        assert stack.iam_password("bob") == INITIAL_PASSWORD, "another user was rotated"
        assert stack.iam_password("alice") == working and working in stack.journal_passwords()
    assert "RecoveryRequired" in metric_names(capsys)


def test_an_open_entry_older_than_two_recovery_periods_raises_an_alarm(stack, monkeypatch, capsys):
    uid = stack.add_pair("alice")
    crash_after_update_login_profile(stack, uid)  # a live lease: recovery leaves it alone
    capsys.readouterr()
    assert stack.invoke({"action": "recover"})["results"] == []
    assert "StaleOpenEntries" not in metric_names(capsys)
    later = time.time() + 2 * 900 + 900 + 60
    monkeypatch.setattr(time, "time", lambda: later)
    stack.invoke({"action": "recover"})
    assert "StaleOpenEntries" in metric_names(capsys)
