"""A fleet end to end (issue 11): three accounts, one of them allowed but without the target role; the scheduled run
plans and queues; warm handler processes work the queue as Lambda's SQS event source would, and one of them is
killed in the middle of a batch. Every password must end where Keeper says, and the refused account untouched."""

from __future__ import annotations

from rotator_sandbox.accounts import iam_password, roles_must_exist
from rotator_sandbox.fleet import Fleet, WarmWorker, drain, scheduled_event
from rotator_sandbox.queue import LocalQueue

from .conftest import record_outcome, run_handler_as_the_function_role

RECORDS = 210
INLINE = 20
# The killed batch's messages come back after the visibility timeout; by then its leases (5 s) have run out.
WORKER_ENV = {"SANDBOX_REMAINING_MS": "5000", "JOURNAL_LEASE_MARGIN_SECONDS": "0"}


def test_a_fleet_rotates_through_the_queue_despite_a_missing_role_and_a_killed_worker(sb):
    with roles_must_exist():
        fleet = Fleet(sb, accounts=3, missing_role=(f"{200_000_000_002:012d}",))
        refused = fleet.missing_role[0]
        run_handler_as_the_function_role(sb, {"TargetAccountIds": ",".join(fleet.members)})  # may assume their roles
        fleet.seed(RECORDS)
        queue = LocalQueue(sb.aws("sqs"), visibility_timeout=15).create()
        env = fleet.env(queue, inline_limit=INLINE) | WORKER_ENV

        plan = sb.invoke(scheduled_event(), env)
        assert plan.exit_code == 0, plan.stderr[-2000:]
        by_account = {u.uid: u.account for u in fleet.users}
        refusals = {r["error"]["code"] for r in plan.results if by_account[r["recordUid"]] == refused}
        assert refusals == {"assume_role_failed"}
        assert plan.result["summary"] == {  # notDue 0: none of them was ever rotated
            "rotated": INLINE,
            "queued": RECORDS * 2 // 3 - INLINE,
            "failed": RECORDS // 3,
            "skipped": 0,
            "planned": 0,
            "notDue": 0,
            "deferred": 0,
        }

        killed = WarmWorker(sb, env | {"SANDBOX_CRASH_AFTER": "aws:iam:UpdateLoginProfile#15"})  # its 2nd batch
        batches = drain(queue, [killed, WarmWorker(sb, env)])

    assert killed.deaths == 1
    journaled = set(sb.journal_passwords())
    for user in fleet.users:
        if user.account == refused:
            assert iam_password(user.account, user.name) == user.initial_password == sb.keeper_password(user.uid)
        else:
            assert fleet.agrees(user, journaled), user
            assert iam_password(user.account, user.name) != user.initial_password
    assert queue.depth() == 0
    assert queue.depth(queue.dlq_url) == 0
    record_outcome(f"fleet: {RECORDS} records, 3 accounts, queue", "-", f"{batches} batches, 1 worker killed, 0 split")
