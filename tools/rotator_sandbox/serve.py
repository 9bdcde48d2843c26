"""`python -m rotator_sandbox serve`: the sandbox as a stand-in for a deployed stack, until Ctrl-C.

Starts moto server (AWS) and the KSM emulator (Keeper) on 127.0.0.1, creates what `template.yaml` would (tables,
key, config secret, the function's role, a CloudFormation stack `keeper-iam-rotator` with the template's outputs),
seeds IAM users and their pamUser records, and serves the function's two front doors on a third loopback port:
Lambda `Invoke` (`AWS_ENDPOINT_URL_LAMBDA`) and `POST /Prod/rotations` (the IAM-authenticated API). Both run the real
handler in a subprocess, as `demo` does. Then it prints `export` lines that point the operator CLI (and boto3 or the
AWS CLI) at all of it, so every transcript in docs/cli.md can be replayed by hand.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from rotator_sandbox.stack import (
    ACCOUNT,
    CONFIG_SECRET,
    DEFAULT_LIMITS,
    IDEMPOTENCY_TABLE,
    JOURNAL_KEY,
    JOURNAL_MAC_KEY,
    JOURNAL_TABLE,
    PACING_TABLE,
    REGION,
    SCOPE_TAG,
    KeeperLimits,
    Sandbox,
    load_event,
)

STACK_NAME = "keeper-iam-rotator"  # samconfig.toml's stack name, so `--stack keeper-iam-rotator` works as documented
FUNCTION_NAME = "keeper-iam-rotator-RotatorFunction-SANDBOX"
API_PATH = "/Prod/rotations"
LAMBDA_INVOKE_PATH = re.compile(r"/2015-03-31/functions/([^/]+)/invocations")
CALLER_ARN = f"arn:aws:sts::{ACCOUNT}:user/moto"  # who moto says the fake credentials are
FOLDER_UID = "Fq2UWJh7n9eXy8Pp0ZbJ1g"
# (IAM user, record uid, has a console password, shared folder): fixed, so the uids in docs/cli.md are these.
SEED = (
    ("alice", "g91gzvvR9uJzY2jRTN3JvA", True, FOLDER_UID),
    ("bob", "tjiW-Y4CsYwM3FfbRujZvA", True, FOLDER_UID),
    ("svc", "OTQsNHVGZGnDG5XkecVWHw", False, None),
)
# With --event-records: the record the shipped events name (events/direct-invoke.json, dry-run.json, the API event's
# body, the SQS event's message), so `sam local invoke -e events/...` rotates something against this sandbox. Not
# seeded by default: docs/cli.md's transcripts show the three above.
EVENT_SEED = ("carol", load_event("direct-invoke.json")["records"][0], True, None)
ONE_TIME_ACCESS_COMMAND = (
    'curl -s --cacert "$REQUESTS_CA_BUNDLE" -X POST "https://$KSM_EMULATOR_HOST/_emulator/tokens"'
    " | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"token\"])' > token"
)
FORBIDDEN = {"message": "Missing Authentication Token"}  # API Gateway's answer to unsigned calls and unknown routes
RANDOM_SEED = 17  # moto's ids and ARN suffixes are the same every run, so the docs' transcripts can be checked


def create_stack(sb: Sandbox, front_door: str) -> dict[str, str]:
    """A CloudFormation stack with the function's role and template.yaml's outputs naming the sandbox's resources;
    returns the outputs."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    outputs: dict[str, Any] = {
        "FunctionName": FUNCTION_NAME,
        "FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION_NAME}",
        "ApiUrl": f"{front_door}{API_PATH}",
        "JournalTableName": JOURNAL_TABLE,
        "JournalKeyArn": sb.aws("kms").describe_key(KeyId=JOURNAL_KEY)["KeyMetadata"]["Arn"],
        "JournalMacKeyArn": sb.aws("kms").describe_key(KeyId=JOURNAL_MAC_KEY)["KeyMetadata"]["Arn"],
        "IdempotencyTableName": IDEMPOTENCY_TABLE,
        "RotatorRoleArn": {"Fn::GetAtt": ["RotatorFunctionRole", "Arn"]},
        "ConfigSecretArn": sb.aws("secretsmanager").describe_secret(SecretId=CONFIG_SECRET)["ARN"],
        "KeeperRegion": "US",  # the emulator stands in for it (SANDBOX_KEEPER_HOST in the exports)
        "RequiredUserTag": f"{SCOPE_TAG['Key']}={SCOPE_TAG['Value']}",
    }
    template = {
        "Resources": {
            "RotatorFunctionRole": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": trust}}
        },
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cloudformation = sb.aws("cloudformation")
    cloudformation.create_stack(StackName=STACK_NAME, TemplateBody=json.dumps(template))
    stack = cloudformation.describe_stacks(StackName=STACK_NAME)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


class FrontDoor(BaseHTTPRequestHandler):
    """Lambda Invoke and API Gateway for the function, each running the real handler in a subprocess."""

    server: _FrontDoorServer

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = LAMBDA_INVOKE_PATH.fullmatch(path)
        if match:
            self._invoke(unquote(match.group(1)), body)
        elif path == API_PATH and self._signed():
            self._api(body)
        else:
            self._send(403, FORBIDDEN)

    def _invoke(self, function: str, body: bytes) -> None:
        if function not in (FUNCTION_NAME, self.server.outputs["FunctionArn"]):
            message = f"Function not found: {function[:200]}"
            self._send(404, {"Type": "User", "message": message}, {"x-amzn-ErrorType": "ResourceNotFoundException"})
            return
        try:
            event = json.loads(body or b"null")
        except ValueError:
            self._send(400, {"Type": "User", "message": "Could not parse request body into json"})
            return
        run = self.server.sandbox.invoke(event)
        if run.exit_code != 0 or run.result is None:
            error = {"errorType": "Runtime.ExitError", "errorMessage": f"the handler process exited {run.exit_code}"}
            self._send(200, error, {"X-Amz-Function-Error": "Unhandled"})
            return
        self._send(200, run.result, {"X-Amz-Executed-Version": "$LATEST"})

    def _signed(self) -> bool:
        """A SigV4 Authorization for execute-api (the signature itself is not verified: the credentials are fake)."""
        auth = self.headers.get("Authorization", "")
        return auth.startswith("AWS4-HMAC-SHA256 Credential=") and "/execute-api/aws4_request" in auth

    def _api(self, body: bytes) -> None:
        event = load_event("api-post-rotations.json")
        access_key = self.headers["Authorization"].split("Credential=", 1)[1].split("/", 1)[0]
        event.update(
            body=body.decode("utf-8", "replace"),
            isBase64Encoded=False,
            headers=dict(self.headers),
            multiValueHeaders={name: [value] for name, value in self.headers.items()},
        )
        event["requestContext"]["identity"].update(
            accountId=ACCOUNT, accessKey=access_key, caller=access_key, user=access_key, userArn=CALLER_ARN
        )
        run = self.server.sandbox.invoke(event)
        if run.exit_code != 0 or run.result is None:
            self._send(502, {"message": "Internal server error"})
            return
        self._send(int(run.result.get("statusCode", 502)), json.loads(run.result.get("body") or "null"))

    def _send(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FrontDoorServer(ThreadingHTTPServer):
    sandbox: Sandbox
    outputs: dict[str, str]


@contextmanager
def front_door(sb: Sandbox) -> Iterator[_FrontDoorServer]:
    server = _FrontDoorServer(("127.0.0.1", 0), FrontDoor)
    server.sandbox = sb
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def exports(sb: Sandbox, door_url: str, config_file: Path) -> list[str]:
    """Shell lines that point the CLI, boto3 and the AWS CLI at the sandbox and nowhere else."""
    values = {
        "AWS_ENDPOINT_URL": sb.aws_url,
        "AWS_ENDPOINT_URL_LAMBDA": door_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "REQUESTS_CA_BUNDLE": sb.keeper.ca_file,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "KSM_CONFIG_SECRET_ID": ",".join(sb.config_secrets),
        "JOURNAL_TABLE_NAME": JOURNAL_TABLE,
        "PACING_TABLE_NAME": PACING_TABLE,
        "JOURNAL_KEY_ID": JOURNAL_KEY,
        "JOURNAL_MAC_KEY_ID": JOURNAL_MAC_KEY,
        "IDEMPOTENCY_TABLE_NAME": IDEMPOTENCY_TABLE,
        "ROTATOR_STACK": STACK_NAME,
        "ROTATOR_API_URL": f"{door_url}{API_PATH}",
        "ROTATOR_KSM_CONFIG_FILE": str(config_file),
        "KSM_EMULATOR_HOST": sb.keeper.host,
        "SANDBOX_KEEPER_HOST": sb.keeper.host,  # lets the CLI's rotate and check use the emulator's KSM config
        "KSM_EMULATOR_PUBLIC_KEY": sb.keeper.server_public_key,
    }
    return ["unset AWS_PROFILE"] + [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def notes(sb: Sandbox) -> list[str]:
    lines = [
        f"# AWS (moto) {sb.aws_url}, Keeper (KSM emulator) {sb.keeper.url}, stack {STACK_NAME}",
        f"# Keeper {sb.limits}, {sb.devices} client device(s); throttled answers: GET https://$KSM_EMULATOR_HOST/_emulator/throttle",
    ]
    for user in sb.users:
        console = "console password" if sb.iam_password(user.name) is not None else "NO console password"
        lines.append(f"#   IAM user {user.name:<6} {console:<19} pamUser record {user.uid}")
    lines += [
        f"#   shared folder {FOLDER_UID} holds alice and bob; svc's record is shared directly",
        "# a new one-time token for `keeper-iam-rotator init ... --token-file token` (one per call):",
        f"#   {ONE_TIME_ACCESS_COMMAND}",
        "# ready: run the lines above in another shell; Ctrl-C here stops everything",
    ]
    return lines


def seed(sb: Sandbox, event_records: bool = False) -> None:
    """alice, bob and svc with their records; with `event_records` also carol, whose record the shipped events name."""
    for name, uid, console, folder in (*SEED, *([EVENT_SEED] if event_records else [])):
        sb.add_user(name, uid=uid, console=console, folder=folder)


def run_serve(
    env_file: Path | None = None, limits: KeeperLimits = DEFAULT_LIMITS, event_records: bool = False, devices: int = 1
) -> int:
    with (
        Sandbox(users=0, limits=limits, random_seed=RANDOM_SEED, devices=devices) as sb,
        front_door(sb) as door,
        tempfile.TemporaryDirectory(prefix="rotator-sandbox-") as tmp,
    ):
        seed(sb, event_records)
        door_url = f"http://127.0.0.1:{door.server_address[1]}"
        door.outputs = create_stack(sb, door_url)
        config_file = Path(tmp) / "ksm-config.b64"
        config_file.touch(mode=0o600)
        config_file.write_text(sb.keeper.client_config())
        lines = exports(sb, door_url, config_file)
        if env_file is not None:
            env_file.write_text("\n".join(lines) + "\n")
        print("\n".join([*lines, *notes(sb)]), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("# stopped", flush=True)
    return 0
