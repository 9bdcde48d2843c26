"""`check`: the preflight changes nothing and says PASS/FAIL/WARN/SKIP per check; exit 0 iff nothing FAILed."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from keeper_iam_rotator.settings import Settings
from keeper_iam_rotator_cli.devices import capacity, device_check
from keeper_iam_rotator_cli.verdicts import Verdict
from rotator_sandbox.stack import JOURNAL_KEY

from .conftest import ROLE_ARN, TARGET, answer_aws, answer_stack
from conftest import INITIAL_PASSWORD
from faults import AwsFaults


def checks_of(result) -> dict[str, dict[str, str]]:
    document = json.loads(result.stdout)
    return {c["check"]: c for c in document["checks"]} | {"verdict": {"result": document["verdict"]}}


def simulate(decisions: dict[str, str]) -> list[dict[str, Any]]:
    """Answer iam:SimulatePrincipalPolicy (moto lacks it) with these decisions per action, default "allowed"."""

    def respond(params: dict[str, Any]) -> dict[str, Any]:
        results = [
            {"EvalActionName": action, "EvalResourceName": resource, "EvalDecision": decisions.get(action, "allowed")}
            for action in params["ActionNames"]
            for resource in params["ResourceArns"]
        ]
        return {"EvaluationResults": results, "IsTruncated": False}

    return answer_aws("iam", "SimulatePrincipalPolicy", respond)


@pytest.fixture
def ready(stack):
    """Two rotatable users; nothing may change during a check."""
    uids = {name: stack.add_pair(name) for name in ("alice", "bob")}
    yield uids
    for name, uid in uids.items():
        assert stack.iam_password(name) == INITIAL_PASSWORD
        assert stack.keeper_password(uid) == INITIAL_PASSWORD
    assert stack.journal_items() == []


def test_ready_deployment_passes(ready, run):
    simulate({})
    result = run("check", "--json", *TARGET)
    assert result.exit_code == 0, result.output
    checks = checks_of(result)
    assert checks["verdict"]["result"] == "READY"
    for name in ("aws-credentials", "ksm-config", "keeper-records", "password-policy", "journal-table", "journal-key"):
        assert checks[name]["result"] == "PASS", checks[name]
    for uid in ready.values():
        assert checks[f"record {uid}"]["result"] == "PASS"
    for action in ("iam:UpdateLoginProfile", "dynamodb:PutItem", "kms:Decrypt", "secretsmanager:GetSecretValue"):
        assert checks[action]["result"] == "PASS"
    assert "2 pamUser record(s)" in checks["keeper-records"]["detail"]


def test_table_output_and_verdict(ready, run):
    simulate({})
    result = run("check", "--record", ready["alice"], *TARGET)
    assert result.exit_code == 0
    verdicts = [line for line in result.stdout.splitlines() if "READY" in line]
    assert len(verdicts) == 1 and verdicts[0].startswith("READY: "), verdicts  # not "NOT READY: ..."
    assert "PASS" in result.stdout and ready["alice"] in result.stdout


def test_denied_action_fails(ready, run):
    simulate({"iam:UpdateLoginProfile": "implicitDeny"})
    result = run("check", "--json", *TARGET)
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks["iam:UpdateLoginProfile"]["result"] == "FAIL"
    assert "implicitDeny on arn:aws:iam::123456789012:user/alice" in checks["iam:UpdateLoginProfile"]["detail"]
    assert checks["iam:GetUser"]["result"] == "PASS"
    assert checks["verdict"]["result"] == "NOT READY"


def test_simulation_unsupported_is_skipped_not_failed(ready, run):
    result = run("check", "--json", *TARGET)  # moto does not implement SimulatePrincipalPolicy
    assert result.exit_code == 0, result.output
    permissions = checks_of(result)["permissions"]
    assert permissions["result"] == "SKIP"
    assert "SimulatePrincipalPolicy unavailable (NotImplementedError)" in permissions["detail"]


def test_simulation_denied_is_skipped_and_role_arn_is_simulated(ready, run):
    AwsFaults().fail("iam", "SimulatePrincipalPolicy", "AccessDenied", status=403)
    result = run("check", "--json", "--role-arn", "arn:aws:iam::123456789012:role/rotator", *TARGET)
    assert result.exit_code == 0
    assert (
        checks_of(result)["permissions"]["detail"]
        == "iam:SimulatePrincipalPolicy unavailable (AccessDenied); not checked"
    )


def test_permissions_are_simulated_on_the_deployments_resources(ready, run):
    sent = simulate({})
    result = run("check", "--json", "--role-arn", "arn:aws:iam::123456789012:role/rotator", *TARGET)
    assert result.exit_code == 0
    assert "allowed for arn:aws:iam::123456789012:role/rotator" in checks_of(result)["kms:GenerateDataKey"]["detail"]
    assert {p["PolicySourceArn"] for p in sent} == {"arn:aws:iam::123456789012:role/rotator"}
    resources = {tuple(p["ActionNames"]): p["ResourceArns"] for p in sent}
    users = resources[("iam:GetUser", "iam:GetLoginProfile", "iam:UpdateLoginProfile")]
    assert sorted(users) == ["arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/bob"]
    assert resources[("dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Scan")] == [
        "arn:aws:dynamodb:us-east-1:123456789012:table/keeper-iam-rotator-journal"
    ]
    assert resources[("secretsmanager:GetSecretValue",)][0].startswith(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:keeper-iam-rotator/ksm-config"
    )


def test_user_problems_fail(stack, run):
    stack.add_user("svc", password=None)
    no_console = stack.add_record("svc")
    ghost = stack.add_record("ghost")
    login = stack.add_record("carol", record_type="login")
    missing = "ZZZZZZZZZZZZZZZZZZZZZZ"
    result = run("check", "--json", *[a for u in (no_console, ghost, login, missing) for a in ("--record", u)], *TARGET)
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks[f"record {no_console}"]["detail"].startswith("no_login_profile")
    assert checks[f"record {ghost}"]["detail"].startswith("iam_user_not_found")
    assert checks[f"record {login}"]["detail"].startswith("not_pam_user")
    assert checks["keeper-records"]["result"] == "FAIL" and missing in checks["keeper-records"]["detail"]
    with pytest.raises(stack.iam.exceptions.NoSuchEntityException):
        stack.iam.get_login_profile(UserName="svc")


def test_user_path_and_required_tag(stack, run):
    arn = stack.add_user("ops", path="/rotatable/")
    stack.iam.tag_user(UserName="ops", Tags=[{"Key": "rotate", "Value": "yes"}])
    inside = stack.add_record("ops", dn=arn)
    outside = stack.add_pair("alice")
    args = ["check", "--json", "--record", inside, "--record", outside, "--user-path", "/rotatable/"]
    result = run(*args, "--required-tag", "rotate=yes", *TARGET)
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks[f"record {inside}"]["result"] == "PASS"
    detail = checks[f"record {outside}"]["detail"]
    assert "path / is outside /rotatable/" in detail and "tag rotate=yes missing" in detail


def test_each_records_binding_is_reported(stack, run):
    bound = stack.add_pair("alice")
    unbound = stack.add_pair("bob", bound=False)
    ad = stack.add_record("carol", dn="CN=carol,OU=Users,DC=corp,DC=example")
    stack.add_user("carol")
    wrong_path = stack.add_record("dave", dn="arn:aws:iam::123456789012:user/dave")
    stack.add_user("dave", path="/humans/")
    result = run(
        "check", "--json", *(arg for uid in (bound, unbound, ad, wrong_path) for arg in ("--record", uid)), *TARGET
    )
    checks = checks_of(result)
    assert checks[f"record {bound}"]["result"] == "PASS" and checks[f"record {bound}"]["detail"].startswith("bound")
    assert checks[f"record {unbound}"]["result"] == "WARN" and "not_bound" in checks[f"record {unbound}"]["detail"]
    assert checks[f"record {ad}"]["result"] == "SKIP" and "not_iam_record" in checks[f"record {ad}"]["detail"]
    assert (
        checks[f"record {wrong_path}"]["result"] == "FAIL"
        and "arn_mismatch" in checks[f"record {wrong_path}"]["detail"]
    )


def test_password_policy_is_described(ready, run, stack):
    stack.set_password_policy(MinimumPasswordLength=40, RequireSymbols=True)
    result = run("check", "--json", *TARGET)
    detail = checks_of(result)["password-policy"]["detail"]
    assert "custom policy: min 40, requires symbols; generated passwords have 40 chars" in detail


def test_missing_journal_and_bad_config_fail(stack, run, tmp_path):
    config = tmp_path / "ksm.json"
    config.write_text('{"hostname": "127.0.0.1:9"}')
    result = run(
        "check", "--json", "--config-file", str(config), "--journal-table", "nope", "--journal-key", "alias/no"
    )
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks["ksm-config"]["result"] == "FAIL"
    assert checks["keeper-records"]["result"] == "SKIP"
    assert "ResourceNotFoundException" in checks["journal-table"]["detail"]
    assert "NotFoundException" in checks["journal-key"]["detail"]


def test_bad_options_are_usage_errors(run):
    assert run("check", "--user-path", "rotatable").exit_code == 2
    result = run("check", "--required-tag", "novalue")
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr


def test_help(run):
    result = run("check", "--help")
    assert result.exit_code == 0
    for option in ("--record", "--user-path", "--required-tag", "--role-arn", "--json", "--stack"):
        assert option in result.stdout


def test_stack_role_is_simulated_and_its_tables_checked(ready, run):
    """With --stack, the function's role (output RotatorRoleArn) is simulated, not the operator running check."""
    described = answer_stack()
    sent = simulate({"dynamodb:DeleteItem": "implicitDeny"})
    result = run("check", "--json", "--stack", "keeper-iam-rotator", env={"KSM_CONFIG_SECRET_ID": ""})
    assert result.exit_code == 1, result.output
    assert described[0]["StackName"] == "keeper-iam-rotator"
    assert {p["PolicySourceArn"] for p in sent} == {ROLE_ARN}
    checks = checks_of(result)
    assert checks["idempotency-table"] == {
        "check": "idempotency-table",
        "result": "PASS",
        "detail": "keeper-iam-rotator-idempotency is ACTIVE, keyed id",
    }
    resources = {tuple(p["ActionNames"]): p["ResourceArns"] for p in sent}
    idempotency = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
    assert resources[idempotency] == ["arn:aws:dynamodb:us-east-1:123456789012:table/keeper-iam-rotator-idempotency"]
    assert checks["dynamodb:DeleteItem"]["result"] == "FAIL"
    assert checks["dynamodb:DeleteItem"]["detail"].startswith(f"{ROLE_ARN}: implicitDeny on arn:aws:dynamodb:")
    assert checks["dynamodb:PutItem"]["result"] == "PASS"


def test_role_arn_option_wins_over_the_stack(ready, run):
    answer_stack()
    sent = simulate({})
    other = "arn:aws:iam::123456789012:role/other"
    assert run("check", "--json", "--stack", "s", "--role-arn", other).exit_code == 0
    assert {p["PolicySourceArn"] for p in sent} == {other}


def test_without_stack_or_names_nothing_is_guessed(run):
    result = run("check", "--config-secret", "x", "--journal-key", "alias/k")
    assert result.exit_code == 2
    assert "no journal table: give --journal-table NAME or --stack NAME" in result.stderr
    skipped = run("check", "--json", *TARGET, env={"IDEMPOTENCY_TABLE_NAME": ""})
    assert checks_of(skipped)["idempotency-table"]["result"] == "SKIP"


def test_unshared_folder_fails(stack, run):
    folder = stack.keeper.vault.add_folder(name="production")
    stack.add_pair("alice", folder=folder)
    result = run("check", "--json", "--folder", "NotAFolderUid000000000", *TARGET)
    assert result.exit_code == 1
    assert checks_of(result)["keeper-records"] == {
        "check": "keeper-records",
        "result": "FAIL",
        "detail": "folder NotAFolderUid000000000 is not shared with the KSM application (or does not exist)",
    }
    shared = run("check", "--json", "--folder", folder, *TARGET)
    assert checks_of(shared)["keeper-records"]["detail"] == f"1 pamUser record(s) in folder(s) {folder}"


def test_checks_are_readable_at_80_columns(ready, run):
    """Narrow: each check on its own line, its detail indented below, wrapped at spaces; wide: a bordered table."""
    simulate({})
    narrow = run("check", "--role-arn", ROLE_ARN, *TARGET, env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    at = lines.index("journal-key                    PASS")
    assert lines[at + 1].startswith("    arn:aws:kms:us-east-1:123456789012:key/")  # an ARN is never split at a '-'
    assert lines[at + 2] == "    is Enabled"
    wide = run("check", "--role-arn", ROLE_ARN, *TARGET, env={"COLUMNS": "160"})
    row = next(line for line in wide.stdout.splitlines() if "journal-key" in line)
    assert row.startswith("│ journal-key") and " is Enabled " in row and row.endswith("│")  # one line


def test_journal_key_grants_are_read_from_its_key_policy(ready, run):
    """The template grants the journal key to the function's role in the key policy, not in the role's policies:
    `check` reads the key policy instead of reporting the role's (identity-policy) simulation as denied."""
    kms = boto3.client("kms")
    key = kms.describe_key(KeyId=JOURNAL_KEY)["KeyMetadata"]["Arn"]
    admin = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": ["kms:Get*"]}
    function = {"Effect": "Allow", "Principal": {"AWS": ROLE_ARN}, "Action": ["kms:GenerateDataKey", "kms:Decrypt"]}
    policy = {"Version": "2012-10-17", "Statement": [{**s, "Resource": "*"} for s in (admin, function)]}
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(policy))
    sent = simulate({"kms:GenerateDataKey": "implicitDeny", "kms:Decrypt": "implicitDeny"})
    result = run("check", "--json", "--role-arn", ROLE_ARN, *TARGET)
    assert result.exit_code == 0, result.output
    checks = checks_of(result)
    assert checks["kms:GenerateDataKey"]["detail"] == f"allowed for {ROLE_ARN} (the key policy)"
    assert checks["kms:Decrypt"]["result"] == "PASS"
    assert not [p for p in sent if p["ActionNames"][0].startswith("kms:")]  # decided by the key policy alone
    other = "arn:aws:iam::123456789012:role/other"
    denied = run("check", "--json", "--role-arn", other, *TARGET)
    assert denied.exit_code == 1
    assert checks_of(denied)["kms:Decrypt"] == {
        "check": "kms:Decrypt",
        "result": "FAIL",
        "detail": f"{other}: not granted by the key policy of {key}",
    }


def test_check_reports_member_accounts_and_whether_each_record_is_due(stack, run, monkeypatch):
    """Fleets: each allowed account's role is assumed and read with; each record says its account and whether the
    schedule would rotate it now."""
    from rotator_sandbox.accounts import create_target_role, member_session, roles_must_exist
    from test_fleet import HUB_ROLE, MEMBER, NO_ROLE, OUTSIDER, member_pair

    simulate({})
    with roles_must_exist():
        for account in (MEMBER, OUTSIDER):
            create_target_role(member_session(boto3.session.Session, account).client("iam"), HUB_ROLE)
        member = member_pair(stack, MEMBER, "alice")
        outsider = member_pair(stack, OUTSIDER, "mallory")
        fresh = stack.add_pair("bob")
        stack.rotate(fresh)
        monkeypatch.setenv("TARGET_ACCOUNT_IDS", f"{MEMBER},{NO_ROLE}")
        checks = checks_of(run("check", "--json", *TARGET))
    assert checks[f"account {MEMBER}"]["result"] == "PASS"
    assert checks[f"account {NO_ROLE}"]["result"] == "FAIL"
    assert "assume_role_failed" in checks[f"account {NO_ROLE}"]["detail"]
    assert checks[f"record {member}"]["result"] == "PASS"
    assert "due (never rotated" in checks[f"record {member}"]["detail"]
    assert checks[f"record {outsider}"]["result"] == "FAIL"
    assert "account_not_allowed" in checks[f"record {outsider}"]["detail"]
    assert "not due (last rotated" in checks[f"record {fresh}"]["detail"]
    assert stack.keeper_password(member) == INITIAL_PASSWORD


def test_check_says_which_keeper_the_config_names_and_who_may_rewrite_it(ready, run, monkeypatch):
    simulate({})
    checks = checks_of(run("check", "--json", *TARGET))
    assert checks["keeper-host"]["result"] == "PASS"
    assert checks["config-secret-policy"]["result"] == "WARN"
    assert "any principal allowed secretsmanager:PutSecretValue" in checks["config-secret-policy"]["detail"]

    admin = "arn:aws:iam::123456789012:role/ksm-config-admins"
    statement = {"Effect": "Deny", "Principal": "*", "Action": ["secretsmanager:PutSecretValue"], "Resource": "*"}
    statement["Condition"] = {"ArnNotEquals": {"aws:PrincipalArn": admin}}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    boto3.client("secretsmanager").put_resource_policy(SecretId=TARGET[1], ResourcePolicy=policy)
    checks = checks_of(run("check", "--json", *TARGET))
    assert (checks["config-secret-policy"]["result"], checks["config-secret-policy"]["detail"]) == (
        "PASS",
        f"only {admin} may write the config",
    )

    monkeypatch.delenv("SANDBOX_KEEPER_HOST")  # the emulator is not Keeper: the function would refuse this config
    result = run("check", "--json", *TARGET)
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks["keeper-host"]["result"] == "FAIL" and "ksm_config_untrusted" in checks["keeper-host"]["detail"]
    assert checks["keeper-records"]["result"] == "SKIP"  # nothing is read from a Keeper the function refuses


def test_check_verifies_the_stacks_tag_on_every_user(ready, run, stack):
    simulate({})
    untagged = stack.add_record("carol", dn=stack.iam.create_user(UserName="carol")["User"]["Arn"])
    stack.iam.create_login_profile(UserName="carol", Password=INITIAL_PASSWORD)
    answer_stack()
    checks = checks_of(run("check", "--json", "--stack", "s", env={"KSM_CONFIG_SECRET_ID": ""}))
    assert checks["user-scope"] == {
        "check": "user-scope",
        "result": "PASS",
        "detail": "only users tagged keeper-iam-rotator=managed (IAM enforces it)",
    }
    assert checks[f"record {ready['alice']}"]["result"] == "PASS"
    assert checks[f"record {untagged}"]["result"] == "FAIL"
    assert "tag keeper-iam-rotator=managed missing" in checks[f"record {untagged}"]["detail"]
    assert checks_of(run("check", "--json", *TARGET))["user-scope"]["result"] == "SKIP"  # no stack to ask


def test_check_calls_a_stack_without_a_required_tag_unsafe(ready, run):
    simulate({})
    answer_stack(RequiredUserTag="none")
    checks = checks_of(run("check", "--json", "--stack", "s", env={"KSM_CONFIG_SECRET_ID": ""}))
    assert checks["user-scope"]["result"] == "WARN" and "UNSAFE" in checks["user-scope"]["detail"]
    assert checks[f"record {ready['alice']}"]["result"] == "PASS"


def test_keeper_capacity_counts_every_listed_device_against_the_fleets_need(ready, run):
    simulate({})
    listed = "keeper-iam-rotator/ksm-config,keeper-iam-rotator/ksm-config-2"
    result = run("check", "--json", *TARGET, env={"KSM_CONFIG_SECRET_ID": listed, "KEEPER_REQUESTS_PER_MINUTE": "10"})
    checks = checks_of(result)
    assert checks["keeper-device 1"]["detail"].endswith("sees 2 pamUser record(s)")
    assert checks["keeper-device 2"]["result"] == "SKIP"  # no such secret here: its records are not counted
    assert "keeper-iam-rotator/ksm-config-2" in checks["keeper-device 2"]["detail"]
    capacity = checks["keeper-capacity"]
    assert capacity["result"] == "PASS"
    # 10 requests a minute, slots 5% apart = 4.76 rotations a minute = 6,857 a day, less 25%: 5,143 per device
    assert capacity["detail"].startswith(
        "2 client device(s), each paced at burst 90 per 11 s per endpoint, 10 requests"
    )
    assert "about 10,286 rotations/day (5,143 per device" in capacity["detail"]
    assert "the fleet needs 0.1/day (2 records every 30 days)" in capacity["detail"]


def test_a_device_above_500_records_and_a_fleet_beyond_capacity_are_warned():
    assert device_check(1, "secret s", 501).result is Verdict.WARN
    assert "Keeper recommends at most 500" in device_check(1, "secret s", 501).detail
    assert device_check(1, "secret s", 500).result is Verdict.PASS
    settings = Settings(keeper_requests_per_minute=1, rotation_period_days=1)  # 514 rotations/day per device
    assert capacity(settings, devices=1, records=520).result is Verdict.WARN
    assert "more than the devices can rotate" in capacity(settings, 1, 520).detail
    assert capacity(settings, devices=2, records=520).result is Verdict.PASS


def test_a_second_device_this_caller_may_read_is_counted(ready, run, stack):
    boto3.client("secretsmanager").create_secret(Name="second-device", SecretString=stack.keeper.client_config())
    simulate({})
    result = run(
        "check", "--json", *TARGET, env={"KSM_CONFIG_SECRET_ID": "keeper-iam-rotator/ksm-config,second-device"}
    )
    checks = checks_of(result)
    assert checks["keeper-device 2"] == {
        "check": "keeper-device 2",
        "result": "PASS",
        "detail": "secret second-device: sees 2 pamUser record(s)",
    }
    assert "2 client device(s)" in checks["keeper-capacity"]["detail"]
