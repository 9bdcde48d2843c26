"""pacing.py against DynamoDB (moto): the grants every invocation shares, on a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from keeper_iam_rotator.errors import KeeperThrottledError
from keeper_iam_rotator.pacing import SLOT_MARGIN, Limits, Pacer

TABLE = "pacing"


class Clock:
    """Time that passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def dynamodb() -> Iterator[object]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def pacer(dynamodb: object, clock: Clock, max_wait: float = 60.0, **limits: float) -> Pacer:
    return Pacer(dynamodb, TABLE, Limits(**limits), max_wait, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


def test_a_full_burst_waits_for_the_quiet_pause_then_counts_again(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, burst=3, quiet=10)
    for _ in range(3):
        paced.admit("device", "update_secret")
    assert clock.slept == []
    paced.admit("device", "update_secret")  # the fourth
    assert clock.slept == [10.0]
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "device#update_secret"}})["Item"]
    assert item["count"] == {"N": "1"}


def test_endpoints_and_devices_are_counted_apart(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, burst=2, quiet=10)
    for device, endpoint in [("a", "update_secret"), ("a", "finalize_secret_update"), ("b", "update_secret")] * 2:
        paced.admit(device, endpoint)
    assert clock.slept == []


def test_requests_spaced_by_the_quiet_pause_never_wait(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, burst=1, quiet=10)
    for _ in range(3):
        paced.admit("device", "get_secret")
        clock.now += 10.0
    assert clock.slept == []


def test_the_per_minute_cap_hands_out_slots_60_over_n_seconds_apart(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, per_minute=10)
    for _ in range(3):
        paced.admit("device", "update_secret")
    spacing = round(6.0 * SLOT_MARGIN, 3)
    assert clock.slept == [spacing, spacing]


def test_a_grant_beyond_max_wait_is_refused_at_once_and_reserves_nothing(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, max_wait=5, per_minute=6)  # slots 10.2 s apart
    paced.admit("device", "update_secret")
    with pytest.raises(KeeperThrottledError, match="no Keeper request free within 5 s"):
        paced.admit("device", "update_secret")
    assert clock.slept == []
    clock.now += 10.2
    paced.admit("device", "update_secret")  # the refused request took no slot
    assert clock.slept == []


def test_a_full_burst_whose_pause_outlasts_max_wait_is_refused(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, max_wait=5, burst=1, quiet=10)
    paced.admit("device", "update_secret")
    with pytest.raises(KeeperThrottledError):
        paced.admit("device", "update_secret")


def test_an_unreadable_pacing_table_sends_nothing(dynamodb):
    clock = Clock()
    paced = Pacer(dynamodb, "no-such-table", Limits(), 60, clock=clock, sleep=clock.sleep)
    with pytest.raises(KeeperThrottledError, match="cannot pace Keeper requests"):
        paced.admit("device", "update_secret")


def test_capacity_per_device_is_the_tighter_model():
    assert Limits(burst=90, quiet=11).rotations_per_second() == pytest.approx(90 / 11)
    assert Limits(burst=90, quiet=11, per_minute=10).rotations_per_second() == pytest.approx(10 / 60 / 2)
