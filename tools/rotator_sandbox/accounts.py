"""Several AWS accounts on one machine: moto maps sts:AssumeRole credentials to the role's account, so a member
account is whatever moto backend the target role's credentials land in.

moto lets anyone assume any role, even one that does not exist. `roles_must_exist()` makes its STS behave like AWS
for the rotator's purposes: AssumeRole is refused (AccessDenied) unless the role exists in its account and, when its
trust policy names an `sts:ExternalId`, the caller presents that id. The organization's admin role
(`OrganizationAccountAccessRole`, which AWS Organizations creates in every member account) is always assumable:
the sandbox uses it, as an administrator would, to set member accounts up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.iam.models import iam_backends
from moto.sts.exceptions import STSClientError
from moto.sts.models import STSBackend

from rotator_sandbox.cfn_yaml import load_template
from rotator_sandbox.paths import ROOT

ORGANIZATION_ROLE = "OrganizationAccountAccessRole"
TARGET_ROLE = "keeper-iam-rotator-target"


class _Refused(STSClientError):
    code = "AccessDenied"


@contextmanager
def roles_must_exist() -> Iterator[None]:
    original = STSBackend.assume_role

    def assume_role(self: STSBackend, **kwargs: Any) -> Any:  # moto's STS responder passes keywords
        if kwargs["role_arn"].rsplit("/", 1)[-1] != ORGANIZATION_ROLE:
            _check(kwargs["role_arn"], kwargs.get("external_id"))
        return original(self, **kwargs)

    STSBackend.assume_role = assume_role  # type: ignore[method-assign]
    try:
        yield
    finally:
        STSBackend.assume_role = original  # type: ignore[method-assign]


def _check(role_arn: str, external_id: str | None) -> None:
    denied = _Refused(f"User is not authorized to perform: sts:AssumeRole on resource: {role_arn}")
    account = role_arn.split(":")[4]
    try:
        role = iam_backends[account]["global"].get_role_by_arn(role_arn)
    except Exception:
        raise denied from None
    trust = json.loads(role.assume_role_policy_document)
    for statement in trust.get("Statement", []):
        wanted = statement.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId")
        if wanted is not None and wanted != external_id:
            raise denied


def member_session(aws_session: Callable[..., Any], account_id: str, endpoint_url: str | None = None) -> Any:
    """A boto3 session acting as the member account's administrator (through its organization role)."""
    sts = aws_session().client("sts", endpoint_url=endpoint_url)
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/{ORGANIZATION_ROLE}", RoleSessionName="sandbox-admin"
    )["Credentials"]
    return aws_session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def create_target_role(iam: Any, hub_role_arn: str, role_name: str = TARGET_ROLE, external_id: str = "") -> str:
    """What member-account.yaml creates: the role trusting only the hub function's role, with that template's IAM
    actions (as moto checks them: on any resource)."""
    document = trust_policy(hub_role_arn, external_id)
    arn = str(iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=document)["Role"]["Arn"])
    allowed = {"Effect": "Allow", "Action": member_role_actions(), "Resource": "*"}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [allowed]})
    iam.put_role_policy(RoleName=role_name, PolicyName="rotate-console-passwords", PolicyDocument=policy)
    return arn


def trust_policy(hub_role_arn: str, external_id: str = "") -> str:
    """The target role's trust policy: only the hub function's role, with the ExternalId when one is set."""
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": hub_role_arn}, "Action": "sts:AssumeRole"}
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def member_role_actions() -> list[str]:
    """Every action member-account.yaml grants its role."""
    template = load_template(ROOT / "member-account.yaml")
    actions: list[str] = []
    for policy in template["Resources"]["TargetRole"]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            granted = statement["Action"]
            actions += granted if isinstance(granted, list) else [granted]
    return actions


def iam_password(account_id: str, user_name: str) -> str | None:
    return iam_backends[account_id]["global"].get_user(user_name).password
