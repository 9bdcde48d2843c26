"""What keeps cold starts short: no X-Ray SDK unless tracing is asked for, nothing at import that only some
invocations need, and an artifact with its bytecode."""

import json
import os
import subprocess
import sys

import pytest

from check_artifact import DEFAULT_ARTIFACT, problems
from rotator_sandbox.paths import FUNCTION_DIR

LOADED_XRAY = "import sys, app; print('aws_xray_sdk' in sys.modules)"


@pytest.mark.parametrize(("trace_calls", "loaded"), [("", "False"), ("false", "False"), ("true", "True")])
def test_the_xray_sdk_is_imported_only_when_calls_are_traced(trace_calls, loaded):
    env = {"TRACE_CALLS": trace_calls, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", LOADED_XRAY], cwd=FUNCTION_DIR, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == loaded


# What the handler's import must not load: each is loaded by the first invocation that needs it. A recovery run that
# finds the journal empty (every 15 minutes) needs none of them.
LOADED_LATER = {
    "keeper_secrets_manager_core": "the Keeper SDK (with requests and cryptography): the first vault",
    "cryptography": "the first journal key",
    "aws_lambda_powertools.utilities.idempotency": "the first request with an idempotency key",
    "aws_lambda_powertools.utilities.parameters": "the first read of the KSM config",
    "aws_lambda_powertools.utilities.batch": "nothing: the queue worker answers batchItemFailures itself",
    "asyncio": "nothing here (Powertools' batch utility would import it)",
}


def test_the_handler_import_leaves_what_only_some_invocations_need():
    script = f"import json, sys, app; print(json.dumps([m for m in {sorted(LOADED_LATER)!r} if m in sys.modules]))"
    env = {"POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script], cwd=FUNCTION_DIR, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", {m: LOADED_LATER[m] for m in json.loads(done.stdout)}


def test_the_built_artifact_has_bytecode_for_every_module():
    """Runs wherever `make build` ran: .ci/run sets REQUIRE_ARTIFACT=1 after it, so there a missing artifact fails."""
    if not DEFAULT_ARTIFACT.is_dir():
        if os.environ.get("REQUIRE_ARTIFACT") == "1":
            pytest.fail(f"REQUIRE_ARTIFACT=1 but there is no `make build` output in {DEFAULT_ARTIFACT}")
        pytest.skip("no `make build` output in .aws-sam (.ci/run runs this after make build)")
    assert problems(DEFAULT_ARTIFACT) == []
