"""Nothing secret ever reaches the operator's terminal: one session drives every command, success and failure paths,
and everything printed (stdout, stderr, logging) is searched for every secret that existed during it."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody

from app import lambda_handler

from .conftest import TARGET, answer_aws
from conftest import INITIAL_PASSWORD, LambdaContext


@pytest.fixture(autouse=True)
def _handler_metrics_off(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


def passwords_sent_to_iam() -> list[str]:
    """Every password any UpdateLoginProfile call carried (the CLI's and the in-process handler's)."""
    sent: list[str] = []
    events = boto3._get_default_session()._session.get_component("event_emitter")

    def remember(params: dict[str, Any], **_: Any) -> None:
        sent.append(params["Password"])

    events.register("before-parameter-build.iam.UpdateLoginProfile", remember, unique_id="remember-passwords")
    return sent


def config_secrets(config_b64: str) -> list[str]:
    config = json.loads(base64.b64decode(config_b64))
    return [config_b64, json.dumps(config), config["privateKey"], config["appKey"], config["clientId"]]


def test_no_secret_in_any_output(stack, run, transcript, tmp_path, monkeypatch):
    sent = passwords_sent_to_iam()
    answer_aws(
        "lambda",
        "Invoke",
        lambda params: _payload(lambda_handler(json.loads(params["Payload"]), LambdaContext())),
    )
    secrets: list[str] = [INITIAL_PASSWORD]
    alice, bob = stack.add_pair("alice"), stack.add_pair("bob")
    stack.add_user("svc", password=None)
    no_console = stack.add_record("svc")

    # init, then the other commands with the config it stored
    token = stack.keeper.one_time_token()
    secrets.append(token)
    keeper = ["--hostname", stack.keeper.host, "--server-public-key", stack.keeper.server_public_key]
    assert run("init", "--secret-name", "cli/ksm", "--token", token, *keeper).exit_code == 0
    assert run("init", "--secret-name", "cli/ksm", "--token", token, *keeper).exit_code == 1  # spent
    monkeypatch.setattr("keeper_iam_rotator_cli.init.has_terminal", lambda: True)  # the prompt path, as on a terminal
    assert run("init", "--secret-name", "cli/ksm", *keeper, input=f"{stack.keeper.one_time_token()}\n").exit_code == 0
    stored = boto3.client("secretsmanager").get_secret_value(SecretId="cli/ksm")["SecretString"]
    secrets += config_secrets(stored)
    original = boto3.client("secretsmanager").get_secret_value(SecretId="keeper-iam-rotator/ksm-config")
    secrets += config_secrets(original["SecretString"])
    target = ["--config-secret", "cli/ksm", *TARGET[2:]]

    assert run("check", *target).exit_code == 1  # svc has no console password
    assert run("check", "--json", "--record", alice, *target).exit_code == 0
    assert run("rotate", "--record", alice, "--record", no_console, *target).exit_code == 1
    assert run("rotate", "--record", bob, "--json", *target).exit_code == 0
    assert run("rotate", "--dry-run", *target).exit_code == 1  # svc is skipped
    stack.keeper.vault.inject_fault("finalize_secret_update", times=20)  # Keeper refuses to commit: IAM restored
    failed = run("rotate", "--record", alice, *target)
    assert failed.exit_code == 1 and "keeper_commit_failed_iam_restored" in failed.stdout
    stack.keeper.vault.clear_faults()
    assert run("invoke", "--record", bob, "--function", "fn").exit_code == 0

    # configs given as files and env, valid and broken
    config_file = tmp_path / "ksm.json"
    config_file.write_text(json.dumps(json.loads(base64.b64decode(stored)) | {"appKey": ""}))
    journal = TARGET[2:]
    assert run("rotate", "--record", alice, "--config-file", str(config_file), *journal).exit_code == 2
    config_file.write_text(stored[:-7])
    assert run("check", "--config-file", str(config_file), *journal).exit_code == 1
    assert run("rotate", "--record", bob, *journal, env={"KSM_CONFIG": stored}).exit_code == 0

    # an unexpected error whose text quotes the config and a password is shown by type only
    from keeper_iam_rotator import service

    def explode(*_: Any) -> Any:
        raise RuntimeError(f"boom {stored} {stack.iam_password('bob')}")

    monkeypatch.setattr(service, "run", explode)
    crashed = run("rotate", "--record", bob, *target)
    assert crashed.exit_code == 1
    assert "unexpected RuntimeError" in crashed.stderr

    secrets += sent
    secrets += [stack.iam_password(name) for name in ("alice", "bob")]
    secrets += [stack.keeper_password(uid) for uid in (alice, bob)]
    assert len(sent) >= 5
    assert stack.iam_password("bob") == stack.keeper_password(bob) != INITIAL_PASSWORD

    output = transcript.text()
    assert "rotated" in output and "Created secret" in output  # the transcript really holds the output
    leaked = [s for s in set(secrets) if s and s in output]
    assert leaked == [], "secret(s) printed"


def _payload(document: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(document).encode()
    return {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(data), len(data))}
