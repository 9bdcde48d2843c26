"""`invoke`: rotate through the deployed function, by direct Lambda invoke or the IAM-signed API (SigV4)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config

from keeper_iam_rotator.errors import AWS_ERRORS, BadRequestError
from keeper_iam_rotator.request import MAX_RECORDS, Trigger, parse_request

from .aws import aws_error, region, stack_outputs
from .errors import EXIT_FAILED, CliError

# A rotation may take the function's whole timeout; a retried invoke could rotate twice.
INVOKE_CONFIG = Config(read_timeout=900, connect_timeout=10, retries={"total_max_attempts": 1})
API_TIMEOUT = (10, 60)  # API Gateway answers within 29 s
API_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "lambda" or "api"
    target: str  # function name/ARN, or the API URL


def choose_endpoint(stack: str | None, function_name: str | None, api_url: str | None, via: str) -> Endpoint:
    given = [
        flag for flag, value in (("--stack", stack), ("--function", function_name), ("--api-url", api_url)) if value
    ]
    if len(given) != 1:
        raise CliError("give exactly one of --stack, --function or --api-url")
    if function_name:
        return Endpoint("lambda", function_name)
    if api_url:
        if not api_url.startswith(("https://", "http://")):
            raise CliError(
                "--api-url must be an http(s) URL like https://ID.execute-api.REGION.amazonaws.com/Prod/rotations"
            )
        return Endpoint("api", api_url)
    outputs = stack_outputs(boto3.client("cloudformation", region_name=region()), str(stack))
    key = "ApiUrl" if via == "api" else "FunctionName"
    if not outputs.get(key):
        raise CliError(f"stack {stack} has no {key} output")
    return Endpoint(via, outputs[key])


def request_body(
    uids: tuple[str, ...], dry_run: bool, idempotency_key: str | None, bind: bool = False
) -> dict[str, Any]:
    """The function's request, refused here (in terms of this command's flags) when the function would refuse it.
    `bind` asks the function to bind records that have only a login (the API refuses it unless the caller is on
    BindCallerArns)."""
    records = list(dict.fromkeys(uids))
    if len(records) > MAX_RECORDS:
        raise CliError(f"--record is given for {len(records)} records; the function takes at most {MAX_RECORDS}")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 128:
        raise CliError(f"--idempotency-key must be 1 to 128 characters, not {len(idempotency_key)}")
    body: dict[str, Any] = {"records": records, "dryRun": dry_run}
    if idempotency_key is not None:
        body["idempotencyKey"] = idempotency_key
    if bind:
        body["bind"] = True
    try:
        parse_request(body, Trigger.INVOKE)  # the function's own validation, as a backstop
    except BadRequestError as error:
        raise CliError(str(error)) from None
    return body


def call_deployed(
    endpoint: Endpoint, uids: tuple[str, ...], dry_run: bool, idempotency_key: str | None = None, bind: bool = False
) -> dict[str, Any]:
    """The function's answer: `{"results", "summary", ...}`. With an idempotency key a retry of the same request
    returns the first run's answer (for an hour) instead of rotating again."""
    body = request_body(uids, dry_run, idempotency_key, bind)
    document = _invoke_lambda(endpoint.target, body) if endpoint.kind == "lambda" else _post_api(endpoint.target, body)
    return _answer(document)


def _invoke_lambda(function: str, body: dict[str, Any]) -> Any:
    try:
        client = boto3.client("lambda", config=INVOKE_CONFIG, region_name=region())
        answer = client.invoke(
            FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(body).encode()
        )
        payload = answer["Payload"].read()
    except AWS_ERRORS as error:
        raise CliError(aws_error(f"Lambda Invoke {function}", error), EXIT_FAILED) from None
    try:
        document = json.loads(payload or b"null")
    except ValueError:
        document = None
    if answer.get("FunctionError"):
        kind = document.get("errorType", "error") if isinstance(document, dict) else "error"
        raise CliError(f"the function failed ({answer['FunctionError']}: {kind}); see its log", EXIT_FAILED)
    return document


def _post_api(url: str, body: dict[str, Any]) -> Any:
    session = boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise CliError("no AWS credentials to sign the API request with")
    match = API_HOST.search(url)
    api_region = match.group(1) if match else region()
    data = json.dumps(body)
    request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", api_region).add_auth(request)
    try:
        response = requests.post(url, data=data, headers=dict(request.headers), timeout=API_TIMEOUT)
    except requests.RequestException as error:
        raise CliError(f"POST {url} failed: {type(error).__name__}", EXIT_FAILED) from None
    try:
        document = response.json()
    except ValueError:
        document = None
    if response.status_code != 200:
        raise CliError(f"POST {url} answered HTTP {response.status_code}: {_error_text(document)}", EXIT_FAILED)
    return document


def _error_text(document: Any) -> str:
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            return f"{error.get('code', 'error')}: {str(error.get('message', ''))[:300]}"
        if "message" in document or "Message" in document:  # API Gateway's own refusals (403 Missing/Invalid ...)
            return str(document.get("message") or document.get("Message"))[:300]
    return "no details"


def _answer(document: Any) -> dict[str, Any]:
    if isinstance(document, dict) and isinstance(document.get("results"), list):
        return document
    raise CliError(f"the function answered without results: {_error_text(document)}", EXIT_FAILED)
