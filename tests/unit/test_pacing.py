"""pacing.py against DynamoDB (moto): the grants every invocation shares, on a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from keeper_iam_rotator.errors import KeeperThrottledError
from keeper_iam_rotator.pacing import RATE_MARGIN, Limits, Pacer

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


def send(paced: Pacer, device: str, endpoint: str, takes: float = 0.0) -> None:
    """What the transport does around each request: the grant, then the answer `takes` seconds later."""
    grant = paced.admit(device, endpoint)
    paced._clock.now += takes  # type: ignore[attr-defined]
    paced.sent(grant)


def test_a_full_burst_waits_for_the_quiet_pause_then_counts_again(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, burst=3, quiet=10)
    for _ in range(3):
        send(paced, "device", "update_secret")
    assert clock.slept == []
    send(paced, "device", "update_secret")  # the fourth
    assert clock.slept == [10.0]
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "device#update_secret"}})["Item"]
    assert item["count"] == {"N": "1"}


def test_endpoints_and_devices_are_counted_apart(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, burst=2, quiet=10)
    for device, endpoint in [("a", "update_secret"), ("a", "finalize_secret_update"), ("b", "update_secret")] * 2:
        send(paced, device, endpoint)
    assert clock.slept == []


def test_requests_spaced_by_the_quiet_pause_never_wait(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, burst=1, quiet=10)
    for _ in range(3):
        send(paced, "device", "get_secret")
        clock.now += 10.0
    assert clock.slept == []


def test_the_per_minute_cap_sends_n_then_waits_a_window_from_the_first_answer(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, per_minute=3)
    for _ in range(3):
        send(paced, "device", "update_secret", takes=0.5)
    assert clock.slept == []
    send(paced, "device", "update_secret")  # the fourth: a window after the first answer (0.5 s after its grant)
    assert clock.slept == [59.0]


def test_a_request_delivered_late_holds_its_slot_until_a_window_after_its_answer(dynamodb):
    """Slots counted from grants let a late request share Keeper's window with one N later (2.5 % throttled in
    the sandbox); counted from answers they cannot."""
    clock = Clock()
    paced = pacer(dynamodb, clock, per_minute=2, max_wait=120)
    started = clock.now
    late = paced.admit("device", "update_secret")  # on its way for 20 s (a busy host, a slow connection)
    send(paced, "device", "update_secret")
    clock.now += 20
    paced.sent(late)
    send(paced, "device", "update_secret")  # the other slot: a window after its answer
    assert clock.now - started == pytest.approx(60)
    send(paced, "device", "update_secret")  # the late one's slot: a window after its answer, not its grant
    assert clock.now - started == pytest.approx(20 + 60)


def test_a_grant_beyond_max_wait_is_refused_at_once_and_holds_nothing(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, max_wait=5, per_minute=1)
    send(paced, "device", "update_secret")
    with pytest.raises(KeeperThrottledError, match="no Keeper request free within 5 s"):
        paced.admit("device", "update_secret")
    assert clock.slept == []
    clock.now += 60
    send(paced, "device", "update_secret")  # the refused request took no slot
    assert clock.slept == []


def test_a_request_refused_by_the_burst_frees_its_per_minute_slot(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, max_wait=5, per_minute=2, burst=1, quiet=10)
    send(paced, "device", "update_secret")
    with pytest.raises(KeeperThrottledError):
        paced.admit("device", "update_secret")  # its ring slot granted, then the burst's pause outlasts max_wait
    clock.now += 10
    send(paced, "device", "update_secret")  # the slot is free again: no wait for a window
    assert clock.slept == []


def test_a_per_minute_slot_never_answered_frees_after_max_wait_request_timeout_and_a_window(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, max_wait=60, per_minute=1)
    started = clock.now
    paced.admit("device", "update_secret")  # its process dies: no answer is ever marked
    with pytest.raises(KeeperThrottledError):
        paced.admit("device", "update_secret")  # it may still be on its way: waited for, up to max_wait
    clock.now = started + 60 + 30 + 60
    send(paced, "device", "update_secret")
    assert clock.now == started + 150


def test_invocations_share_the_per_minute_ring_and_a_changed_cap_starts_a_new_one(dynamodb):
    clock = Clock()
    first, second = pacer(dynamodb, clock, per_minute=2), pacer(dynamodb, clock, per_minute=2)
    send(first, "device", "update_secret")
    send(second, "device", "finalize_secret_update")  # its first guess of the ring is wrong; it learns and takes
    send(first, "device", "update_secret")  # the third request on the device: a window after the first
    assert clock.slept == [60.0]
    wider = pacer(dynamodb, clock, per_minute=4)
    send(wider, "device", "update_secret")  # a new ring of 4, its slots free a window after the last answer
    assert clock.slept == [60.0]
    ring = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "device#minute"}})["Item"]
    assert len(ring["ring"]["L"]) == 4


def test_a_full_burst_whose_pause_outlasts_max_wait_is_refused(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, max_wait=5, burst=1, quiet=10)
    send(paced, "device", "update_secret")
    with pytest.raises(KeeperThrottledError):
        paced.admit("device", "update_secret")


def test_a_new_burst_waits_for_the_last_answer_of_the_old_one(dynamodb):
    """Keeper's quiet timer restarts when a request arrives: a granted request still on its way holds the burst
    full, and the pause counts from its answer."""
    clock = Clock()
    paced = pacer(dynamodb, clock, burst=2, quiet=10)
    send(paced, "device", "update_secret")
    outstanding = paced.admit("device", "update_secret")  # granted, not yet answered
    clock.now += 30  # far past the quiet pause since the grant
    waiting = clock.now

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 3:  # the outstanding request is answered during the third poll
            paced.sent(outstanding)

    paced._sleep = sleep
    paced.admit("device", "update_secret")
    assert clock.slept[:3] == [0.25, 0.25, 0.25]  # polled while the answer was outstanding
    assert clock.now - waiting == pytest.approx(0.75 + 10.0)  # then the full pause after the answer


def test_a_request_never_answered_stops_counting_after_the_request_timeout(dynamodb):
    clock = Clock()
    paced = pacer(dynamodb, clock, max_wait=60, burst=1, quiet=10)
    paced.admit("device", "update_secret")  # its process dies: no answer is ever marked
    paced.admit("device", "update_secret")
    assert sum(clock.slept) == pytest.approx(10 + 30, abs=0.3)  # quiet + request_timeout (30 s)


def test_an_unreadable_pacing_table_sends_nothing(dynamodb):
    clock = Clock()
    paced = Pacer(dynamodb, "no-such-table", Limits(), 60, clock=clock, sleep=clock.sleep)
    with pytest.raises(KeeperThrottledError, match="cannot pace Keeper requests"):
        paced.admit("device", "update_secret")


def test_capacity_per_device_is_the_tighter_model():
    assert Limits(burst=90, quiet=11).rotations_per_second() == pytest.approx(90 / 11)
    per_minute = Limits(burst=90, quiet=11, per_minute=10).rotations_per_second()
    assert per_minute == pytest.approx(10 / (60 * RATE_MARGIN) / 2)  # a window opens at an answer, not a send
    compressed = Limits(burst=90, quiet=11, per_minute=10, window=2).rotations_per_second()
    assert compressed == pytest.approx(10 / (2 * RATE_MARGIN) / 2)
