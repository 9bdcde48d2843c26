"""No secret ever reaches output: every password IAM or Keeper held, and the KSM config and its keys, are absent
from stdout, stderr, every log record (all loggers at DEBUG, including botocore's) and every result."""

from __future__ import annotations

import base64
import json
import logging

import boto3
import pytest

import app  # noqa: F401 - imported before capsys replaces the streams Powertools' Logger binds to
from rotator_sandbox.stack import load_event

from conftest import INITIAL_PASSWORD, _clear_caches
from faults import AwsFaults, SimulatedCrash, after_aws_call


@pytest.fixture
def debug_everything(monkeypatch, caplog):
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    caplog.set_level(logging.DEBUG)
    for name in ("keeper_iam_rotator", "keeper-iam-rotator", "aws_lambda_powertools"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


def test_no_secret_in_any_output(stack, debug_everything, capsys, monkeypatch):
    caplog = debug_everything
    monkeypatch.setenv("JOURNAL_LEASE_MARGIN_SECONDS", "0")
    seen: set[str] = {INITIAL_PASSWORD}
    results = []

    uids = {name: stack.add_pair(name) for name in ("alice", "bob", "carol", "dave")}

    def remember() -> None:
        for name, uid in uids.items():
            seen.update(p for p in (stack.iam_password(name), stack.keeper_password(uid)) if p)

    results += stack.rotate(uids["alice"])  # success
    results += stack.rotate(uids["alice"], dry_run=True)  # dry run
    remember()
    _clear_caches()  # faults reach clients created after they are armed
    AwsFaults().fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation")
    results += stack.rotate(uids["bob"])  # IAM refuses
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="error", status=500, times=10)
    results += stack.rotate(uids["carol"])  # Keeper will not commit: IAM restored
    stack.keeper.vault.clear_faults()
    remember()
    boto3.setup_default_session()
    _clear_caches()
    after_aws_call("iam", "UpdateLoginProfile", SimulatedCrash())
    stack.remaining_ms = 0
    with pytest.raises(SimulatedCrash):
        stack.rotate(uids["dave"])  # dies with the new password only in IAM and the journal
    remember()

    boto3.setup_default_session()
    _clear_caches()
    results += stack.rotate(uids["dave"])  # recovery
    results.append(stack.invoke(load_event("scheduled.json")))
    results.append(stack.invoke({"records": ["bad uid!"]}))
    remember()

    config_b64 = stack.keeper.client_config()
    config = json.loads(base64.b64decode(config_b64))
    secrets = seen | {config_b64, config["privateKey"], config["appKey"]}
    captured = capsys.readouterr()
    haystack = "\n".join([captured.out, captured.err, caplog.text, json.dumps(results)])
    statuses = [r["status"] for r in results[:5]]
    assert statuses == ["rotated", "planned", "failed", "failed", "rotated"]  # every path really ran
    assert "rotation result" in haystack and len(seen) >= 5  # the schedule rotates only bob and carol: due
    leaked = [f"{secret[:3]}...({len(secret)} chars)" for secret in secrets if secret in haystack]
    assert leaked == []


def test_the_leak_check_can_fail(stack, debug_everything, capsys):
    """Guard against a vacuous check: a password that is logged is found by the same search."""
    uid = stack.add_pair("alice")
    stack.rotate(uid)
    logging.getLogger("keeper_iam_rotator").warning("oops %s", stack.iam_password("alice"))
    assert stack.iam_password("alice") in debug_everything.text
