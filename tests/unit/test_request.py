import pytest

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
