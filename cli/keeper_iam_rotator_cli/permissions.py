"""`check`'s permission checks: what the function's role needs on this deployment's resources, simulated with
iam:SimulatePrincipalPolicy, and what the journal key's own policy grants (the template grants the journal key in
the key policy only, so simulating identity policies alone would report its kms actions as denied)."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from keeper_iam_rotator.aws import AwsClients
from keeper_iam_rotator.errors import AWS_ERRORS, aws_error_code

from .verdicts import Check, Verdict


class KeyGrant(StrEnum):
    """How a KMS key policy lets a principal use an action."""

    NAMED = "named"  # an Allow names the principal
    IAM = "iam"  # it leaves the decision to IAM policies (an Allow for the account root, or no readable policy)
    NONE = "none"


@dataclass(frozen=True)
class Resources:
    """The deployment's resources the role must reach (None: not known, not checked)."""

    user_arns: list[str]
    account: str
    table_arn: str | None
    key_arn: str | None
    secret_arn: str | None
    idempotency_arn: str | None = None


def permission_groups(res: Resources) -> list[tuple[list[str], list[str]]]:
    """(actions, resources) the function's role needs, on the resources this deployment uses."""
    users = res.user_arns or [f"arn:aws:iam::{res.account}:user/*"]
    groups = [
        (["iam:GetUser", "iam:GetLoginProfile", "iam:UpdateLoginProfile"], users),
        (
            [
                "iam:GetAccountPasswordPolicy",
                "iam:ListUsers",
                "iam:GenerateCredentialReport",
                "iam:GetCredentialReport",
            ],
            ["*"],
        ),
    ]
    if res.table_arn:
        groups.append((["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Scan"], [res.table_arn]))
    if res.idempotency_arn:
        actions = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
        groups.append((actions, [res.idempotency_arn]))
    if res.key_arn:
        groups.append((["kms:GenerateDataKey", "kms:Decrypt"], [res.key_arn]))
    if res.secret_arn:
        groups.append((["secretsmanager:GetSecretValue"], [res.secret_arn]))
    return groups


def principal_of(caller_arn: str) -> str | None:
    """The IAM entity SimulatePrincipalPolicy takes for a caller: an assumed role's role, a user as is."""
    parts = caller_arn.split(":")
    if len(parts) < 6:
        return None
    account, resource = parts[4], parts[5]
    if resource.startswith("assumed-role/"):
        return f"arn:aws:iam::{account}:role/{resource.split('/')[1]}"
    if resource.startswith(("user/", "role/")):
        return caller_arn
    return None


class PermissionCheck:
    """One simulation per group of actions; a key action the key policy decides is not simulated."""

    def __init__(self, clients: AwsClients, principal: str, res: Resources) -> None:
        self._clients = clients
        self._principal = principal
        self._res = res
        self._key_policy = self._read_key_policy(res.key_arn)
        self.denials: dict[str, list[str]] = {}
        self.granted_by: dict[str, str] = {}

    def run(self) -> list[Check]:
        for actions, resources in permission_groups(self._res):
            simulated = self._by_key_policy(actions) if resources == [self._res.key_arn] else actions
            if not simulated:
                continue
            try:
                answer = self._simulate(simulated, resources)
            except Exception as error:  # denied, or not implemented (moto raises NotImplementedError)
                detail = f"iam:SimulatePrincipalPolicy unavailable ({aws_error_code(error)}); not checked"
                return [Check("permissions", Verdict.SKIP, detail)]
            self._record(answer)
        return [self._verdict(action, denials) for action, denials in self.denials.items()]

    def _verdict(self, action: str, denials: list[str]) -> Check:
        if denials:
            return Check(action, Verdict.FAIL, f"{self._principal}: {'; '.join(denials)}")
        how = self.granted_by.get(action, "identity policies")
        return Check(action, Verdict.PASS, f"allowed for {self._principal} ({how})")

    def _by_key_policy(self, actions: list[str]) -> list[str]:
        """Record what the key policy decides itself; return the actions it leaves to IAM (to simulate)."""
        grants = {a: key_policy_grant(self._key_policy, self._principal, a, self._res.account) for a in actions}
        for action, grant in grants.items():
            if grant is not KeyGrant.IAM:
                self.granted_by[action] = "the key policy"
                refused = [] if grant is KeyGrant.NAMED else [f"not granted by the key policy of {self._res.key_arn}"]
                self.denials[action] = refused
        return [action for action, grant in grants.items() if grant is KeyGrant.IAM]

    def _record(self, answer: list[dict[str, Any]]) -> None:
        for result in answer:
            bucket = self.denials.setdefault(result["EvalActionName"], [])
            bucket += [
                f"{decision} on {resource}" for resource, decision in _decisions(result) if decision != "allowed"
            ]

    def _read_key_policy(self, key_arn: str | None) -> dict[str, Any] | None:
        """The journal key's policy; None when it cannot be read (then only identity policies are simulated)."""
        if not key_arn:
            return None
        try:
            policy = self._clients("kms").get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"]
            return dict(json.loads(policy))
        except (*AWS_ERRORS, ValueError):
            return None

    def _simulate(self, actions: list[str], resources: list[str]) -> list[dict[str, Any]]:
        pages = (
            self._clients("iam")
            .get_paginator("simulate_principal_policy")
            .paginate(PolicySourceArn=self._principal, ActionNames=actions, ResourceArns=resources)
        )
        return [result for page in pages for result in page.get("EvaluationResults", [])]


def key_policy_grant(policy: dict[str, Any] | None, principal: str, action: str, account: str) -> KeyGrant:
    """How a KMS key policy lets `principal` use `action`. Conditions and Deny statements are not evaluated."""
    if policy is None:
        return KeyGrant.IAM
    grant = KeyGrant.NONE
    for statement in _as_list(policy.get("Statement")):
        if statement.get("Effect") != "Allow" or not any(
            fnmatch.fnmatchcase(action.lower(), str(pattern).lower()) for pattern in _as_list(statement.get("Action"))
        ):
            continue
        principals = statement.get("Principal")
        named = _as_list(principals.get("AWS")) if isinstance(principals, dict) else _as_list(principals)
        if principal in named:
            return KeyGrant.NAMED
        if any(
            p in (account, f"arn:aws:iam::{account}:root", "*") or p.endswith(f":iam::{account}:root") for p in named
        ):
            grant = KeyGrant.IAM
    return grant


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _decisions(result: dict[str, Any]) -> list[tuple[str, str]]:
    specific = result.get("ResourceSpecificResults") or []
    if specific:
        return [(r.get("EvalResourceName", "*"), r.get("EvalResourceDecision", "implicitDeny")) for r in specific]
    return [(result.get("EvalResourceName", "*"), result.get("EvalDecision", "implicitDeny"))]
