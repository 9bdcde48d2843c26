"""Helpers for the CLI tests: run the console script's `cli` in process and keep everything it printed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keeper_iam_rotator_cli.main import cli
from rotator_sandbox.stack import CONFIG_SECRET, JOURNAL_KEY, JOURNAL_TABLE

ROLE_ARN = "arn:aws:iam::123456789012:role/keeper-iam-rotator-RotatorFunctionRole-AbC123"
TARGET = ["--config-secret", CONFIG_SECRET, "--journal-table", JOURNAL_TABLE, "--journal-key", JOURNAL_KEY]


@dataclass
class Transcript:
    """Everything the CLI printed in one test (stdout, stderr and log output), to prove no secret appears."""

    chunks: list[str]

    def text(self) -> str:
        return "\n".join(self.chunks)


@pytest.fixture
def transcript() -> Transcript:
    return Transcript([])


@pytest.fixture
def run(transcript: Transcript, capfd: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`run("rotate", "--record", uid)` → click Result; every output is appended to the transcript."""

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=True)
        captured = capfd.readouterr()
        transcript.chunks += [result.stdout, result.stderr, captured.out, captured.err]
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            transcript.chunks.append(repr(result.exception))
        return result

    return invoke


def results_of(result: Result) -> list[dict[str, Any]]:
    return json.loads(result.stdout)["results"]


class _Http:
    status_code = 200
    headers: dict[str, str] = {}  # noqa: RUF012
    content = b""
    text = ""


def answer_aws(service: str, operation: str, respond: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict]:
    """Answer `service.operation` (for clients created after this call) with `respond(params)` instead of moto.
    Returns the list of parameter dicts the CLI sent."""
    import boto3

    events = boto3._get_default_session()._session.get_component("event_emitter")
    sent: list[dict[str, Any]] = []

    def remember(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    def answer(**_: Any) -> Any:
        return _Http(), {"ResponseMetadata": {"HTTPStatusCode": 200}, **respond(sent[-1])}

    events.register(f"before-parameter-build.{service}.{operation}", remember, unique_id=f"remember-{operation}")
    events.register(f"before-call.{service}.{operation}", answer, unique_id=f"answer-{operation}")
    return sent


def answer_stack(**outputs: str) -> list[dict[str, Any]]:
    """DescribeStacks answers with the SAM stack's outputs (these defaults, or `outputs`)."""
    return answer_aws("cloudformation", "DescribeStacks", lambda params: stack_document(**outputs))


def stack_document(
    function: str = "keeper-iam-rotator-RotatorFunction-abc",
    api_url: str = "https://abc123.execute-api.us-east-1.amazonaws.com/Prod/rotations",
    config_secret: str = "keeper-iam-rotator/ksm-config",  # noqa: S107 - a secret name
    table: str = "keeper-iam-rotator-journal",
    key: str = "alias/keeper-iam-rotator-journal",
    idempotency_table: str = "keeper-iam-rotator-idempotency",
    role: str = ROLE_ARN,
    **more: str,
) -> dict[str, Any]:
    """A DescribeStacks answer with the SAM stack's outputs (moto's CloudFormation is slow to create stacks); `more`
    adds or replaces outputs by name."""
    outputs = {
        "FunctionName": function,
        "FunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{function}",
        "ApiUrl": api_url,
        "JournalTableName": table,
        "JournalKeyArn": key,
        "IdempotencyTableName": idempotency_table,
        "RotatorRoleArn": role,
        "ConfigSecretArn": config_secret,
        "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:keeper-iam-rotator-alarms",
        "KeeperRegion": "US",
        "RequiredUserTag": "keeper-iam-rotator=managed",
    } | more
    return {
        "Stacks": [
            {
                "StackName": "rotator",
                "CreationTime": "2026-11-01T00:00:00Z",
                "StackStatus": "CREATE_COMPLETE",
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
            }
        ]
    }


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """The CLI configures the rotator's logger for a terminal; give the other test suites theirs back."""
    import logging

    names = ("keeper_iam_rotator", "botocore", "boto3", "urllib3", "requests", "ksm")
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names
    }
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
