import pytest

from keeper_iam_rotator.api import may_bind
from keeper_iam_rotator.errors import BadRequestError
from keeper_iam_rotator.request import RotationRequest, Trigger, parse_request

UID = "AbCdEfGhIjKlMnOpQrStUv"


def test_parses_records_and_dry_run():
    assert parse_request({"records": [UID, UID], "dryRun": True}, Trigger.API) == RotationRequest(
        Trigger.API, (UID,), dry_run=True
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([UID], "JSON object"),
        ({}, "non-empty list"),
        ({"records": []}, "non-empty list"),
        ({"records": UID}, "non-empty list"),
        ({"records": [42]}, "record uids"),
        ({"records": ["not a uid!"]}, "record uids"),
        ({"records": [f"{UID}{i:02d}" for i in range(51)]}, "at most 50"),
        ({"records": [UID], "dryRun": "yes"}, "dryRun"),
        ({"records": [UID], "dryrun": True}, "unknown field"),
        ({"records": [UID], "userName": "root"}, "unknown field"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(body, fragment):
    with pytest.raises(BadRequestError, match=fragment):
        parse_request(body, Trigger.INVOKE)


def test_bind_is_a_flag_only_a_caller_naming_records_may_raise():
    assert parse_request({"records": [UID], "bind": True}, Trigger.API).bind
    assert not parse_request({"records": [UID]}, Trigger.INVOKE).bind
    with pytest.raises(BadRequestError, match='"bind" must be true or false'):
        parse_request({"records": [UID], "bind": "yes"}, Trigger.INVOKE)
    with pytest.raises(ValueError, match="cannot bind"):
        RotationRequest(Trigger.QUEUE, (UID,), bind=True)


def test_an_idempotency_key_is_scoped_by_trigger_and_caller():
    one = parse_request({"records": [UID], "idempotencyKey": "k"}, Trigger.API, caller="arn:aws:sts::1:x/a")
    other = parse_request({"records": [UID], "idempotencyKey": "k"}, Trigger.API, caller="arn:aws:sts::1:x/b")
    assert one.scoped_key != other.scoped_key
    assert parse_request({"records": [UID]}, Trigger.INVOKE, retry_key="req-1").scoped_key == "invoke||req-1"
    assert parse_request({"records": [UID]}, Trigger.API).scoped_key is None


@pytest.mark.parametrize(
    ("caller", "allowed", "expected"),
    [
        ("arn:aws:sts::123456789012:assumed-role/iam-admins/jane", ["arn:aws:iam::123456789012:role/iam-admins"], True),
        ("arn:aws:sts::123456789012:assumed-role/iam-admins/jane", ["arn:aws:sts::*:assumed-role/iam-admins/*"], True),
        ("arn:aws:sts::123456789012:assumed-role/iam-admins/jane", ["arn:aws:iam::123456789012:role/iam-admin"], False),
        ("arn:aws:sts::123456789012:assumed-role/developers/iam-admins", ["*:role/iam-admins"], False),
        ("arn:aws:iam::123456789012:user/jane", ["arn:aws:iam::123456789012:user/jane"], True),
        ("", ["*"], False),
        ("arn:aws:iam::123456789012:user/jane", [], False),
    ],
)
def test_bind_callers_match_like_arnlike(caller, allowed, expected):
    assert may_bind(caller, allowed) is expected
