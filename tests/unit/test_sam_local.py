"""`make sam-local`'s pieces that need no Docker: the sandbox's --env-vars file, the events it sends, how it reads the
function's answers (a broken artifact's answer fails a step although `sam local invoke` exits 0), and the
host-network wrapper's extras and hook."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import pytest

from keeper_iam_rotator.fanout import Handoff
from rotator_sandbox.cfn_yaml import load_template
from rotator_sandbox.paths import EVENTS_DIR, ROOT, TOOLS_DIR
from rotator_sandbox.stack import (
    CONFIG_SECRET,
    IDEMPOTENCY_TABLE,
    JOURNAL_KEY,
    JOURNAL_MAC_KEY,
    JOURNAL_TABLE,
    PACING_TABLE,
)
from sam_local.host_network import TESTED_SAM_CLI, container_extras
from sam_local.steps import STEPS, answer_results, unstepped_events

EVENT_UID = json.loads((EVENTS_DIR / "direct-invoke.json").read_text())["records"][0]


def event(name: str) -> dict:
    return json.loads((EVENTS_DIR / name).read_text())


def function_properties() -> dict:
    return load_template(ROOT / "template.yaml")["Resources"]["RotatorFunction"]["Properties"]


def test_sandbox_env_vars_name_the_sandboxs_resources_and_every_declared_variable():
    declared = function_properties()["Environment"]["Variables"]
    sandbox = event("local-env-sandbox.json")["RotatorFunction"]
    stack = event("local-env.json")["RotatorFunction"]
    assert set(sandbox) == set(declared)  # SAM passes no other variable
    names = {
        "KSM_CONFIG_SECRET_ID": CONFIG_SECRET,
        "JOURNAL_TABLE_NAME": JOURNAL_TABLE,
        "JOURNAL_KEY_ID": JOURNAL_KEY,
        "JOURNAL_MAC_KEY_ID": JOURNAL_MAC_KEY,
        "IDEMPOTENCY_TABLE_NAME": IDEMPOTENCY_TABLE,
        "PACING_TABLE_NAME": PACING_TABLE,
        "DRY_RUN": "false",
    }
    assert {k: sandbox[k] for k in names} == names
    assert {k: v for k, v in sandbox.items() if k not in names} == {k: v for k, v in stack.items() if k not in names}


def test_every_shipped_event_is_a_sam_local_step():
    assert unstepped_events() == []
    assert all((EVENTS_DIR / step.event).exists() for step in STEPS if step.event)


def test_the_queue_and_recovery_events_are_what_their_sources_send():
    recovery = function_properties()["Events"]["Recovery"]["Properties"]["Input"]
    assert event("recovery.json") == json.loads(recovery)
    (record,) = event("sqs-rotation.json")["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode(), usedforsecurity=False).hexdigest()  # SQS's own
    assert Handoff.parse(record["body"]) == Handoff(EVENT_UID, "123456789012", 1796428800.0)  # what fanout.py sends


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        # a module left out of the artifact: awslambdaric answers this and `sam local invoke` still exits 0
        (
            {"errorMessage": "Unable to import module 'app': No module named 'keeper_iam_rotator'", "errorType": "x"},
            "the function failed",
        ),
        (None, "not a JSON object"),  # SAM printed no answer at all
        ({"statusCode": 502, "body": '{"message": "Internal server error"}'}, "HTTP 502"),
        ({"batchItemFailures": [{"itemIdentifier": "19dd0b57"}]}, "SQS messages failed"),
        ({"summary": {}}, "no results"),
    ],
)
def test_a_failed_answer_fails_the_step(answer, problem):
    problems, _, _ = answer_results(answer)
    assert len(problems) == 1 and problem in problems[0]


def test_good_answers_are_read():
    result = {"recordUid": EVENT_UID, "status": "rotated"}
    assert answer_results({"results": [result], "summary": {"notDue": 0}}) == ([], {EVENT_UID: result}, {"notDue": 0})
    api = {"statusCode": 200, "body": json.dumps({"results": [result]})}
    assert answer_results(api) == ([], {EVENT_UID: result}, {})
    assert answer_results({"batchItemFailures": []}) == ([], None, {})


def test_the_wrapper_passes_named_variables_and_mounts_only_files(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("certificate")
    environ = {
        "SAM_LOCAL_PASS_ENV": "AWS_ENDPOINT_URL, REQUESTS_CA_BUNDLE UNSET",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "REQUESTS_CA_BUNDLE": str(ca),
        "OTHER": "not passed",
    }
    env, mounts = container_extras(environ)
    assert env == {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "REQUESTS_CA_BUNDLE": str(ca)}
    assert mounts == {str(ca): {"bind": str(ca), "mode": "ro"}}
    assert container_extras({}) == ({}, {})


def test_the_wrapper_finds_its_hook_in_the_pinned_sam_cli():
    pinned = re.search(r"^SAM_CLI_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert pinned and pinned.group(1) == TESTED_SAM_CLI
    sam_python = ROOT / ".venv-sam" / "bin" / "python"
    if not sam_python.exists():
        pytest.skip("no .venv-sam (make .venv-sam/.installed)")
    check = "import samcli; from sam_local.host_network import check_hook; check_hook(); print(samcli.__version__)"
    done = subprocess.run(  # noqa: S603 - SAM CLI's own interpreter
        [str(sam_python), "-c", check],
        env={**os.environ, "PYTHONPATH": str(TOOLS_DIR)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == TESTED_SAM_CLI
