"""The CLI's AWS access: its own clients (with the operator's credentials and region), the SAM stack's outputs, and
one-line descriptions of AWS failures that never quote request parameters."""

from __future__ import annotations

import os
import re
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from keeper_iam_rotator.aws import AwsClients
from keeper_iam_rotator.errors import AWS_ERRORS, describe_aws_error

from .errors import CliError, botocore_advice

REGION_VARIABLES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")
REGION_NAME: Final = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")  # us-east-1, us-gov-west-1, eu-isoe-west-1
NO_REGION: Final = (
    "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or region in your AWS profile), e.g. export "
    "AWS_REGION=us-east-1"
)


def region() -> str:
    """AWS_REGION, then AWS_DEFAULT_REGION, then the profile's region (boto3 itself reads only the last two).
    CliError (exit 2) when none is set, or the one set is not a region name: AWS would fail later, less clearly."""
    for name in REGION_VARIABLES:
        if value := os.environ.get(name, "").strip():
            return _region_name(value, name)
    found = boto3.session.Session().region_name
    if not found:
        raise CliError(NO_REGION)
    return _region_name(found, "the AWS profile's region")


def _region_name(value: str, source: str) -> str:
    if not REGION_NAME.fullmatch(value):
        raise CliError(f"{source} is {value[:40]!r}, which is not an AWS region name (like us-east-1): correct it")
    return value


def clients() -> AwsClients:
    """A fresh client factory for one command: its clients are made on first use, in the operator's region."""
    return AwsClients(region_name=region())


def aws_error(action: str, error: Exception) -> str:
    """A one-line description of an AWS failure: the error code and AWS's message, never request parameters, and
    what to do next when the failure is the CLI's own setup (endpoint, region, credentials)."""
    advice = None if isinstance(error, ClientError) else botocore_advice(error)
    return f"{action} failed: {describe_aws_error(error)}" + (f"; {advice}" if advice else "")


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
