"""The CLI's AWS access: its own clients (with the operator's credentials and region), the SAM stack's outputs, and
one-line descriptions of AWS failures that never quote request parameters."""

from __future__ import annotations

import os
from typing import Any, Final

import boto3

from keeper_iam_rotator.aws import AwsClients
from keeper_iam_rotator.errors import AWS_ERRORS, describe_aws_error

from .errors import CliError

REGION_VARIABLES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")


def region() -> str | None:
    """AWS_REGION, then AWS_DEFAULT_REGION, then the profile's region (boto3 reads only the last two)."""
    for name in REGION_VARIABLES:
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    found: str | None = boto3.session.Session().region_name
    return found


def clients() -> AwsClients:
    """A fresh client factory for one command: its clients are made on first use, in the operator's region."""
    return AwsClients(region_name=region())


def aws_error(action: str, error: Exception) -> str:
    """A one-line description of an AWS failure: the error code and AWS's message, never request parameters."""
    return f"{action} failed: {describe_aws_error(error)}"


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    """The SAM stack's outputs (CloudFormation DescribeStacks)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except AWS_ERRORS as error:
        raise CliError(aws_error(f"CloudFormation DescribeStacks {stack}", error)) from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stacks[0].get("Outputs") or [])} if stacks else {}
    if not outputs:
        raise CliError(f"stack {stack} has no outputs; is it the keeper-iam-rotator SAM stack?")
    return outputs
