"""`init`: redeem an emulator one-time token with the stock SDK, store the config in (moto) Secrets Manager."""

from __future__ import annotations

import base64
import json
import tomllib

import boto3

from rotator_sandbox.stack import CONFIG_SECRET

from .conftest import TARGET, answer_aws, stack_document
from faults import AwsFaults

NAME = "rotator/ksm-config-new"


def init_args(keeper, *extra: str) -> list[str]:
    return [
        "init",
        "--secret-name",
        NAME,
        "--hostname",
        keeper.host,
        "--server-public-key",
        keeper.server_public_key,
        *extra,
    ]


def stored_config(name: str = NAME) -> dict:
    value = boto3.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
    return json.loads(base64.b64decode(value))


def test_creates_the_secret_and_the_config_rotates(stack, run):
    token = stack.keeper.one_time_token()
    key = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    result = run(*init_args(stack.keeper, "--token", token, "--tag", "team=iam", "--kms-key-id", key))
    assert result.exit_code == 0, result.output
    arn = boto3.client("secretsmanager").describe_secret(SecretId=NAME)["ARN"]
    assert f"Created secret: {arn}" in result.stdout
    assert "  make build\n" in result.stdout
    assert f"  .venv-sam/bin/sam deploy --guided --parameter-overrides KsmConfigSecretArn={arn}\n" in result.stdout
    assert "  keeper-iam-rotator check --stack keeper-iam-rotator\n" in result.stdout
    described = boto3.client("secretsmanager").describe_secret(SecretId=NAME)
    assert described["Tags"] == [{"Key": "team", "Value": "iam"}]
    assert described["KmsKeyId"] == key
    config = stored_config()
    assert {"clientId", "privateKey", "appKey", "hostname", "serverPublicKey"} <= set(config)
    assert "clientKey" not in config
    uid = stack.add_pair("alice")
    rotated = run("rotate", "--record", uid, *TARGET[2:], "--config-secret", NAME)
    assert rotated.exit_code == 0, rotated.output
    assert stack.iam_password("alice") == stack.keeper_password(uid) != "Initial-Passw0rd!"


def test_the_suggested_deploy_matches_the_repository():
    """`make build` exists and installs sam where init says; `sam deploy` deploys the stack `check --stack` names."""
    from keeper_iam_rotator_cli.init import STACK_NAME
    from rotator_sandbox.paths import ROOT

    samconfig = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert samconfig["default"]["global"]["parameters"]["stack_name"] == STACK_NAME
    makefile = (ROOT / "Makefile").read_text()
    assert "\nbuild: " in makefile and "\nSAM_VENV ?= .venv-sam\n" in makefile


def test_the_suggested_check_runs_as_printed(stack, run):
    """`init` prints `check --stack keeper-iam-rotator`: with the deployed stack's outputs it finds everything."""
    result = run(*init_args(stack.keeper, "--token", stack.keeper.one_time_token()))
    suggested = result.stdout.strip().splitlines()[-1].split()
    assert suggested[:2] == ["keeper-iam-rotator", "check"]
    asked = answer_aws("cloudformation", "DescribeStacks", lambda params: stack_document(config_secret=NAME))
    stack.add_pair("alice")
    checked = run(*suggested[1:], "--json")
    assert checked.exit_code == 0, checked.output
    assert asked[0]["StackName"] == "keeper-iam-rotator"
    checks = {c["check"]: c for c in json.loads(checked.stdout)["checks"]}
    assert f"read from secret {NAME}" in checks["ksm-config"]["detail"]
    assert checks["journal-table"]["result"] == checks["idempotency-table"]["result"] == "PASS"


def test_existing_secret_gets_a_new_version(stack, run):
    boto3.client("secretsmanager").create_secret(Name=NAME, SecretString="old")
    result = run(*init_args(stack.keeper, "--token", stack.keeper.one_time_token()))
    assert result.exit_code == 0, result.output
    assert "Stored a new version of secret" in result.stdout
    versions = boto3.client("secretsmanager").list_secret_version_ids(SecretId=NAME)["Versions"]
    assert len(versions) == 2
    assert "appKey" in stored_config()


def test_token_from_prompt_and_file(stack, run, tmp_path, monkeypatch):
    monkeypatch.setattr("keeper_iam_rotator_cli.init.has_terminal", lambda: True)
    token = stack.keeper.one_time_token()
    result = run(*init_args(stack.keeper), input=f"{token}\n")
    assert result.exit_code == 0, result.output
    assert "KSM one-time access token" in result.output
    token_file = tmp_path / "token"
    token_file.write_text(stack.keeper.one_time_token() + "\n")
    result = run(*init_args(stack.keeper, "--token-file", str(token_file)))
    assert result.exit_code == 0
    assert len(boto3.client("secretsmanager").list_secret_version_ids(SecretId=NAME)["Versions"]) == 2


def test_spent_token_fails_and_stores_nothing(stack, run):
    token = stack.keeper.one_time_token()
    assert run(*init_args(stack.keeper, "--token", token)).exit_code == 0
    again = run(*init_args(stack.keeper, "--token", token))
    assert again.exit_code == 1
    assert "redeeming the one-time token failed" in again.stderr
    assert len(boto3.client("secretsmanager").list_secret_version_ids(SecretId=NAME)["Versions"]) == 1


def test_secrets_manager_denied_keeps_the_token_unspent(stack, run):
    AwsFaults().fail("secretsmanager", "DescribeSecret", "AccessDeniedException", status=400)
    token = stack.keeper.one_time_token()
    denied = run(*init_args(stack.keeper, "--token", token))
    assert denied.exit_code == 1
    assert "DescribeSecret rotator/ksm-config-new failed: AccessDeniedException" in denied.stderr
    assert run(*init_args(stack.keeper, "--token", token)).exit_code == 0  # the token still works


def test_store_failure_after_redeeming_saves_a_private_file(stack, run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    AwsFaults().fail("secretsmanager", "CreateSecret", "AccessDeniedException", status=400)
    result = run(*init_args(stack.keeper, "--token", stack.keeper.one_time_token()))
    assert result.exit_code == 1
    saved = tmp_path / "ksm-config-rotator_ksm-config-new.b64"
    assert str(saved) in result.stderr
    assert saved.stat().st_mode & 0o077 == 0
    assert "appKey" in json.loads(base64.b64decode(saved.read_text()))


def test_malformed_tokens_are_usage_errors(run, transcript):
    result = run("init", "--secret-name", NAME, "--token", "127.0.0.1:8443:c2VjcmV0dG9rZW4")
    assert result.exit_code == 2 and "--hostname HOST:PORT" in result.stderr
    result = run("init", "--secret-name", NAME, "--token", "c2VjcmV0dG9rZW4")
    assert result.exit_code == 2 and "give --hostname" in result.stderr
    result = run("init", "--secret-name", NAME, "--token", "x", "--token-file", "-", input="y")
    assert result.exit_code == 2 and "either --token or --token-file" in result.stderr
    assert run("init", "--token", "US:abc").exit_code == 2  # --secret-name is required
    assert "c2VjcmV0dG9rZW4" not in transcript.text()  # none of the runs that held it printed it


def test_without_a_terminal_the_token_must_come_from_a_file(run, transcript):
    result = run("init", "--secret-name", NAME, input="")
    assert result.exit_code == 2
    assert "no terminal to ask for the one-time token on: give --token-file PATH" in result.stderr
    assert "Warning" not in transcript.text()  # getpass's GetPassWarning never runs


def test_a_missing_server_key_is_not_reported_as_a_spent_token(stack, run):
    token = stack.keeper.one_time_token()
    without_key = run("init", "--secret-name", NAME, "--hostname", stack.keeper.host, "--token", token)
    assert without_key.exit_code == 1
    assert "Pass that deployment's --server-public-key and use the same token again" in without_key.stderr
    assert run(*init_args(stack.keeper, "--token", token)).exit_code == 0  # the same token, with the key: it works


def test_token_mistakes_are_named_before_anything_is_spent(stack, run):
    key = token = stack.keeper.one_time_token()
    unknown = run("init", "--secret-name", NAME, "--token", f"XX:{key}")
    assert unknown.exit_code == 2
    assert "unknown region prefix 'XX' in the token: Keeper's are US, EU, AU, GOV, JP, CA" in unknown.stderr
    for bogus in ("US:bogus-token-value", "US:" + key[:-4], "US:" + key + "AAAA", "US:not base64!!"):
        result = run("init", "--secret-name", NAME, "--token", bogus)
        assert result.exit_code == 2, bogus
        assert "this is not a KSM one-time token" in result.stderr and "expected 43 of url-safe base64" in result.stderr
    assert key not in unknown.output + result.output
    assert run(*init_args(stack.keeper, "--token", token)).exit_code == 0  # none of the above spent it


def test_refused_or_unreachable_token_says_why(stack, run):
    refused = run(*init_args(stack.keeper, "--token", "A" * 43))
    assert refused.exit_code == 1
    assert "Keeper refused it (access_denied): the token is mistyped, already used or expired" in refused.stderr
    unreachable = run("init", "--secret-name", NAME, "--hostname", "127.0.0.1:9", "--token", "A" * 43)
    assert unreachable.exit_code == 1
    assert "cannot reach Keeper at 127.0.0.1:9 (ConnectionError); nothing was stored" in unreachable.stderr
    assert "A" * 43 not in refused.output + unreachable.output
    assert NAME not in {s["Name"] for s in boto3.client("secretsmanager").list_secrets()["SecretList"]}


def test_help(run):
    result = run("init", "--help")
    assert result.exit_code == 0
    for option in (
        "--token",
        "--token-file",
        "--secret-name",
        "--kms-key-id",
        "--tag",
        "--hostname",
        "--server-public-key",
    ):
        assert option in result.stdout


def test_add_device_creates_a_new_secret_protected_like_the_first_and_prints_the_list(stack, run):
    """A second client device: its own secret, the first secret's resource policy copied onto it, and the
    KsmConfigSecretArn list to deploy; the new device's config then rotates."""
    sm = boto3.client("secretsmanager")
    first = sm.describe_secret(SecretId=CONFIG_SECRET)["ARN"]
    policy = {"Version": "2012-10-17", "Statement": [{"Sid": "OnlyTheFunctionReadsTheConfig", "Effect": "Deny",
              "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}  # fmt: skip
    sm.put_resource_policy(SecretId=first, ResourcePolicy=json.dumps(policy))
    answer_aws("cloudformation", "DescribeStacks", lambda params: stack_document(config_secret=first))
    result = run(*init_args(stack.keeper, "--token", stack.keeper.one_time_token(), "--add-device", "rotator"))
    assert result.exit_code == 0, result.output
    arn = sm.describe_secret(SecretId=NAME)["ARN"]
    assert f"Added client device 2 to stack rotator: {arn}" in result.stdout
    assert f"--parameter-overrides KsmConfigSecretArn={first},{arn}\n" in result.stdout
    assert json.loads(sm.get_resource_policy(SecretId=arn)["ResourcePolicy"]) == policy
    assert stored_config()["clientId"] != stored_config(CONFIG_SECRET)["clientId"]  # a new client device


def test_add_device_refuses_a_secret_already_listed_before_spending_the_token(stack, run):
    first = boto3.client("secretsmanager").describe_secret(SecretId=CONFIG_SECRET)["ARN"]
    answer_aws("cloudformation", "DescribeStacks", lambda params: stack_document(config_secret=first))
    token = stack.keeper.one_time_token()
    args = ["init", "--secret-name", CONFIG_SECRET, "--hostname", stack.keeper.host]
    result = run(*args, "--server-public-key", stack.keeper.server_public_key, "--token", token, "--add-device", "s")
    assert result.exit_code != 0
    assert "already one of the stack's config secrets" in result.output
    assert run(*init_args(stack.keeper, "--token", token)).exit_code == 0  # the token still works
