"""Fail closed: a run that cannot read the journal rotates and queues nothing, and says so.

The journal is what tells the scheduled run which records are due and which rotations a dead run left open. When
its Scan fails (a policy edit that denies it, DynamoDB answering 5xx past botocore's retries), the run must not
guess: "never rotated" would rotate the whole fleet every day while the fault lasts. It answers `failed` /
`journal_unavailable` (one result for the whole run, counted by RotationFailed, which RotationFailedAlarm watches)
and changes nothing in IAM, in Keeper, in the journal or on the queue.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

import app  # noqa: F401 - imported before capsys replaces stdout, so Powertools binds to pytest's stream
from rotator_sandbox.queue import LocalQueue
from rotator_sandbox.stack import load_event
from test_metrics_match_alarms import emitted_metrics

from conftest import _clear_caches
from faults import AwsFaults

RECORDS = 6
SCAN_FAULTS = {
    "AccessDenied after a policy edit": ("AccessDeniedException", 400, 1),
    "6 consecutive 5xx": ("InternalServerError", 500, 6),  # botocore's standard mode gives up after 5 attempts
}


def scheduled(stack) -> dict:
    return stack.invoke(load_event("scheduled.json") | {"id": str(uuid.uuid4())})


def state(stack, users: dict[str, str]) -> tuple:
    """Everything a run could change: IAM's and Keeper's passwords, nothing staged, the journal's items."""
    boto3.setup_default_session()  # drops any fault still armed: the test's own Scan must reach moto
    passwords = {name: (stack.iam_password(name), stack.keeper_password(uid)) for name, uid in users.items()}
    staged = [uid for uid in users.values() if stack.keeper.vault.staged(uid) is not None]
    journal = sorted(json.dumps(item, sort_keys=True, default=str) for item in stack.journal_items())
    return passwords, staged, journal


@pytest.fixture
def rotated_once(stack) -> dict[str, str]:
    """RECORDS records rotated a moment ago: none of them is due."""
    users = {f"user{i}": stack.add_pair(f"user{i}") for i in range(RECORDS)}
    assert {r["status"] for r in stack.rotate(*users.values())} == {"rotated"}
    assert scheduled(stack)["summary"]["notDue"] == RECORDS  # the journal, when readable, says so
    return users


def arm_scan_fault(code: str, status: int, times: int) -> None:
    AwsFaults().fail("dynamodb", "Scan", code, status=status, times=times)
    _clear_caches()  # faults reach clients created after they were armed


@pytest.mark.parametrize("fault", SCAN_FAULTS.values(), ids=SCAN_FAULTS.keys())
def test_a_scheduled_run_that_cannot_read_the_journal_changes_nothing(stack, rotated_once, capsys, fault):
    before = state(stack, rotated_once)
    capsys.readouterr()
    arm_scan_fault(*fault)

    answer = scheduled(stack)

    assert answer["results"] == [
        {
            "recordUid": "*",
            "status": "failed",
            "accountId": "123456789012",
            "error": {
                "code": "journal_unavailable",
                "message": f"DynamoDB Scan failed: {fault[0]}; without the journal nothing is known to be due or "
                "unfinished: nothing was changed",
            },
        }
    ]
    assert answer["summary"] == {
        "rotated": 0,
        "planned": 0,
        "skipped": 0,
        "failed": 1,
        "queued": 0,
        "notDue": 0,
        "deferred": 0,
    }
    assert state(stack, rotated_once) == before
    metrics = {name for _, name, _ in emitted_metrics(capsys.readouterr().out)}
    assert {"RotationFailed", "RotationFailedByCode"} <= metrics  # RotationFailedAlarm's metric
    assert "RotationSucceeded" not in metrics


def test_a_fanning_out_run_that_cannot_read_the_journal_queues_nothing(stack, rotated_once, monkeypatch):
    queue = LocalQueue(boto3.client("sqs")).create()
    monkeypatch.setenv("ROTATION_QUEUE_URL", queue.url)
    monkeypatch.setenv("INLINE_ROTATION_LIMIT", "1")
    before = state(stack, rotated_once)
    arm_scan_fault("AccessDeniedException", 400, 1)

    answer = scheduled(stack)

    assert [(r["status"], r["error"]["code"]) for r in answer["results"]] == [("failed", "journal_unavailable")]
    assert queue.depth() == 0
    assert state(stack, rotated_once) == before


def test_a_recovery_run_that_cannot_read_the_journal_changes_nothing(stack, rotated_once):
    before = state(stack, rotated_once)
    arm_scan_fault("InternalServerError", 500, 6)

    answer = stack.invoke({"action": "recover"})

    assert [(r["recordUid"], r["status"], r["error"]["code"]) for r in answer["results"]] == [
        ("*", "failed", "journal_unavailable")
    ]
    assert state(stack, rotated_once) == before


def test_a_queue_batch_without_the_journal_changes_nothing_and_comes_back(stack, rotated_once):
    """A queued record is named, so its run needs no Scan; without the journal's lease (step 4) it must still not
    change IAM: every message is reported failed, and SQS delivers it again."""
    before = state(stack, rotated_once)
    faults = AwsFaults()
    for operation in ("GetItem", "PutItem", "Scan"):
        faults.fail("dynamodb", operation, "AccessDeniedException", times=100)
    _clear_caches()
    body = {"eventSource": "aws:sqs", "receiptHandle": "r", "attributes": {}, "messageAttributes": {}}
    event = {
        "Records": [
            body | {"messageId": uid, "body": json.dumps({"recordUid": uid, "accountId": "123456789012"})}
            for uid in rotated_once.values()
        ]
    }

    answer = stack.invoke(event)

    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == sorted(rotated_once.values())
    assert state(stack, rotated_once) == before
