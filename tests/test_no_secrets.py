"""No secret ever reaches output: every password IAM or Keeper held, and the KSM config and its keys, are absent
from stdout, stderr, every log record (all loggers at DEBUG, including botocore's) and every result."""

from __future__ import annotations

import base64
import json
import logging
import re
import sys

import boto3
import pytest

import app  # imported before capsys replaces the streams Powertools' Logger binds to
from keeper_iam_rotator import rotation
from keeper_iam_rotator.observability import CHATTY_LOGGERS
from keeper_iam_rotator.passwords import generate_password
from rotator_sandbox.accounts import create_target_role, iam_password, member_session, roles_must_exist
from rotator_sandbox.stack import load_event
from test_fleet import HUB_ROLE, MEMBER, member_pair

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
    """Guard against a vacuous check: a remembered secret written outside logging is found by the same search
    (logged, the guard masks it). The sentinel is no credential, so nothing real is ever written."""
    from keeper_iam_rotator.sensitive import Secret

    uid = stack.add_pair("alice")
    stack.rotate(uid)
    sentinel = Secret("leak-check-sentinel-8f3a").reveal()  # remembered, like every password the function holds
    logging.getLogger("keeper_iam_rotator").warning("oops %s", sentinel)
    sys.stdout.write(f"written {sentinel}\n")
    assert sentinel in capsys.readouterr().out
    assert "oops ***" in debug_everything.text and sentinel not in debug_everything.text


# --- levels changed after import: the redacting guard, not the levels, keeps secrets out ----------------------------

SIGNATURE = "5d2a1f9e0c7b3a6d8e4f2b1c9a7d6e5f4c3b2a1908f7e6d5c4b3a29180f7e6d5"
SECURITY_TOKEN = "IQoJb3JpZ2luX2VjEHoaCXVzLWVhc3QtMSJHMEUCIQDs3cr3tT0k3nVa1ue" + "Zx9" * 40
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEXAMPLE/20261128/us-east-1/execute-api/aws4_request, "
    f"SignedHeaders=host;x-amz-date;x-amz-security-token, Signature={SIGNATURE}"
)
UNMASKED = re.compile(
    r"""(?i)(?:plaintext|secretstring|privatekey|appkey)["']?\s*[:=]\s*b?["']?(?!\*\*\*)[\w+/=-]{8,}"""
)


@pytest.fixture
def debug_after_import(monkeypatch, caplog, function_log):
    """What an operator might do to a running function: everything to DEBUG, botocore with a stream handler of its
    own (as `boto3.set_stream_logger` adds), a root handler like Lambda's runtime, the API event logged with its
    headers. Yields the text those handlers and Powertools' own handler wrote."""
    # Powertools reads POWERTOOLS_LOGGER_LOG_EVENT when it decorates the handler (at import, in Lambda): decorate again
    logged_event_handler = app.logger.inject_lambda_context(log_event=True)(app.lambda_handler)
    monkeypatch.setattr(app, "lambda_handler", logged_event_handler)
    caplog.set_level(logging.DEBUG)
    names = [None, "keeper-iam-rotator", *CHATTY_LOGGERS]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    handlers = {None: logging.StreamHandler(function_log), "botocore": logging.StreamHandler(function_log)}
    for name, handler in handlers.items():
        logging.getLogger(name).addHandler(handler)
    yield function_log
    for name, handler in handlers.items():
        logging.getLogger(name).removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_no_secret_when_every_level_is_raised_after_import(stack, debug_after_import, caplog, capfd, monkeypatch):
    logged = debug_after_import
    generated: list[str] = []  # every new password, including the one IAM held only until it was set back

    def spy(*args, **kwargs):
        password = generate_password(*args, **kwargs)
        generated.append(password.reveal())
        return password

    monkeypatch.setattr(rotation, "generate_password", spy)
    uids = {name: stack.add_pair(name) for name in ("alice", "bob", "carol")}
    results = stack.rotate(uids["alice"])  # success
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="error", status=500, times=10)
    results += stack.rotate(uids["bob"])  # failure: IAM got a new password, then its old one back
    stack.keeper.vault.clear_faults()
    event = load_event("api-post-rotations.json")
    event.update(body=json.dumps({"records": [uids["carol"]]}), isBase64Encoded=False)
    signed = {"Authorization": AUTHORIZATION, "X-Amz-Security-Token": SECURITY_TOKEN, "X-Amz-Date": "20261128T031500Z"}
    event["headers"].update(signed)
    event.setdefault("multiValueHeaders", {}).update({name: [value] for name, value in signed.items()})
    response = stack.invoke(event)  # success through the API, SigV4 headers in the logged event
    results += json.loads(response["body"])["results"]

    config_b64 = stack.keeper.client_config()
    config = json.loads(base64.b64decode(config_b64))
    passwords = {INITIAL_PASSWORD, *generated}
    secrets = passwords | {config_b64, config["privateKey"], config["appKey"], AUTHORIZATION, SIGNATURE}
    secrets |= {SECURITY_TOKEN, json.dumps(config)}
    captured = capfd.readouterr()
    records = [repr(vars(record)) for record in caplog.records]
    haystack = "\n".join([logged.getvalue(), captured.out, captured.err, caplog.text, *records, json.dumps(results)])

    assert [r["status"] for r in results] == ["rotated", "failed", "rotated"]
    assert len(passwords) == 4  # the initial one, alice's, bob's aborted one and carol's
    assert stack.iam_password("alice") in passwords and stack.iam_password("carol") in passwords
    leaked = [f"{secret[:3]}...({len(secret)} chars)" for secret in secrets if secret in haystack]
    assert leaked == []
    assert UNMASKED.findall(haystack) == []
    assert (
        "name=UpdateLoginProfile" in logged.getvalue() and "'Password': '***'" in logged.getvalue()
    )  # botocore's DEBUG
    assert "20261128T031500Z" in logged.getvalue() and '"Authorization":"***"' in logged.getvalue()  # the API event


# --- member accounts: the STS credentials of every AssumeRole, and the ExternalId ----------------------------------

EXTERNAL_ID = "member-external-id-7f3c2a9b"


@pytest.fixture
def member_account(stack, monkeypatch):
    """A member account whose role requires the ExternalId, and a record of one of its users; set up before the
    levels are raised (the setup's own calls would log the role's trust policy)."""
    with roles_must_exist():
        iam = member_session(boto3.session.Session, MEMBER).client("iam")
        create_target_role(iam, HUB_ROLE, external_id=EXTERNAL_ID)
        monkeypatch.setenv("TARGET_ACCOUNT_IDS", MEMBER)
        monkeypatch.setenv("TARGET_EXTERNAL_ID", EXTERNAL_ID)
        yield member_pair(stack, MEMBER, "maria")


def test_no_sts_credential_or_external_id_when_every_level_is_raised_after_import(
    stack, member_account, debug_after_import, caplog, capfd
):
    """A member account's rotation with everything at DEBUG: botocore logs AssumeRole's parameters (the ExternalId)
    and its XML answer (SecretAccessKey, SessionToken), and every later request signs with them."""
    logged = debug_after_import
    issued: list[dict] = []
    _clear_caches()
    boto3.DEFAULT_SESSION._session.get_component("event_emitter").register(
        "after-call.sts.AssumeRole", lambda parsed, **_: issued.append(parsed["Credentials"])
    )
    results = stack.rotate(member_account)

    assert [(r["status"], r["accountId"]) for r in results] == [("rotated", MEMBER)]
    assert len(issued) == 1
    secrets = {EXTERNAL_ID, issued[0]["SecretAccessKey"], issued[0]["SessionToken"]}
    secrets |= {INITIAL_PASSWORD, iam_password(MEMBER, "maria")}
    captured = capfd.readouterr()
    records = [repr(vars(record)) for record in caplog.records]
    haystack = "\n".join([logged.getvalue(), captured.out, captured.err, caplog.text, *records, json.dumps(results)])
    assert "<SecretAccessKey>" in haystack and "name=AssumeRole" in haystack  # botocore's DEBUG really ran
    leaked = [f"{secret[:3]}...({len(secret)} chars)" for secret in secrets if secret in haystack]
    assert leaked == []
