"""The redaction every log record goes through: remembered secrets and secret-looking names, in the shapes botocore,
Powertools and the KSM SDK print them."""

from __future__ import annotations

import base64
import json
import logging

import pytest

import app  # noqa: F401 - installs the logging guard as the function does at import
from keeper_iam_rotator.sensitive import MASK, Secret, redact, redact_value, remember_ksm_config

TRICKY = "a'b\"c&d=e f%g"  # quotes, separators and spaces, as IAM allows in a password


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Action=UpdateLoginProfile&UserName=alice&Password=p%40ss&PasswordResetRequired=false", "ResetRequired=false"),
        (repr({"UserName": "alice", "Password": TRICKY, "PasswordResetRequired": "false"}), "'alice'"),
        (json.dumps({"Name": "cfg", "SecretString": json.dumps({"appKey": TRICKY})}), '"cfg"'),
        (repr(json.dumps({"SecretString": json.dumps({"appKey": TRICKY}), "Name": "cfg"}).encode()), '"cfg"'),
        ("{'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=f00d', 'X-Amz-Date': b'2026'}", "2026"),
        ("Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=f00d", "Authorization"),
        ('{"Plaintext": "eyJwYXNzd29yZHMiOiBbXX0=", "KeyId": "k"}', '"k"'),
        ("https://x/?X-Amz-Security-Token=FQoG%2Fabc&X-Amz-Signature=f00d&X-Amz-Date=2026", "X-Amz-Date=2026"),
        # STS: AssumeRole's query body and botocore's parameter dump (ExternalId), and its XML answer as bytes
        ("Action=AssumeRole&RoleArn=arn%3Ax&ExternalId=f00d&Version=2011-06-15", "Version=2011-06-15"),
        (repr({"RoleArn": "arn:x", "ExternalId": "f00d"}), "'arn:x'"),
        (
            "b'<Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>f00d/x+y</SecretAccessKey>"
            "<SessionToken>FQoGZXIvYXdzEBk</SessionToken><Expiration>2026</Expiration></Credentials>'",
            "<AccessKeyId>ASIAEXAMPLE</AccessKeyId>",
        ),
        ("<sessiontoken>FQoG</sessiontoken>", "<sessiontoken>***</sessiontoken>"),
    ],
)
def test_secret_looking_values_are_masked(text, kept):
    clean = redact(text)
    assert MASK in clean and kept in clean
    for secret in ("p%40ss", TRICKY, "f00d", "eyJwYXNzd29yZHMiOiBbXX0=", "FQoG"):
        assert secret not in clean


def test_remembered_values_are_masked_anywhere():
    secret = Secret("Correct-Horse-9!")
    assert redact(f"xx{secret.reveal()}yy") == f"xx{MASK}yy"
    Secret("ab")  # too short to mask without masking ordinary text
    assert redact("about") == "about"


def test_the_ksm_config_and_its_keys_are_remembered():
    config = {"hostname": "127.0.0.1:1", "privateKey": "cHJpdmF0ZS1rZXk=", "appKey": "YXBwLWtleS12YWx1ZQ=="}
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    remember_ksm_config(encoded)
    assert redact(f"{encoded} {config['privateKey']} {config['appKey']}") == f"{MASK} {MASK} {MASK}"


def test_structured_messages_are_masked_by_name_and_cut_when_too_deep():
    event = {"headers": {"authorization": "AWS4 x", "X-Amz-Security-Token": "t0k3n", "Host": "h"}, "body": "{}"}
    assert redact_value(event) == {
        "headers": {"authorization": MASK, "X-Amz-Security-Token": MASK, "Host": "h"},
        "body": "{}",
    }
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    assert "nested too deep" in json.dumps(redact_value(nested))


def test_every_logger_gets_masked_records(caplog):
    password = Secret("Tr0ub4dor&3-long").reveal()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="botocore")  # raised after import, past quiet_chatty_loggers
    logging.getLogger("botocore.endpoint").debug("params: %s", {"Password": password})
    logging.getLogger("anything").info(password)
    try:
        raise ValueError(f"bad value {password}")
    except ValueError:
        logging.getLogger("urllib3").exception("failed")  # the KSM SDK disables its own "ksm" logger
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    logging.getLogger("keeper-iam-rotator").info(nested)  # Powertools' log_event with a hostile event
    assert password not in caplog.text
    assert [record.getMessage().splitlines()[0] for record in caplog.records[:3]] == [
        "params: {'Password': '***'}",
        MASK,
        "failed",
    ]
