"""Least privilege, the half moto cannot check. Every e2e test already runs the handler as template.yaml's function
role with moto authorising each request (conftest.run_handler_as_the_function_role), but moto matches policies
against Resource "*". Here each AWS call a run made is looked up, with the resource it touched, in the role's
resolved policies (and the journal key's grant to the role), and calls outside the function's resources are not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rotator_sandbox.stack import ACCOUNT, CONFIG_SECRET, JOURNAL_KEY, JOURNAL_MAC_KEY, REGION, load_event

from .conftest import assert_converged, sandbox_template
from template_tools import function_role_policies, policies_allow

pytestmark = pytest.mark.e2e
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}


def calls_made(sb, events: list[dict], stats: Path) -> set[tuple[str, str]]:
    """(action, table or "") for every successful AWS call the handler made while handling these events."""
    made = set()
    for event in events:
        run = sb.invoke(event, {"SANDBOX_STATS_FILE": str(stats)})
        assert run.exit_code == 0, run.stderr[-2000:]
        recorded = json.loads(stats.read_text())
        made |= {(call.removeprefix("aws:"), "") for call in recorded["calls"] if call.startswith("aws:")}
        for call in recorded["table_calls"]:
            action, table = call.removeprefix("aws:").split("@")
            made = (made - {(action, "")}) | {(action, table)}
    return made


def test_every_call_is_granted_on_the_resource_it_touches_and_no_further(sb, tmp_path):
    user = sb.add_user("e2e-alice")
    made = calls_made(sb, [load_event("scheduled.json"), {"records": [user.uid]}], tmp_path / "stats.json")
    assert_converged(sb, user)
    policies = function_role_policies(sandbox_template(sb))
    aws = sb.aws
    resource_of = {
        "iam": user.arn,
        "secretsmanager": aws("secretsmanager").describe_secret(SecretId=CONFIG_SECRET)["ARN"],
        "kms": aws("kms").describe_key(KeyId=JOURNAL_KEY)["KeyMetadata"]["Arn"],
    }

    granted = []
    for action, table in sorted(made - {(a, "") for a in NEEDS_NO_PERMISSION}):
        service = action.split(":")[0]
        resource = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}" if table else resource_of[service]
        if action == "iam:GetAccountPasswordPolicy":
            resource = "*"  # an account-level action: IAM has no resource to scope it to
        if action == "kms:GenerateMac":  # the journal's integrity MAC has its own (HMAC) key
            resource = aws("kms").describe_key(KeyId=JOURNAL_MAC_KEY)["KeyMetadata"]["Arn"]
        sids = policies_allow(policies, action, resource)
        assert sids, f"{action} on {resource} is not granted"
        granted.append(f"{action:32} {resource:80} {', '.join(sids)}")
    print("\n".join(["calls of a scheduled and a direct run, as the role:", *granted]))
    assert {"iam:UpdateLoginProfile", "kms:GenerateDataKey", "kms:GenerateMac", "dynamodb:Scan"} <= {
        action for action, _ in made
    }

    other = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    for action, resource in (
        ("iam:CreateLoginProfile", user.arn),
        ("iam:DeleteLoginProfile", user.arn),
        ("kms:Decrypt", other.format("kms", "key/another-key")),
        ("kms:GenerateMac", other.format("kms", "key/another-key")),
        ("secretsmanager:GetSecretValue", other.format("secretsmanager", "secret:another-secret")),
        ("dynamodb:PutItem", other.format("dynamodb", "table/another-table")),
        ("dynamodb:DeleteItem", other.format("dynamodb", f"table/{table_of(made, 'dynamodb:Scan')}")),
    ):
        assert not policies_allow(policies, action, resource), f"{action} on {resource} is granted"

    scoped = function_role_policies(sandbox_template(sb, {"RotatableUserPath": "/humans/"}))
    assert not policies_allow(scoped, "iam:UpdateLoginProfile", user.arn)  # alice lives at "/"
    assert policies_allow(scoped, "iam:UpdateLoginProfile", f"arn:aws:iam::{ACCOUNT}:user/humans/alice")


def table_of(made: set[tuple[str, str]], action: str) -> str:
    return next(table for made_action, table in made if made_action == action)
