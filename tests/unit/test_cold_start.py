"""What keeps cold starts short: no X-Ray SDK unless tracing is asked for, and an artifact with its bytecode."""

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


@pytest.mark.skipif(not DEFAULT_ARTIFACT.is_dir(), reason="no `make build` output in .aws-sam")
def test_the_built_artifact_has_bytecode_for_every_module():
    assert problems(DEFAULT_ARTIFACT) == []
