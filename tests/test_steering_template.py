"""Who can steer the rotator, as CloudFormation will create it (issue 16): the parts moto cannot evaluate — resource
policies (the config secret, the rotation queue), IAM conditions (the tag that opts a user in), what the function's
environment may hold — asserted on the template translated by the SAM translator (template_tools.py)."""

from __future__ import annotations

import pytest
from keeper_secrets_manager_core.keeper_globals import keeper_servers
from samtranslator.yaml_helper import yaml_parse

from keeper_iam_rotator import queue_worker
from rotator_sandbox.paths import ROOT

from template_tools import (
    PSEUDO_PARAMETERS,
    REQUIRED_PARAMETERS,
    TranslatedStack,
    function_role_policies,
    policies_allow,
    statement_allows,
    translate,
)

ROLE_ARN = "<RotatorFunctionRole.Arn>"
ADMIN_ROLE = "arn:aws:iam::123456789012:role/ksm-config-admins"
SECRET = REQUIRED_PARAMETERS["KsmConfigSecretArn"]
TAG = "aws:ResourceTag/keeper-iam-rotator"
CONFIG_WRITES = (
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecret",
    "secretsmanager:UpdateSecretVersionStage",
)
PARAMETER_SETS = [
    {},
    {"KsmConfigAdminRoleArn": ADMIN_ROLE, "KeeperRegion": "EU", "TargetExternalId": "ext-id-0123456789"},
    {"TargetAccountIds": "111111111111", "RequiredUserTagValue": "", "BindCallerArns": "arn:aws:iam::*:role/x"},
]


def member_stack(parameters: dict[str, str] | None = None) -> TranslatedStack:
    """member-account.yaml (plain CloudFormation) with its intrinsics resolvable."""
    template = yaml_parse((ROOT / "member-account.yaml").read_text())
    values = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    values |= {"HubRoleArn": "arn:aws:iam::123456789012:role/hub"} | (parameters or {})
    return TranslatedStack(template, {**values, **PSEUDO_PARAMETERS})


def denied_to_all_but(policy: dict, action: str) -> list[list[str]]:
    """For each Deny statement covering `action` on every principal: the principal ARNs it exempts."""
    exempt = []
    for statement in policy["Statement"]:
        allows = statement_allows({**statement, "Effect": "Allow", "Resource": "*"}, action)
        if statement["Effect"] == "Deny" and statement["Principal"] in ("*", {"AWS": "*"}) and allows:
            names = statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
            exempt.append(names if isinstance(names, list) else [names])
    return exempt


# --- the KSM config secret: who may write it, who may read it, and which Keeper it may name ------------------------


def config_secret_policy(stack: TranslatedStack) -> dict:
    (policy,) = stack.resources("AWS::SecretsManager::ResourcePolicy").values()
    assert policy["Properties"]["SecretId"] == SECRET
    assert policy["Properties"]["BlockPublicPolicy"] is True
    return policy["Properties"]["ResourcePolicy"]


def test_only_the_admin_role_writes_the_config_secret_and_only_the_function_reads_it():
    policy = config_secret_policy(translate({"KsmConfigAdminRoleArn": ADMIN_ROLE}))
    for action in CONFIG_WRITES:
        assert denied_to_all_but(policy, action) == [[ADMIN_ROLE]], action
    assert denied_to_all_but(policy, "secretsmanager:GetSecretValue") == [[ROLE_ARN]]


def test_without_an_admin_role_the_stack_still_deploys_and_only_reads_are_restricted():
    stack = translate()
    assert stack.parameters["KsmConfigAdminRoleArn"] == ""
    policy = config_secret_policy(stack)
    assert denied_to_all_but(policy, "secretsmanager:PutSecretValue") == []  # `check` warns about this
    assert denied_to_all_but(policy, "secretsmanager:GetSecretValue") == [[ROLE_ARN]]


@pytest.mark.parametrize("parameters", PARAMETER_SETS)
def test_the_template_can_never_point_the_function_at_a_sandbox_keeper(parameters):
    stack = translate(parameters)
    environment = stack.resource("RotatorFunction")["Properties"]["Environment"]["Variables"]
    assert "SANDBOX_KEEPER_HOST" not in environment and "AWS_SAM_LOCAL" not in environment
    assert environment["KEEPER_REGION"] == parameters.get("KeeperRegion", "US")


def test_keeper_region_offers_exactly_the_sdks_regions():
    template = yaml_parse((ROOT / "template.yaml").read_text())
    region = template["Parameters"]["KeeperRegion"]
    assert (region["Default"], sorted(region["AllowedValues"])) == ("US", sorted(keeper_servers))


# --- whoever can edit a Keeper folder: IAM must opt each user in ---------------------------------------------------


def rotate_statement(policies: dict) -> dict:
    (statement,) = [
        s
        for p in policies.values()
        for s in p["Statement"]
        if statement_allows(s, "iam:UpdateLoginProfile", "arn:aws:iam::123456789012:user/alice")
    ]
    return statement


def test_by_default_a_user_is_in_scope_only_when_tagged_in_the_hub_and_every_member_account():
    hub = rotate_statement(function_role_policies(translate()))
    member_role = member_stack().resource("TargetRole")["Properties"]
    member = rotate_statement({p["PolicyName"]: p["PolicyDocument"] for p in member_role["Policies"]})
    for statement in (hub, member):
        assert statement["Condition"] == {"StringEquals": {TAG: "managed"}}


def test_the_first_call_about_a_listed_user_is_checked_against_the_tag():
    """Bindings may be verified with ListUsers (granted on "*", it names users without their tags; issue 18): then
    step 2's GetLoginProfile is the first call about the user, so every grant of it, as of UpdateLoginProfile,
    carries the tag condition, in the hub and in every member account."""
    member_role = member_stack().resource("TargetRole")["Properties"]
    for policies in (
        function_role_policies(translate()),
        {p["PolicyName"]: p["PolicyDocument"] for p in member_role["Policies"]},
    ):
        for action in ("iam:GetUser", "iam:GetLoginProfile", "iam:UpdateLoginProfile"):
            grants = [
                s
                for p in policies.values()
                for s in p["Statement"]
                if statement_allows(s, action, "arn:aws:iam::123456789012:user/alice")
            ]
            assert [g.get("Condition") for g in grants] == [{"StringEquals": {TAG: "managed"}}], action
        (listing,) = [s for p in policies.values() for s in p["Statement"] if statement_allows(s, "iam:ListUsers", "*")]
        assert listing["Action"] in ("iam:ListUsers", ["iam:ListUsers"])


def test_an_empty_tag_value_remains_possible_and_drops_the_condition():
    assert "Condition" not in rotate_statement(function_role_policies(translate({"RequiredUserTagValue": ""})))
    member_role = member_stack({"RequiredUserTagValue": ""}).resource("TargetRole")["Properties"]
    assert "Condition" not in rotate_statement({p["PolicyName"]: p["PolicyDocument"] for p in member_role["Policies"]})


# --- whoever can send to the rotation queue ------------------------------------------------------------------------


def test_only_the_function_may_send_to_the_rotation_queue():
    stack = translate()
    (queue_policy,) = [
        p["Properties"]
        for p in stack.resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == ["<RotationQueue>"]
    ]
    assert denied_to_all_but(queue_policy["PolicyDocument"], "sqs:SendMessage") == [[ROLE_ARN]]


def test_the_roles_sqs_permissions_name_the_rotation_queue_not_every_queue():
    stack = translate()
    role = stack.resource("RotatorFunctionRole")["Properties"]
    assert not any("SQS" in arn for arn in role.get("ManagedPolicyArns", []))
    assert stack.resource("RotationQueueEventSource")["Properties"]["BatchSize"] == queue_worker.MAX_BATCH
    policies = function_role_policies(stack)
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"):
        assert policies_allow(policies, action, "<RotationQueue.Arn>"), action
        assert not policies_allow(policies, action, "arn:aws:sqs:us-east-1:123456789012:another-queue"), action


# --- whoever can write the journal table -----------------------------------------------------------------------------


def test_only_the_function_can_use_the_journal_mac_key():
    stack = translate()
    key = stack.resource("JournalMacKey")
    assert (key["Properties"]["KeySpec"], key["DeletionPolicy"]) == ("HMAC_256", "Retain")
    for action in ("kms:GenerateMac", "kms:VerifyMac", "kms:CreateGrant"):
        allowed = [
            s["Principal"]["AWS"]
            for s in key["Properties"]["KeyPolicy"]["Statement"]
            if statement_allows({**s, "Resource": "*"}, action)
        ]
        assert allowed == ([ROLE_ARN] if action == "kms:GenerateMac" else []), action
    environment = stack.resource("RotatorFunction")["Properties"]["Environment"]["Variables"]
    assert environment["JOURNAL_MAC_KEY_ID"] == "<JournalMacKey.Arn>"


# --- member-account credentials and the ExternalId -----------------------------------------------------------------


def test_the_external_id_is_kept_in_a_secret_not_in_the_functions_environment():
    external_id = "ext-id-0123456789"
    stack = translate({"TargetExternalId": external_id, "TargetAccountIds": "111111111111"})
    environment = stack.resource("RotatorFunction")["Properties"]["Environment"]["Variables"]
    assert external_id not in environment.values()
    (secret_id,) = [name for name, s in stack.resources("AWS::SecretsManager::Secret").items()]
    assert stack.resource(secret_id)["Properties"]["SecretString"] == external_id
    assert environment["TARGET_EXTERNAL_ID_SECRET"] == f"<{secret_id}>"
    assert policies_allow(function_role_policies(stack), "secretsmanager:GetSecretValue", f"<{secret_id}>")
    assert not translate().resources("AWS::SecretsManager::Secret")  # no ExternalId, no secret


# --- the alarms that say someone tried -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    [
        "TamperingDetected",
        "BindingChanged",
        "StaleOpenEntries",
    ],
)
def test_each_steering_signal_has_an_alarm_on_the_topic(metric):
    alarms = [
        a["Properties"]
        for a in translate().resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == metric
    ]
    assert len(alarms) == 1
    assert alarms[0]["AlarmActions"] == ["<AlarmTopic>"]
    assert alarms[0]["Dimensions"] == [{"Name": "service", "Value": "keeper-iam-rotator"}]


def test_bind_caller_arns_reach_the_function():
    callers = "arn:aws:iam::123456789012:role/iam-admins,arn:aws:sts::123456789012:assumed-role/iam-admins/*"
    environment = translate({"BindCallerArns": callers}).resource("RotatorFunction")["Properties"]["Environment"]
    assert environment["Variables"]["BIND_CALLER_ARNS"] == callers
