"""Keeper-scale fleets (issue 18): the scheduled run's budget, explicit requests beyond it, and several client
devices, through the real handler (moto + the KSM emulator, real state asserted)."""

from __future__ import annotations

import time

import boto3
import pytest

from keeper_iam_rotator.devices import Device, Devices
from keeper_iam_rotator.fanout import Handoff
from keeper_iam_rotator.keeper import KeeperVault
from keeper_iam_rotator.sensitive import Secret
from ksm_emulator import EmulatorServer
from rotator_sandbox.queue import LocalQueue
from rotator_sandbox.stack import CONFIG_SECRET, load_event
from test_binding import by_uid, code
from test_fleet import scheduled

from conftest import ACCOUNT, INITIAL_PASSWORD
from test_rotation import assert_rotated


@pytest.fixture
def tight_budget(monkeypatch):
    """A budget of 3 rotations per scheduled run: 9 requests per minute (slots 5% apart: 4.3 rotations), a run every
    minute, less the quarter kept for the API and recovery. Pacing itself is off, so the test does not wait for it."""
    monkeypatch.setenv("KEEPER_REQUESTS_PER_MINUTE", "9")
    monkeypatch.setenv("SCHEDULE_EXPRESSION", "rate(1 minute)")
    monkeypatch.setenv("KEEPER_PACING", "false")


def test_the_scheduled_run_defers_beyond_its_budget_and_the_next_run_picks_the_rest_up(stack, tight_budget):
    uids = {f"user{i}": stack.add_pair(f"user{i}") for i in range(5)}
    first = scheduled(stack)
    assert first["summary"]["rotated"] == 3
    assert first["summary"]["deferred"] == 2
    rotated = {uid for uid, result in by_uid(first["results"]).items() if result["status"] == "rotated"}
    deferred = set(uids.values()) - rotated
    assert all(stack.keeper_password(uid) == stack.iam_password(name) == INITIAL_PASSWORD
               for name, uid in uids.items() if uid in deferred)  # fmt: skip
    second = scheduled(stack)
    assert {uid for uid, r in by_uid(second["results"]).items() if r["status"] == "rotated"} == deferred
    assert second["summary"] | {"rotated": 0} == first["summary"] | {"rotated": 0, "deferred": 0, "notDue": 3}
    for name, uid in uids.items():
        assert_rotated(stack, uid, name)


def test_the_budget_takes_the_most_overdue_first(stack, tight_budget):
    from conftest import age_rotation

    uids = [stack.add_pair(f"user{i}") for i in range(5)]
    stack.rotate(*uids)
    for days, uid in zip((31, 45, 38, 52, 34), uids, strict=True):  # 4 days apart: more than due.py's 3-day spread
        age_rotation(stack, uid, days)
    results = by_uid(scheduled(stack)["results"])
    assert {uid for uid, r in results.items() if r["status"] == "rotated"} == {uids[1], uids[2], uids[3]}


def test_a_request_beyond_what_the_pace_allows_in_29_s_queues_the_rest(stack, monkeypatch):
    """At 10 requests per minute one device rotates one record in 20 s: the other two are queued, then rotated by
    the queue's worker although they are not due (a caller asked), but not again by a second delivery."""
    local = LocalQueue(boto3.client("sqs")).create()
    monkeypatch.setenv("ROTATION_QUEUE_URL", local.url)
    monkeypatch.setenv("KEEPER_REQUESTS_PER_MINUTE", "10")
    monkeypatch.setenv("KEEPER_PACING", "false")
    uids = [stack.add_pair(f"user{i}") for i in range(3)]
    stack.rotate(*uids)  # rotated once: none is due
    before = {uid: stack.keeper_password(uid) for uid in uids}
    results = stack.rotate(*uids)
    assert [r["status"] for r in results] == ["rotated", "queued", "queued"]
    assert "29 s" in results[1]["error"]["message"] if "error" in results[1] else True
    event = local.receive_event()
    assert stack.invoke(event) == {"batchItemFailures": []}
    for n, uid in enumerate(uids):
        assert_rotated(stack, uid, f"user{n}", previous=before[uid])
    again = {uid: stack.keeper_password(uid) for uid in uids}
    assert stack.invoke(event) == {"batchItemFailures": []}  # redelivered: rotated since it was planned
    assert {uid: stack.keeper_password(uid) for uid in uids} == again


def second_device(stack, monkeypatch) -> str:
    """A second client device of the same application, in its own secret; KSM_CONFIG_SECRET_ID lists both."""
    secret = "keeper-iam-rotator/ksm-config-2"
    boto3.client("secretsmanager").create_secret(Name=secret, SecretString=stack.keeper.client_config())
    monkeypatch.setenv("KSM_CONFIG_SECRET_ID", f"{CONFIG_SECRET},{secret}")
    return secret


def test_records_spread_over_two_devices_and_each_device_is_read_once(stack, monkeypatch):
    second_device(stack, monkeypatch)
    users = {f"user{i}": stack.add_pair(f"user{i}") for i in range(12)}
    results = by_uid(scheduled(stack)["results"])
    assert {r["status"] for r in results.values()} == {"rotated"}
    for name, uid in users.items():
        assert_rotated(stack, uid, name)
    clients = stack.keeper.vault.throttle_state()["requests"]
    assert len(clients) == 2  # both devices staged and committed records
    assert all(calls.get("update_secret", 0) >= 2 for calls in clients.values())
    assert sum(calls.get("update_secret", 0) for calls in clients.values()) == 12


def test_a_bad_secret_in_the_list_fails_only_what_needs_it(stack, monkeypatch):
    monkeypatch.setenv("KSM_CONFIG_SECRET_ID", f"{CONFIG_SECRET},keeper-iam-rotator/no-such-secret")
    users = {f"user{i}": stack.add_pair(f"user{i}") for i in range(3)}
    response = scheduled(stack)
    results = by_uid(response["results"])
    for name, uid in users.items():
        assert code(results[uid]) == ("rotated", "")
        assert_rotated(stack, uid, name)
    failure = results["*"]
    assert code(failure) == ("failed", "ksm_config_unreadable")
    assert "keeper-iam-rotator/no-such-secret" in failure["error"]["message"]
    assert failure["accountId"] == ACCOUNT
    missing = stack.rotate("AAAAAAAAAAAAAAAAAAAAAA")[0]  # a record no readable device sees
    assert code(missing) == ("failed", "ksm_config_unreadable")
    assert "keeper-iam-rotator/no-such-secret" in missing["error"]["message"]


def test_a_record_only_one_application_sees_goes_through_that_applications_device(stack, monkeypatch):
    """Two KSM applications (two emulators): each record is read, staged and committed through the device that
    sees it, whichever device its uid would prefer."""
    monkeypatch.setenv("KSM_SKIP_VERIFY", "true")  # two emulators, two self-signed CAs
    with EmulatorServer() as other:
        theirs = other.vault.add_record(
            type="pamUser", title="x", fields=[{"type": "login", "value": ["x"]}], custom=[], folder=None
        )
        ours = stack.add_pair("alice")
        devices = Devices(
            [Device("a", KeeperVault(stack.keeper.client_config())), Device("b", KeeperVault(other.client_config()))]
        )
        found = devices.fetch([ours, theirs])
        assert set(found) == {ours, theirs}
        for uid, user in found.items():
            devices.stage(user, Secret(f"New-{uid}-Passw0rd!"), ACCOUNT, "arn:aws:iam::123456789012:user/x")
            devices.commit(uid)
        assert stack.keeper_password(ours) == f"New-{ours}-Passw0rd!"
        assert other.vault.committed(theirs)["fields"][1]["value"] == [f"New-{theirs}-Passw0rd!"]
        assert stack.keeper.vault.calls["update_secret"] == other.vault.calls["update_secret"] == 1
        assert stack.keeper.vault.calls["get_secret"] == other.vault.calls["get_secret"] == 1  # one read each
        assert (devices.peers_of(0), devices.peers_of(1)) == ((0,), (1,))  # two applications: batched apart


def test_a_queue_batch_naming_two_devices_of_one_application_is_read_once_and_written_through_both(stack, monkeypatch):
    """Every device of an application sees the same records: one read serves the batch, and each record is staged
    and committed through the device its message names, so both devices carry their share of the writes."""
    second_device(stack, monkeypatch)
    users = {f"user{i}": stack.add_pair(f"user{i}") for i in range(5)}
    (template,) = load_event("sqs-rotation.json")["Records"]
    planned = time.time()
    event = {
        "Records": [
            template | {"messageId": f"m{n}", "body": Handoff(uid, "", planned, device=int(n < 2)).body()}
            for n, uid in enumerate(users.values())
        ]
    }
    stack.keeper.vault.reset_calls()  # never rotated: all due
    assert stack.invoke(event) == {"batchItemFailures": []}
    assert stack.keeper.vault.calls["get_secret"] == 1
    requests = stack.keeper.vault.throttle_state()["requests"].values()
    assert sorted(calls.get("update_secret", 0) for calls in requests) == [2, 3]
    assert sorted(calls.get("finalize_secret_update", 0) for calls in requests) == [2, 3]
    for name, uid in users.items():
        assert_rotated(stack, uid, name)
