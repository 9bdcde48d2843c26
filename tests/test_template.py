"""What CloudFormation receives after the SAM transform: the schedule switch, the recovery schedule, the dead-letter
queue and its alarm, who may use the journal and alarm keys, and no dependency cycle."""

from __future__ import annotations

import json

import pytest

from template_tools import function_role_policies, policies_allow, references, statement_allows, translate

ROOT_ARN = "arn:aws:iam::123456789012:root"
ROLE_ARN = "<RotatorFunctionRole.Arn>"
BREAK_GLASS = "arn:aws:iam::123456789012:role/journal-break-glass"
KMS_DATA_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:CreateGrant",  # a grant can hand out any of the above
)


def principals_allowed(key_policy: dict, action: str) -> set[str]:
    found = set()
    for statement in key_policy["Statement"]:
        if statement_allows(statement, action):
            principal = statement["Principal"]
            found.add(principal.get("AWS") or principal.get("Service"))
    return found


@pytest.mark.parametrize(("switch", "state"), [("true", "ENABLED"), ("false", "DISABLED")])
def test_schedule_switch_sets_the_rule_state_and_leaves_recovery_on(switch, state):
    stack = translate({"ScheduleEnabled": switch})

    rotation = stack.resource("RotatorFunctionSchedule")["Properties"]
    recovery = stack.resource("RotatorFunctionRecovery")["Properties"]

    assert rotation["State"] == state
    assert rotation["ScheduleExpression"] == "rate(1 day)"  # daily: each record is rotated when it is due
    assert recovery.get("State", "ENABLED") == "ENABLED"


def test_recovery_schedule_sends_the_recover_action_with_retries_and_the_dead_letter_queue():
    stack = translate({"RecoveryScheduleExpression": "rate(5 minutes)"})

    rules = stack.resources("AWS::Events::Rule")
    recovery = rules["RotatorFunctionRecovery"]["Properties"]
    (target,) = recovery["Targets"]

    assert recovery["ScheduleExpression"] == "rate(5 minutes)"
    assert translate().resource("RotatorFunctionRecovery")["Properties"]["ScheduleExpression"] == "rate(15 minutes)"
    assert json.loads(target["Input"]) == {"action": "recover"}
    assert target["Arn"] == "<RotatorFunction.Arn>"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    for rule in rules.values():  # both schedules dead-letter into the one queue the alarm watches
        assert rule["Properties"]["Targets"][0]["DeadLetterConfig"] == {"Arn": "<ScheduleDeadLetterQueue.Arn>"}


def test_the_dead_letter_queue_accepts_both_schedules_and_its_alarm_reaches_the_topic():
    stack = translate()

    policy = stack.resource("ScheduleDeadLetterQueuePolicy")
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    alarm = stack.resource("ScheduleDeadLetterAlarm")["Properties"]

    assert policy["Properties"]["Queues"] == ["<ScheduleDeadLetterQueue>"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert sorted(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == [
        "<RotatorFunctionPasswordChanges.Arn>",  # the CloudTrail password changes (test_drift_template.py)
        "<RotatorFunctionRecovery.Arn>",
        "<RotatorFunctionSchedule.Arn>",
    ]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "<ScheduleDeadLetterQueue.QueueName>"}]
    assert alarm["AlarmActions"] == ["<AlarmTopic>"]


@pytest.mark.parametrize("break_glass", ["", BREAK_GLASS])
def test_only_the_function_role_and_the_break_glass_role_can_decrypt_the_journal(break_glass):
    stack = translate({"JournalBreakGlassRoleArn": break_glass})
    key_policy = stack.resource("JournalKey")["Properties"]["KeyPolicy"]

    for action in KMS_DATA_ACTIONS:
        assert ROOT_ARN not in principals_allowed(key_policy, action), action
    assert principals_allowed(key_policy, "kms:Decrypt") == {ROLE_ARN} | ({break_glass} if break_glass else set())
    assert principals_allowed(key_policy, "kms:GenerateDataKey") == {ROLE_ARN}
    assert principals_allowed(key_policy, "kms:Encrypt") == set()  # envelope encryption: data keys only
    for action in ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DescribeKey", "kms:EnableKeyRotation"):
        assert principals_allowed(key_policy, action) == {ROOT_ARN}  # the account still administers the key


def test_alarm_topic_key_lets_this_accounts_alarms_and_the_function_role_publish():
    stack = translate()
    topic = stack.resource("AlarmTopic")["Properties"]
    key_policy = stack.resource("AlarmTopicKey")["Properties"]["KeyPolicy"]
    (alarms,) = [s for s in key_policy["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    role = function_role_policies(stack)

    assert topic["KmsMasterKeyId"] == "<AlarmTopicKey>"
    assert statement_allows(alarms, "kms:GenerateDataKey") and statement_allows(alarms, "kms:Decrypt")
    assert alarms["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    assert alarms["Condition"]["ArnLike"] == {"aws:SourceArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:*"}
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):  # the failure destination publishes as the role
        assert policies_allow(role, action, "<AlarmTopicKey.Arn>"), action


def test_translated_template_has_no_dependency_cycle():
    resources = translate({"JournalBreakGlassRoleArn": BREAK_GLASS}).template["Resources"]
    edges = {}
    for logical_id, resource in resources.items():
        depends_on = resource.get("DependsOn", [])
        edges[logical_id] = (
            references(resource) | set([depends_on] if isinstance(depends_on, str) else depends_on)
        ) & (resources.keys())

    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join((*path, node))
        if node not in done:
            for target in edges[node]:
                visit(target, (*path, node))
            done.add(node)

    for logical_id in resources:
        visit(logical_id, ())


# --- fleets (issue 11): member accounts, the rotation queue -----------------------------------------------------


def test_the_role_may_assume_member_roles_only_in_the_listed_accounts():
    member_role = "arn:aws:iam::111111111111:role/rotator-target"
    parameters = {"TargetRoleName": "rotator-target"}
    assert not policies_allow(function_role_policies(translate(parameters)), "sts:AssumeRole", member_role)
    stack = translate(parameters | {"TargetAccountIds": "111111111111,222222222222"})
    (statement,) = [
        s
        for policy in function_role_policies(stack).values()
        for s in policy["Statement"]
        if statement_allows(s, "sts:AssumeRole", member_role)
    ]
    assert statement["Resource"] == "arn:aws:iam::*:role/rotator-target"
    assert statement["Condition"] == {"StringEquals": {"aws:ResourceAccount": ["111111111111", "222222222222"]}}


def test_the_rotation_queue_is_encrypted_dead_lettered_alarmed_and_reports_partial_batches():
    stack = translate({"QueueMaximumConcurrency": "7"})
    queues = stack.resources("AWS::SQS::Queue")
    queue, dlq = queues["RotationQueue"]["Properties"], queues["RotationDeadLetterQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] and dlq["SqsManagedSseEnabled"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == "<RotationDeadLetterQueue.Arn>"
    assert queue["VisibilityTimeout"] >= 6 * 900  # six times the function timeout
    (mapping,) = stack.resources("AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["Properties"]["ScalingConfig"] == {"MaximumConcurrency": "7"}
    alarm = stack.resource("RotationDeadLetterAlarm")["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "<RotationDeadLetterQueue.QueueName>"}]
    assert alarm["AlarmActions"] == ["<AlarmTopic>"]
    assert policies_allow(function_role_policies(stack), "sqs:SendMessage", "<RotationQueue.Arn>")
