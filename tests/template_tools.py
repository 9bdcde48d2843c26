"""template.yaml as CloudFormation will see it: translated offline by the SAM translator (the library SAM CLI and
cfn-lint use), with the intrinsics the tests need resolved for given parameter values.

Tests read the stack's real resources from here (rules, alarms, key policies, the function's role), never from a
copy, so a change to template.yaml is what the tests check.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from rotator_sandbox.paths import ROOT
from rotator_sandbox.stack import ACCOUNT, CONFIG_SECRET, REGION

TEMPLATE = ROOT / "template.yaml"
PSEUDO_PARAMETERS = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
    "AWS::StackName": "keeper-iam-rotator",
    "AWS::URLSuffix": "amazonaws.com",
}
REQUIRED_PARAMETERS = {"KsmConfigSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{CONFIG_SECRET}-AbCdEf"}
NO_VALUE = object()  # what AWS::NoValue resolves to; containers drop it
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


class _NoManagedPolicyNames:
    """The template names managed policies by ARN only, so the translator never needs IAM to look one up."""

    def load(self) -> dict[str, str]:
        return {}


@cache
def _template_text() -> str:
    return TEMPLATE.read_text()


def translate(
    parameters: Mapping[str, str] | None = None, physical: Mapping[str, str] | None = None
) -> TranslatedStack:
    """The translated template for these parameter values (defaults for the rest).

    `physical` gives the values `!Ref <resource>` and `!GetAtt <resource>.<attribute>` (key "Id.Attribute") resolve
    to, e.g. a sandbox table's real ARN; anything not given resolves to a readable placeholder.
    """
    template = yaml_parse(_template_text())
    template["Resources"]["RotatorFunction"]["Properties"]["CodeUri"] = (
        "s3://bucket/rotator.zip"  # what `sam build` does
    )
    values = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    values.update(REQUIRED_PARAMETERS)
    values.update(parameters or {})
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    translated = transform(template, {**values, **PSEUDO_PARAMETERS}, _NoManagedPolicyNames())
    return TranslatedStack(translated, {**values, **PSEUDO_PARAMETERS}, dict(physical or {}))


@dataclass
class TranslatedStack:
    template: dict[str, Any]
    parameters: dict[str, str]
    physical: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.conditions: dict[str, bool] = {}
        for name, expression in self.template.get("Conditions", {}).items():
            self.conditions[name] = bool(self.resolve(expression))

    # -- resources -----------------------------------------------------------------------------------------------
    def resource(self, logical_id: str) -> dict[str, Any]:
        """One resource with every intrinsic resolved; KeyError when it does not exist for these parameters."""
        resource = self.template["Resources"][logical_id]
        if not self.conditions.get(resource.get("Condition", ""), True):
            raise KeyError(logical_id)
        return self.resolve(resource)

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Every resource of a type that exists for these parameters, resolved, by logical id."""
        found = {}
        for logical_id, resource in self.template["Resources"].items():
            if resource["Type"] == resource_type and self.conditions.get(resource.get("Condition", ""), True):
                found[logical_id] = self.resolve(resource)
        return found

    # -- intrinsics ----------------------------------------------------------------------------------------------
    def resolve(self, node: Any) -> Any:
        """Evaluate Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Split, Fn::Select, Fn::If, Fn::Equals, Fn::Not, Fn::And,
        Fn::Or, Condition."""
        if isinstance(node, list):
            return [value for value in (self.resolve(item) for item in node) if value is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key in _INTRINSICS:
                return _INTRINSICS[key](self, argument)
        return {k: value for k, v in node.items() if (value := self.resolve(v)) is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        return self.physical.get(name, f"<{name}>")

    def get_att(self, logical_id: str, attribute: str) -> str:
        return self.physical.get(f"{logical_id}.{attribute}", f"<{logical_id}.{attribute}>")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        variables = {name: self.resolve(value) for name, value in variables.items()}

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return _SUB_VARIABLE.sub(value, text).replace("${!", "${")

    def _if(self, argument: list[Any]) -> Any:
        condition, when_true, when_false = argument
        return self.resolve(when_true if self.conditions[condition] else when_false)


def _get_att(stack: TranslatedStack, argument: Any) -> str:
    logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
    return stack.get_att(logical_id, attribute)


def _cfn_string(value: Any) -> Any:
    """CloudFormation compares parameter values as strings: `!Equals [!Ref ReservedConcurrency, 0]` is true for the
    parameter value "0"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


_INTRINSICS: dict[str, Any] = {
    "Ref": TranslatedStack.ref,
    "Fn::GetAtt": _get_att,
    "Fn::Sub": TranslatedStack._sub,
    "Fn::Join": lambda stack, arg: str(arg[0]).join(str(v) for v in stack.resolve(arg[1])),
    "Fn::Split": lambda stack, arg: str(stack.resolve(arg[1])).split(str(arg[0])),
    "Fn::Select": lambda stack, arg: stack.resolve(arg[1])[int(stack.resolve(arg[0]))],
    "Fn::If": TranslatedStack._if,
    "Fn::Equals": lambda stack, arg: _cfn_string(stack.resolve(arg[0])) == _cfn_string(stack.resolve(arg[1])),
    "Fn::Not": lambda stack, arg: not stack.resolve(arg[0]),
    "Fn::And": lambda stack, arg: all(stack.resolve(arg)),
    "Fn::Or": lambda stack, arg: any(stack.resolve(arg)),
    "Condition": lambda stack, name: stack.conditions[name],
}


def references(node: Any) -> set[str]:
    """Logical ids a (translated, unresolved) node refers to through Ref, Fn::GetAtt and Fn::Sub."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add((value.split(".", 1) if isinstance(value, str) else value)[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {name.split(".", 1)[0] for name in _SUB_VARIABLE.findall(text)}
                found |= references(value[1:] if isinstance(value, list) else [])
            else:
                found |= references(value)
    return found


FUNCTION_ROLE = "RotatorFunctionRole"


def function_role_policies(stack: TranslatedStack) -> dict[str, dict[str, Any]]:
    """Everything the function's role may do, as identity policies: the role's inline policies, plus each key policy's
    statements that name the role, re-homed on the role with the key as Resource (moto does not evaluate key
    policies; in AWS the key policy alone grants them)."""
    policies = {p["PolicyName"]: p["PolicyDocument"] for p in stack.resource(FUNCTION_ROLE)["Properties"]["Policies"]}
    role_arn = stack.get_att(FUNCTION_ROLE, "Arn")
    for key_id, key in stack.resources("AWS::KMS::Key").items():
        granted = [
            {**{k: v for k, v in statement.items() if k != "Principal"}, "Resource": stack.get_att(key_id, "Arn")}
            for statement in key["Properties"]["KeyPolicy"]["Statement"]
            if statement["Principal"].get("AWS") == role_arn
        ]
        if granted:
            policies[f"{key_id}KeyPolicy"] = {"Version": "2012-10-17", "Statement": granted}
    return policies


def statement_allows(statement: dict[str, Any], action: str, resource: str = "*") -> bool:
    """An Allow statement covers this action (case-insensitive, wildcards) on this resource; conditions not checked."""
    actions, resources = (
        item if isinstance(item, list) else [item] for item in (statement["Action"], statement.get("Resource", "*"))
    )
    return (
        statement["Effect"] == "Allow"
        and any(fnmatchcase(action.lower(), pattern.lower()) for pattern in actions)
        and any(fnmatchcase(resource, pattern) for pattern in resources)
    )


def policies_allow(policies: dict[str, dict[str, Any]], action: str, resource: str) -> list[str]:
    """The Sids (or policy names) of the statements that allow the action on the resource."""
    return [
        statement.get("Sid", name)
        for name, document in policies.items()
        for statement in document["Statement"]
        if statement_allows(statement, action, resource)
    ]
