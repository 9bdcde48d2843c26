"""The drift event path as CloudFormation receives it: the hub's rule (translated by the SAM translator), the bus
policy that admits member accounts, the member accounts' forwarding rule, DriftAction and DriftAlarm.

Each rule's pattern is also run against CloudTrail events with moto's EventBridge pattern matcher (AWS's matcher is
not available offline; moto's follows the documented rules: a named field must exist, `$or`, `exists`,
`anything-but`), so "the rotator's own call never matches" is checked on the resolved pattern, not read off it.
"""

from __future__ import annotations

from typing import Any

import pytest
from moto.events.models import EventPattern
from samtranslator.yaml_helper import yaml_parse

from rotator_sandbox.paths import ROOT
from test_drift import change_event

from template_tools import TranslatedStack, translate

FUNCTION_ROLE_ARN = "arn:aws:iam::123456789012:role/keeper-iam-rotator-RotatorFunctionRole-1A2B3C"
TARGET_ROLE_ARN = "arn:aws:iam::210987654321:role/keeper-iam-rotator-target"
MEMBER = "210987654321"
HUB_BUS = "arn:aws:events:us-east-1:123456789012:event-bus/default"


def hub_rule(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    stack = translate(parameters, physical={"RotatorFunctionRole.Arn": FUNCTION_ROLE_ARN})
    return stack.resource("RotatorFunctionPasswordChanges")["Properties"]


def member_stack(parameters: dict[str, str]) -> TranslatedStack:
    template = yaml_parse((ROOT / "member-account.yaml").read_text())  # intrinsics kept, as for template.yaml
    values = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    values |= {"HubRoleArn": FUNCTION_ROLE_ARN, "AWS::AccountId": MEMBER, "AWS::Partition": "aws"} | parameters
    return TranslatedStack(template, values, {"TargetRole.Arn": TARGET_ROLE_ARN})


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    return EventPattern(None, pattern).matches_event(event)


def test_the_rule_sends_the_four_password_calls_to_the_function_with_retries_and_a_dead_letter_queue():
    rule = hub_rule()
    pattern = rule["EventPattern"]
    (target,) = rule["Targets"]

    assert (pattern["source"], pattern["detail-type"]) == (["aws.iam"], ["AWS API Call via CloudTrail"])
    assert pattern["detail"]["eventSource"] == ["iam.amazonaws.com"]
    assert sorted(pattern["detail"]["eventName"]) == [
        "ChangePassword",
        "CreateLoginProfile",
        "DeleteLoginProfile",
        "UpdateLoginProfile",
    ]
    assert target["Arn"] == "<RotatorFunction.Arn>"
    assert target["DeadLetterConfig"] == {"Arn": "<ScheduleDeadLetterQueue.Arn>"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    stack = translate()
    (permission,) = [
        p["Properties"]
        for p in stack.resources("AWS::Lambda::Permission").values()
        if p["Properties"].get("SourceArn") == "<RotatorFunctionPasswordChanges.Arn>"
    ]
    assert (permission["Principal"], permission["Action"]) == ("events.amazonaws.com", "lambda:InvokeFunction")
    (queue_policy,) = [
        policy
        for policy in stack.resources("AWS::SQS::QueuePolicy").values()
        if policy["Properties"]["Queues"] == ["<ScheduleDeadLetterQueue>"]
    ]
    (statement,) = queue_policy["Properties"]["PolicyDocument"]["Statement"]
    assert "<RotatorFunctionPasswordChanges.Arn>" in statement["Condition"]["ArnEquals"]["aws:SourceArn"]


def test_the_rules_pattern_leaves_out_exactly_the_rotators_own_calls():
    pattern = hub_rule()["EventPattern"]
    issuer = pattern["detail"]["$or"][1]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"]
    assert issuer == [{"anything-but": [FUNCTION_ROLE_ARN]}]

    assert matches(pattern, change_event())  # an administrator's role session
    assert matches(pattern, change_event("ChangePassword"))  # the user himself: no session issuer at all
    assert matches(pattern, change_event("DeleteLoginProfile", issuer=None))  # an IAM user's access keys
    assert matches(pattern, change_event("CreateLoginProfile"))
    assert not matches(pattern, change_event(issuer=FUNCTION_ROLE_ARN))  # the rotator's own UpdateLoginProfile
    refused = change_event()
    refused["detail"]["errorCode"] = "PasswordPolicyViolation"
    assert not matches(pattern, refused)
    other = change_event()
    other["detail"]["eventName"] = "AttachUserPolicy"
    assert not matches(pattern, other)


@pytest.mark.parametrize("action", ["rotate", "alert"])
def test_drift_action_reaches_the_function(action):
    stack = translate({"DriftAction": action})
    variables = stack.resource("RotatorFunction")["Properties"]["Environment"]["Variables"]
    assert variables["DRIFT_ACTION"] == action
    assert translate().resource("RotatorFunction")["Properties"]["Environment"]["Variables"]["DRIFT_ACTION"] == "rotate"


def test_drift_alarm_publishes_to_the_alarm_topic():
    alarm = translate().resource("DriftAlarm")["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("KeeperIamRotator", "DriftDetected")
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "keeper-iam-rotator"}]
    assert alarm["AlarmActions"] == ["<AlarmTopic>"]


def test_only_the_listed_member_accounts_may_put_iam_events_on_the_hubs_bus():
    assert "MemberAccountsForwardPasswordChanges" not in translate().resources("AWS::Events::EventBusPolicy")
    stack = translate({"TargetAccountIds": f"{MEMBER},111111111111"})
    policy = stack.resource("MemberAccountsForwardPasswordChanges")["Properties"]
    statement = policy["Statement"]

    assert policy["EventBusName"] == "default"
    assert statement["Principal"] == {"AWS": [MEMBER, "111111111111"]}
    assert (statement["Effect"], statement["Action"]) == ("Allow", "events:PutEvents")
    assert statement["Resource"] == HUB_BUS
    assert statement["Condition"] == {"StringEquals": {"events:source": "aws.iam"}}


def test_the_member_rule_forwards_changes_to_the_hub_and_never_the_target_roles_own():
    assert member_stack({}).resources("AWS::Events::Rule") == {}  # no hub bus given: no forwarding
    stack = member_stack({"HubEventBusArn": HUB_BUS})
    rule = stack.resource("PasswordChangeForwarding")["Properties"]
    (target,) = rule["Targets"]
    role = stack.resource("PasswordChangeForwardingRole")["Properties"]

    assert target["Arn"] == HUB_BUS and target["RoleArn"] == "<PasswordChangeForwardingRole.Arn>"
    assert role["Policies"][0]["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": "events:PutEvents", "Resource": HUB_BUS}
    ]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}
    pattern = rule["EventPattern"]
    assert pattern == hub_rule()["EventPattern"] | {"detail": pattern["detail"]}  # the same event selection
    assert matches(pattern, change_event(account=MEMBER))
    assert matches(pattern, change_event("ChangePassword", account=MEMBER))
    assert not matches(pattern, change_event(issuer=TARGET_ROLE_ARN, account=MEMBER))


def test_member_role_may_read_the_credential_report():
    role = member_stack({}).resource("TargetRole")["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    (reconcile,) = [s for s in statements if s["Sid"] == "ReconcileDriftWithTheCredentialReport"]
    assert reconcile["Action"] == ["iam:GenerateCredentialReport", "iam:GetCredentialReport"]
