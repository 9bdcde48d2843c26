"""`rotate`: the Lambda's rotation run locally; the truth is read back from moto and the KSM emulator."""

from __future__ import annotations

import json

from rotator_sandbox.stack import JOURNAL_KEY, JOURNAL_TABLE

from .conftest import TARGET, answer_aws, results_of, stack_document
from conftest import INITIAL_PASSWORD
from faults import AwsFaults

MISSING_UID = "ZZZZZZZZZZZZZZZZZZZZZZ"


def assert_rotated(stack, uid: str, name: str, previous: str = INITIAL_PASSWORD) -> None:
    password = stack.iam_password(name)
    assert password == stack.keeper_password(uid)
    assert password and password != previous
    assert stack.keeper.vault.staged(uid) is None


def assert_unchanged(stack, uid: str, name: str) -> None:
    assert stack.iam_password(name) == INITIAL_PASSWORD
    assert stack.keeper_password(uid) == INITIAL_PASSWORD


def test_rotates_a_record_and_prints_a_table(stack, run):
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, *TARGET)
    assert result.exit_code == 0, result.output
    assert_rotated(stack, uid, "alice")
    assert uid in result.stdout and "alice" in result.stdout and "rotated" in result.stdout
    assert "1 rotated" in result.stdout


def test_json_is_the_lambdas_document(stack, run):
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, "--json", *TARGET)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "results": [{"recordUid": uid, "status": "rotated", "userName": "alice", "accountId": "123456789012"}],
        "summary": {"rotated": 1, "planned": 0, "skipped": 0, "failed": 0, "queued": 0, "notDue": 0, "deferred": 0},
    }
    assert_rotated(stack, uid, "alice")


def test_without_records_not_due_ones_are_counted_and_all_rotates_them(stack, run):
    """The scheduled run's rule (records rotated within their period are left alone) is said, never silent."""
    folder = stack.keeper.vault.add_folder(name="production")
    uids = {name: stack.add_pair(name, folder=folder) for name in ("alice", "bob")}
    assert run("rotate", *TARGET).exit_code == 0  # never rotated by this rotator: both due
    rotated = {name: stack.keeper_password(uid) for name, uid in uids.items()}

    again = run("rotate", "--folder", folder, *TARGET)
    assert again.exit_code == 0, again.output
    assert "No pamUser records in scope" not in again.stdout
    text = " ".join(again.stdout.split())
    assert "Nothing is due: 2 pamUser records in scope are not due" in text
    assert "--all rotates them too" in text
    assert {name: stack.keeper_password(uid) for name, uid in uids.items()} == rotated
    as_json = run("rotate", "--folder", folder, "--json", *TARGET)
    assert json.loads(as_json.stdout) == {
        "results": [],
        "summary": {"rotated": 0, "planned": 0, "skipped": 0, "failed": 0, "queued": 0, "notDue": 2, "deferred": 0},
    }

    forced = run("rotate", "--folder", folder, "--all", "--json", *TARGET)
    assert forced.exit_code == 0, forced.output
    assert sorted(r["recordUid"] for r in results_of(forced)) == sorted(uids.values())
    for name, uid in uids.items():
        assert_rotated(stack, uid, name, previous=rotated[name])
    assert run("rotate", "--all", "--record", uids["alice"], *TARGET).exit_code == 2


def test_without_records_rotates_every_pam_user_in_scope(stack, run):
    folder = stack.keeper.vault.add_folder(name="production")
    alice = stack.add_pair("alice", folder=folder)
    bob = stack.add_pair("bob")
    result = run("rotate", "--folder", folder, "--json", *TARGET)
    assert result.exit_code == 0
    assert [r["recordUid"] for r in results_of(result)] == [alice]
    assert_rotated(stack, alice, "alice")
    assert_unchanged(stack, bob, "bob")


def test_every_pam_user_in_scope_with_a_table(stack, run):
    uids = {name: stack.add_pair(name) for name in ("u1", "u2", "u3", "u4", "u5")}
    login_record = stack.add_record("carol", record_type="login")
    result = run("rotate", *TARGET)
    assert result.exit_code == 0, result.output
    assert "5 rotated" in result.stdout
    for name, uid in uids.items():
        assert_rotated(stack, uid, name)
    assert stack.keeper_password(login_record) == INITIAL_PASSWORD


def test_a_local_run_never_hands_records_to_the_rotation_queue(stack, run, monkeypatch):
    """The queue's results would be the deployed function's: a local run rotates everything itself, even with the
    function's own ROTATION_QUEUE_URL and InlineRotationLimit in the environment."""
    monkeypatch.setenv("ROTATION_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/rotation-queue")
    monkeypatch.setenv("INLINE_ROTATION_LIMIT", "0")
    sent = answer_aws("sqs", "SendMessageBatch", lambda params: {"Successful": [], "Failed": []})
    uids = {name: stack.add_pair(name) for name in ("u1", "u2")}
    result = run("rotate", "--json", *TARGET)
    assert result.exit_code == 0, result.output
    assert sorted(r["status"] for r in results_of(result)) == ["rotated", "rotated"]
    assert sent == []
    for name, uid in uids.items():
        assert_rotated(stack, uid, name)


def test_dry_run_plans_and_changes_nothing(stack, run):
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, "--dry-run", "--json", *TARGET)
    assert result.exit_code == 0
    assert results_of(result)[0]["status"] == "planned"
    assert_unchanged(stack, uid, "alice")
    assert stack.journal_items() == []


def test_skipped_record_exits_1_and_others_still_rotate(stack, run):
    uid = stack.add_pair("alice")
    stack.add_user("svc", password=None)
    no_console = stack.add_record("svc")  # a login only: --bind lets the run look the user up
    result = run("rotate", "--record", uid, "--record", no_console, "--record", MISSING_UID, "--bind", *TARGET)
    assert result.exit_code == 1
    assert "no_login_profile" in result.stdout and "record_not_found" in result.stdout
    assert_rotated(stack, uid, "alice")
    try:
        stack.iam.get_login_profile(UserName="svc")
        raise AssertionError("a login profile was created")
    except stack.iam.exceptions.NoSuchEntityException:
        pass


def test_a_login_only_record_is_bound_only_with_bind(stack, run):
    uid = stack.add_pair("alice", bound=False)
    refused = run("rotate", "--record", uid, "--json", *TARGET)
    assert refused.exit_code == 1
    assert results_of(refused)[0]["error"]["code"] == "not_bound"
    assert_unchanged(stack, uid, "alice")
    assert run("rotate", "--bind", *TARGET).exit_code == 2  # --bind names records: the schedule never binds
    assert run("rotate", "--record", uid, "--bind", *TARGET).exit_code == 0
    assert_rotated(stack, uid, "alice")


def test_iam_refusal_is_a_failure_with_exit_1(stack, run):
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, "--json", *TARGET)
    assert result.exit_code == 1
    assert results_of(result)[0]["error"]["code"] == "iam_update_refused"
    assert_unchanged(stack, uid, "alice")


def test_bad_uid_is_a_usage_error_and_changes_nothing(stack, run):
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, "--record", "not a uid!", *TARGET)
    assert result.exit_code == 2
    assert "is not a Keeper record uid" in result.stderr
    assert_unchanged(stack, uid, "alice")


def test_unreadable_config_secret_is_exit_2(stack, run):
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, "--config-secret", "no-such-secret", *TARGET[2:])
    assert result.exit_code == 2
    assert "GetSecretValue no-such-secret failed: ResourceNotFoundException" in result.stderr
    assert_unchanged(stack, uid, "alice")


def test_invalid_config_is_exit_2_without_quoting_it(stack, run, tmp_path):
    uid = stack.add_pair("alice")
    bad = tmp_path / "ksm.json"
    bad.write_text('{"clientId": "c2VjcmV0LWNsaWVudA==", "hostname": "127.0.0.1:1"}')
    result = run("rotate", "--record", uid, "--config-file", str(bad), *TARGET[2:])
    assert result.exit_code == 2
    assert "lacks privateKey, appKey" in result.stderr
    assert "c2VjcmV0LWNsaWVudA" not in result.output
    bad.write_text("not-json-not-base64 secret-value-123")
    result = run("rotate", "--record", uid, "--config-file", str(bad), *TARGET[2:])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: the KSM config in file {bad} is not valid base64 or JSON KSM configuration\n"
    )  # and nothing before it: the SDK's own JSON error is not printed
    assert "secret-value-123" not in result.output
    assert_unchanged(stack, uid, "alice")


def test_config_file_and_env_work_like_the_secret(stack, run, tmp_path, monkeypatch):
    alice, bob = stack.add_pair("alice"), stack.add_pair("bob")
    config = tmp_path / "ksm-config.json"
    config.write_text(stack.keeper.client_config(json_form=True))
    assert run("rotate", "--record", alice, "--config-file", str(config), *TARGET[2:]).exit_code == 0
    monkeypatch.setenv("KSM_CONFIG", stack.keeper.client_config())
    monkeypatch.delenv("KSM_CONFIG_SECRET_ID")
    monkeypatch.setenv("JOURNAL_TABLE_NAME", JOURNAL_TABLE)
    monkeypatch.setenv("JOURNAL_KEY_ID", JOURNAL_KEY)
    assert run("rotate", "--record", bob).exit_code == 0
    assert_rotated(stack, alice, "alice")
    assert_rotated(stack, bob, "bob")


def test_both_config_options_is_a_usage_error(run, tmp_path):
    result = run("rotate", "--config-secret", "x", "--config-file", str(tmp_path / "c"))
    assert result.exit_code == 2
    assert "either --config-secret or --config-file" in result.stderr


def test_stack_outputs_name_the_secret_table_and_key(stack, run):
    asked = answer_aws(
        "cloudformation",
        "DescribeStacks",
        lambda params: stack_document(
            config_secret="keeper-iam-rotator/ksm-config",
            table="keeper-iam-rotator-journal",
            key="alias/keeper-iam-rotator-journal",
        ),
    )
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, "--stack", "rotator", env={"KSM_CONFIG_SECRET_ID": ""})
    assert result.exit_code == 0, result.output
    assert asked[0]["StackName"] == "rotator"
    assert_rotated(stack, uid, "alice")


def test_unknown_stack_is_exit_2(stack, run):
    AwsFaults().fail("cloudformation", "DescribeStacks", "ValidationError")  # moto's CloudFormation is slow to load
    uid = stack.add_pair("alice")
    missing = run("rotate", "--record", uid, "--stack", "nope")
    assert missing.exit_code == 2
    assert "DescribeStacks nope failed: ValidationError" in missing.stderr
    assert_unchanged(stack, uid, "alice")


def test_journal_unreachable_fails_the_record_and_changes_nothing(stack, run):
    uid = stack.add_pair("alice")
    result = run("rotate", "--record", uid, "--journal-table", "missing-table", "--journal-key", "alias/x", "--json")
    assert result.exit_code == 1
    assert results_of(result)[0]["error"]["code"] == "journal_unavailable"
    assert_unchanged(stack, uid, "alice")


def test_help(run):
    result = run("rotate", "--help")
    assert result.exit_code == 0
    for option in ("--record", "--folder", "--dry-run", "--json", "--config-secret", "--config-file", "--stack"):
        assert option in result.stdout


def test_without_stack_the_journal_must_be_named(stack, run, monkeypatch):
    """CloudFormation names the stack's tables: there is no default journal name to fall back on."""
    uid = stack.add_pair("alice")
    no_table = run("rotate", "--record", uid, "--config-secret", TARGET[1], "--journal-key", JOURNAL_KEY)
    assert no_table.exit_code == 2
    assert "no journal table: give --journal-table NAME or --stack NAME (or set JOURNAL_TABLE_NAME)" in no_table.stderr
    no_key = run("rotate", "--record", uid, "--config-secret", TARGET[1], "--journal-table", JOURNAL_TABLE)
    assert no_key.exit_code == 2
    assert "no journal key: give --journal-key ID or --stack NAME (or set JOURNAL_KEY_ID)" in no_key.stderr
    assert_unchanged(stack, uid, "alice")


def test_mistyped_folder_is_an_error_not_nothing_to_rotate(stack, run):
    folder = stack.keeper.vault.add_folder(name="production")
    empty = stack.keeper.vault.add_folder(name="empty")
    alice = stack.add_pair("alice", folder=folder)
    typo = folder[:-1] + ("A" if folder[-1] != "A" else "B")
    result = run("rotate", "--folder", typo, *TARGET)
    assert result.exit_code == 2
    assert f"folder {typo} is not shared with the KSM application (or does not exist): nothing was rotated" in (
        result.stderr
    )
    assert_unchanged(stack, alice, "alice")
    nothing = run("rotate", "--folder", empty, *TARGET)  # shared but without pamUser records: not an error
    assert nothing.exit_code == 0
    assert "nothing to rotate" in nothing.stdout
    assert_unchanged(stack, alice, "alice")


def test_results_are_readable_at_80_columns(stack, run):
    """Narrow: one line per record, the code and message indented below it; wide: one bordered row per record."""
    rotated = stack.add_pair("a-user-with-a-rather-long-iam-name")
    no_console = stack.add_record("svc", dn=stack.add_user("svc", password=None))
    result = run("rotate", "--record", rotated, "--record", no_console, *TARGET, env={"COLUMNS": "80"})
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[1].split() == ["record", "user", "status"]
    assert lines[2].split() == [rotated, "a-user-with-a-rather-long-iam-name", "rotated"]
    assert lines[3].split() == [no_console, "svc", "skipped"]
    assert lines[4].startswith("    no_login_profile: the user has no console password (or does not exist);")
    assert lines[5].startswith("    ")  # the rest of the message, still indented
    wide = run("rotate", "--record", no_console, *TARGET, env={"COLUMNS": "160"})
    row = next(line for line in wide.stdout.splitlines() if no_console in line)
    assert "no_login_profile" in row and "the user has no console password (or does not exist); not creating" in row
    assert_rotated(stack, rotated, "a-user-with-a-rather-long-iam-name")
