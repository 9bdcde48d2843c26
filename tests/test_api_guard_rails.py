"""The API's own guard rails: who may call it (resource policy), how fast (stage throttling, reserved concurrency),
and who did (access log, the caller's ARN on every `rotation result` line).

The template is translated offline by aws-sam-translator, the library behind CloudFormation's SAM transform, so
these tests read what CloudFormation would create, not what the SAM source seems to say.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rotator_sandbox.stack import ACCOUNT, load_event

from template_tools import translate

CALLER = f"arn:aws:iam::{ACCOUNT}:role/rotation-operators"


def translated(monkeypatch: pytest.MonkeyPatch, **parameters: str) -> dict[str, Any]:
    """CloudFormation's view of the stack for these parameter values: SAM translated, the template's own Conditions
    evaluated, and every resource's intrinsics (Fn::If included) resolved, as CloudFormation does."""
    stack = translate(parameters)
    return {logical_id: stack.resource(logical_id) for logical_id in _existing(stack)}


def _existing(stack: Any) -> list[str]:
    return [
        logical_id
        for logical_id, resource in stack.template["Resources"].items()
        if stack.conditions.get(resource.get("Condition", ""), True)
    ]


def of_type(resources: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (properties,) = [r["Properties"] for r in resources.values() if r["Type"] == resource_type]
    return properties


def resource_policy(resources: dict[str, Any]) -> list[dict[str, Any]]:
    return of_type(resources, "AWS::ApiGateway::RestApi")["Body"]["x-amazon-apigateway-policy"]["Statement"]


def test_without_allowed_callers_the_account_decides_through_iam(monkeypatch):
    (statement,) = resource_policy(translated(monkeypatch))
    assert statement["Effect"] == "Allow" and statement["Resource"] == "execute-api:/*"
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}


def test_allowed_callers_are_the_only_ones_not_denied(monkeypatch):
    other = f"arn:aws:iam::{ACCOUNT}:role/break-glass-*"
    allow, deny = resource_policy(translated(monkeypatch, AllowedCallerArns=f"{CALLER},{other}"))
    assert allow["Effect"] == "Allow"
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "execute-api:Invoke"
    # an explicit deny: a same-account principal allowed by its identity policy is refused all the same
    assert deny["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [CALLER, other]}}


def test_a_changed_caller_list_is_deployed(monkeypatch):
    """API Gateway applies a resource policy only with a new deployment: the policy must change SAM's hash."""

    def deployment(**parameters: str) -> str:
        resources = translated(monkeypatch, **parameters)
        (name,) = [name for name, r in resources.items() if r["Type"] == "AWS::ApiGateway::Deployment"]
        return name

    assert deployment() != deployment(AllowedCallerArns=CALLER) != deployment(AllowedCallerArns=f"{CALLER}x")


def test_stage_throttling_and_access_log_with_the_callers_identity(monkeypatch):
    resources = translated(monkeypatch, ApiThrottlingRateLimit="2", ApiThrottlingBurstLimit="4")
    stage = of_type(resources, "AWS::ApiGateway::Stage")
    (method_settings,) = stage["MethodSettings"]
    assert method_settings["ResourcePath"] == "/*" and method_settings["HttpMethod"] == "*"
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(method_settings)
    access_log = stage["AccessLogSetting"]
    assert access_log["DestinationArn"] == "<RotatorApiAccessLogGroup.Arn>"
    fields = json.loads(access_log["Format"])
    for variable in ("identity.userArn", "identity.caller", "identity.sourceIp", "requestId", "status"):
        assert f"$context.{variable}" in fields.values()
    assert resources["RotatorApiAccessLogGroup"]["Properties"]["RetentionInDays"] == 365


@pytest.mark.parametrize(("reserved", "expected"), [("5", "5"), ("0", None)])
def test_reserved_concurrency_zero_means_no_reservation(monkeypatch, reserved, expected):
    resources = translated(monkeypatch, ReservedConcurrency=reserved)
    function = of_type(resources, "AWS::Lambda::Function")
    assert function.get("ReservedConcurrentExecutions") == expected


def test_rotation_result_lines_name_the_api_caller(stack, function_log):
    uid = stack.add_pair("alice")
    event = load_event("api-post-rotations.json")
    event.update(body=json.dumps({"records": [uid]}), isBase64Encoded=False)
    event["requestContext"].setdefault("identity", {}).update(userArn=CALLER, caller="AROAEXAMPLE:operator")
    assert stack.invoke(event)["statusCode"] == 200
    stack.rotate(uid)  # a direct invoke afterwards: the caller of the API call must not stick to it
    lines = [json.loads(line) for line in function_log.getvalue().splitlines() if '"rotation result"' in line]
    assert [line.get("callerArn") for line in lines] == [CALLER, None]
