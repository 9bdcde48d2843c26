"""`invoke`: the deployed function, reached by the IAM-signed API (a loopback server in front of the real
`app.lambda_handler`) or by direct Lambda invoke (moto's Lambda needs Docker, absent here: the lambda client's Invoke
is answered by a stub at botocore's boundary that runs the real handler in process)."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.response import StreamingBody

from app import lambda_handler
from rotator_sandbox.stack import load_event

from .conftest import answer_aws, results_of, stack_document
from conftest import INITIAL_PASSWORD, LambdaContext

FUNCTION = "keeper-iam-rotator-RotatorFunction-abc"


@pytest.fixture(autouse=True)
def _handler_metrics_off(monkeypatch):
    """The handler runs in this process: its EMF metrics would print into the CLI's captured stdout."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


class _ApiGateway(BaseHTTPRequestHandler):
    """POST /Prod/rotations → API Gateway proxy event → app.lambda_handler; 403 without a SigV4 Authorization."""

    seen: list[dict[str, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers)
        self.server.seen.append(headers)  # type: ignore[attr-defined]
        auth = headers.get("Authorization", "")
        if not (auth.startswith("AWS4-HMAC-SHA256 Credential=") and "/execute-api/aws4_request" in auth):
            self._send(403, {"message": "Missing Authentication Token"})
            return
        event = load_event("api-post-rotations.json")
        event.update(body=base64.b64encode(body).decode(), isBase64Encoded=True, path="/rotations", headers=headers)
        response = lambda_handler(event, LambdaContext())
        self._send(response["statusCode"], json.loads(response["body"]))

    def _send(self, status: int, document: Any) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiGateway)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/Prod/rotations"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def lambda_runs_the_handler() -> list[dict[str, Any]]:
    def respond(params: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(lambda_handler(json.loads(params["Payload"]), LambdaContext())).encode()
        return {
            "StatusCode": 200,
            "ExecutedVersion": "$LATEST",
            "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
        }

    return answer_aws("lambda", "Invoke", respond)


def test_api_rotates_through_the_real_handler(stack, run, api):
    uid = stack.add_pair("alice")
    result = run("invoke", "--record", uid, "--api-url", api.url, "--json")
    assert result.exit_code == 0, result.output
    assert results_of(result) == [
        {"recordUid": uid, "status": "rotated", "userName": "alice", "accountId": "123456789012"}
    ]
    assert stack.iam_password("alice") == stack.keeper_password(uid) != INITIAL_PASSWORD
    auth = api.seen[0]["Authorization"]
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=\w+/\d{8}/us-east-1/execute-api/aws4_request, "
        r"SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=[0-9a-f]{64}",
        auth,
    )
    assert "x-amz-security-token" in {k.lower() for k in api.seen[0]}


def test_api_dry_run_table_and_skips_exit_1(stack, run, api):
    uid = stack.add_pair("alice")
    no_console = stack.add_record("svc", dn=stack.add_user("svc", password=None))
    planned = run("invoke", "--record", uid, "--dry-run", "--api-url", api.url)
    assert planned.exit_code == 0
    assert "planned" in planned.stdout
    skipped = run("invoke", "--record", uid, "--record", no_console, "--dry-run", "--api-url", api.url)
    assert skipped.exit_code == 1
    assert "no_login_profile" in skipped.stdout
    assert stack.iam_password("alice") == stack.keeper_password(uid) == INITIAL_PASSWORD


def test_bind_reaches_the_function_which_refuses_an_api_caller_not_allowed_to_bind(stack, run, api, monkeypatch):
    uid = stack.add_pair("alice", bound=False)
    refused = run("invoke", "--record", uid, "--bind", "--api-url", api.url)
    assert refused.exit_code == 1
    assert "HTTP 403: bind_not_allowed" in refused.stderr
    assert stack.iam_password("alice") == stack.keeper_password(uid) == INITIAL_PASSWORD
    caller = load_event("api-post-rotations.json")["requestContext"]["identity"]["userArn"]
    monkeypatch.setenv("BIND_CALLER_ARNS", caller)
    assert run("invoke", "--record", uid, "--bind", "--api-url", api.url).exit_code == 0
    assert stack.iam_password("alice") == stack.keeper_password(uid) != INITIAL_PASSWORD


def test_api_refusal_is_a_clean_failure(stack, run, api, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run("invoke", "--record", "A1ic3Rec0rdUid00000001", "--api-url", api.url)
    assert result.exit_code == 2
    assert "no AWS credentials" in result.stderr
    assert api.seen == []


def test_api_error_status_exits_1(run):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiGateway)
    url = f"http://127.0.0.1:{server.server_address[1]}/Prod/rotations"
    server.server_close()  # nothing listens there now
    result = run("invoke", "--record", "A1ic3Rec0rdUid00000001", "--api-url", url)
    assert result.exit_code == 1
    assert "failed: ConnectionError" in result.stderr


def test_direct_invoke_rotates_through_the_real_handler(stack, run):
    sent = lambda_runs_the_handler()
    uid = stack.add_pair("alice")
    result = run("invoke", "--record", uid, "--function", FUNCTION, "--json")
    assert result.exit_code == 0, result.output
    assert results_of(result)[0]["status"] == "rotated"
    assert stack.iam_password("alice") == stack.keeper_password(uid) != INITIAL_PASSWORD
    assert sent[0]["FunctionName"] == FUNCTION
    assert sent[0]["InvocationType"] == "RequestResponse"
    assert json.loads(sent[0]["Payload"]) == {"records": [uid], "dryRun": False}


def test_direct_invoke_via_stack_outputs(stack, run):
    described = answer_aws("cloudformation", "DescribeStacks", lambda params: stack_document(FUNCTION))
    sent = lambda_runs_the_handler()
    uid = stack.add_pair("alice")
    result = run("invoke", "--record", uid, "--dry-run", "--stack", "rotator")
    assert result.exit_code == 0, result.output
    assert described[0]["StackName"] == "rotator"
    assert json.loads(sent[0]["Payload"]) == {"records": [uid], "dryRun": True}


def test_api_via_stack_outputs(stack, run, api):
    answer_aws("cloudformation", "DescribeStacks", lambda params: stack_document(FUNCTION, api.url))
    uid = stack.add_pair("alice")
    result = run("invoke", "--record", uid, "--stack", "rotator", "--via", "api")
    assert result.exit_code == 0, result.output
    assert len(api.seen) == 1
    assert stack.iam_password("alice") == stack.keeper_password(uid) != INITIAL_PASSWORD


def test_function_error_exits_1(stack, run):
    def respond(params: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps({"errorType": "Runtime.ImportModuleError", "errorMessage": "boom"}).encode()
        return {
            "StatusCode": 200,
            "FunctionError": "Unhandled",
            "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
        }

    answer_aws("lambda", "Invoke", respond)
    result = run("invoke", "--record", "A1ic3Rec0rdUid00000001", "--function", FUNCTION)
    assert result.exit_code == 1
    assert "the function failed (Unhandled: Runtime.ImportModuleError)" in result.stderr


def test_bad_input_is_refused_before_calling(run):
    sent = answer_aws("lambda", "Invoke", lambda params: {"StatusCode": 200})
    assert run("invoke", "--record", "bad uid", "--function", FUNCTION).exit_code == 2
    assert run("invoke", "--record", "A1ic3Rec0rdUid00000001").exit_code == 2  # no endpoint
    both = run("invoke", "--record", "A1ic3Rec0rdUid00000001", "--function", "f", "--api-url", "https://x/")
    assert both.exit_code == 2 and "exactly one of" in both.stderr
    assert run("invoke", "--function", FUNCTION).exit_code == 2  # --record is required
    assert sent == []


def test_help(run):
    result = run("invoke", "--help")
    assert result.exit_code == 0
    for option in ("--record", "--dry-run", "--stack", "--function", "--api-url", "--json"):
        assert option in result.stdout


@pytest.mark.parametrize("via", ["lambda", "api"])
def test_idempotency_key_retry_returns_the_first_results(stack, run, api, via):
    """The README's advice: retry with the same key, and the finished results come back instead of a new rotation."""
    sent = lambda_runs_the_handler()
    uid = stack.add_pair("alice")
    endpoint = ["--function", FUNCTION] if via == "lambda" else ["--api-url", api.url]
    first = run("invoke", "--record", uid, "--idempotency-key", "rotate-2026-11-27", "--json", *endpoint)
    assert first.exit_code == 0, first.output
    password = stack.iam_password("alice")
    assert password == stack.keeper_password(uid) != INITIAL_PASSWORD
    again = run("invoke", "--record", uid, "--idempotency-key", "rotate-2026-11-27", "--json", *endpoint)
    assert again.exit_code == 0, again.output
    assert results_of(again) == results_of(first)
    assert stack.iam_password("alice") == stack.keeper_password(uid) == password  # not rotated a second time
    reused = run("invoke", "--record", uid, "--dry-run", "--idempotency-key", "rotate-2026-11-27", *endpoint)
    assert reused.exit_code == 1
    assert "idempotency_key_reused" in reused.stderr
    if via == "lambda":
        assert json.loads(sent[0]["Payload"])["idempotencyKey"] == "rotate-2026-11-27"
    bad = run("invoke", "--record", uid, "--idempotency-key", "", *endpoint)
    assert bad.exit_code == 2 and "--idempotency-key must be 1 to 128 characters, not 0" in bad.stderr
