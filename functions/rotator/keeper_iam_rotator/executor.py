"""Carrying out a plan: bind every record (step 1), settle duplicate claims, hand what exceeds InlineRotationLimit
to the rotation queue, rotate the rest (steps 2-8, rotation.py), and report each record as it finishes.

Records are independent and run in parallel (ROTATION_CONCURRENCY); everything that must not depend on thread
timing (duplicates, the hand-off) is decided between the parallel steps, on one thread.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import suppress
from typing import TypeVar

from . import drift, fanout
from .accounts import Accounts, account_of
from .binding import (
    IAM_USER_ARN,
    Claim,
    Vouched,
    bind,
    bind_unfinished,
    duplicate_halt,
    settle_duplicates,
    still_names,
)
from .context import RunContext
from .errors import JournalTamperedError, JournalUnavailableError, KeeperCallError, RotationHaltedError
from .iam import IamUser
from .keeper import PamUser
from .planner import Plan, Work
from .request import Trigger
from .results import Code, Outcome, RecordResult, Status
from .rotation import rotate

log = logging.getLogger(__name__)
Step = Claim | RecordResult
R = TypeVar("R")


def execute(plan: Plan) -> Outcome:
    """Bind, settle, hand off, rotate, observe: one result per item of the plan, in the plan's order."""
    context = plan.context
    accounts = _accounts(plan)
    with ThreadPoolExecutor(max_workers=context.settings.concurrency) as pool:
        steps = list(pool.map(lambda item: _bind(item, context, accounts, plan), plan.work))
        steps = _settle_duplicates(steps, context)
        if plan.inline_limit is not None:
            steps = _hand_off(steps, plan, plan.inline_limit)
        results = _rotate_all(pool, steps, context, plan.findings)
    return Outcome(results, plan.not_due, plan.deferred)


def _accounts(plan: Plan) -> Accounts:
    """The accounts, told how many users step 1 looks up in each, so each account's directory is read once (one
    ListUsers page per 1,000 users) wherever that is cheaper than a GetUser per record: any run, the queue's batches
    of 25 as well as a planning run. What the binding is checked against is the same either way: the ARN IAM
    returns in this invocation, never one carried over from another (a queue message carries record uids only).
    The hub's password policy is read once before records run in parallel when a record may rotate there (a
    failure is left for each record to report)."""
    lookups = _lookups(plan)
    accounts = plan.context.accounts()
    accounts.expect_lookups(lookups)
    if lookups[accounts.hub.account_id]:
        with suppress(Exception):
            accounts.hub.password_policy  # noqa: B018 - a cached property: reading it caches it
    return accounts


def _lookups(plan: Plan) -> Counter[str]:
    """Account id -> the records whose IAM user step 1 will look up there: an unfinished rotation's user, the user
    a bound record's ARN names, or the hub's user a vouched login names. Only an estimate of calls (records bind
    refuses for other reasons are counted too): it decides how users are looked up, never whether they are."""
    hub = plan.context.hub.account_id
    lookups = Counter[str]()
    for item in plan.work:
        if isinstance(item, PamUser):
            owed = plan.unfinished.get(item.uid)
            account = account_of(owed) if owed is not None else _lookup_account(item, hub, plan.vouched)
            if account is not None:
                lookups[account] += 1
    return lookups


def _lookup_account(user: PamUser, hub: str, vouched: Vouched) -> str | None:
    arn = IAM_USER_ARN.fullmatch(user.distinguished_name)
    if arn is not None:
        return arn["account"]
    return hub if not user.distinguished_name and user.login and vouched.covers(user) else None


def _bind(item: Work, context: RunContext, accounts: Accounts, plan: Plan) -> Step:
    """Step 1 for one record (to the user its unfinished rotation names, if it has one); a record with a result
    already keeps it."""
    if isinstance(item, RecordResult):
        return item
    owed = plan.unfinished.get(item.uid)
    if owed is not None:
        return _guarded(item.uid, account_of(owed), lambda: bind_unfinished(item, owed, accounts))
    return _guarded(item.uid, context.account_for(item), lambda: bind(item, accounts, plan.vouched))


def _settle_duplicates(steps: list[Step], context: RunContext) -> list[Step]:
    """One record per IAM user (binding.settle_duplicates): each loser becomes a `duplicate_user` result."""
    claims = [step for step in steps if isinstance(step, Claim)]
    losers = settle_duplicates(
        claims, lambda arn: _journal_owner(context, arn), lambda uid, target: _names(context, uid, target)
    )
    return [
        _halted(step.user.uid, step.account_id, duplicate_halt(losers[step.user.uid], step.target), step.target.name)
        if isinstance(step, Claim) and step.user.uid in losers
        else step
        for step in steps
    ]


def _journal_owner(context: RunContext, user_arn: str) -> str | None:
    try:
        return context.journal.owner_of(user_arn)
    except (JournalUnavailableError, JournalTamperedError) as error:
        # fall back to the claim order; step 4's conditional write guards (and reports) the item itself
        log.warning("could not read the journal's owner of a contested user", extra={"error": str(error)})
        return None


def _names(context: RunContext, record_uid: str, target: IamUser) -> bool:
    try:
        return still_names(context.vault, record_uid, target)
    except KeeperCallError:  # undecided here: step 4 asks Keeper again and fails the record if it still cannot
        return False


def _hand_off(steps: list[Step], plan: Plan, limit: int) -> list[Step]:
    """Beyond `limit`, bound records go to the rotation queue (fanout.py), each naming the client device it was
    read through, batched by KSM application; unfinished ones stay here."""
    context = plan.context
    queue = fanout.RotationQueue(context.invocation.clients("sqs"), context.settings.rotation_queue_url)
    requested = context.request.trigger is not Trigger.SCHEDULE
    return fanout.hand_off(
        steps,
        queue,
        limit,
        plan.first,
        fanout.Plan(plan.planned_at, context.vault.index_of, requested, context.vault.peers_of),
    )


def _rotate_all(
    pool: ThreadPoolExecutor, steps: list[Step], context: RunContext, findings: Mapping[str, drift.Finding]
) -> list[RecordResult]:
    """Steps 2-8 for every claim, in parallel; each record is reported (observed) on this thread as it finishes,
    with what drifted when it is rotated because of drift."""
    rotation, dry_run = context.rotation(forced=findings.keys()), context.dry_run

    def one(step: Step) -> tuple[RecordResult, float]:
        started = time.monotonic()
        if isinstance(step, RecordResult):
            return drift.annotate(step, findings.get(step.record_uid)), 0.0
        result = _guarded(step.user.uid, step.account_id, lambda: rotate(step, rotation, dry_run))
        return drift.annotate(result, findings.get(step.user.uid)), time.monotonic() - started

    futures: list[Future[tuple[RecordResult, float]]] = [pool.submit(one, step) for step in steps]
    for done in as_completed(futures):
        context.invocation.observe(*done.result())
    return [future.result()[0] for future in futures]


def _guarded(uid: str, account_id: str, step: Callable[[], R]) -> R | RecordResult:
    """Run one record's step: its halt becomes the record's result, and one record's bug must not stop the others
    (the journal keeps whatever it had reached)."""
    try:
        return step()
    except RotationHaltedError as halt:
        return _halted(uid, account_id, halt)
    except Exception as error:
        log.exception("unexpected error rotating a record", extra={"record_uid": uid})
        message = f"unexpected {type(error).__name__}; see the function log"
        return RecordResult(uid, Status.FAILED, account_id=account_id, code=Code.INTERNAL_ERROR, message=message)


def _halted(uid: str, account_id: str, halt: RotationHaltedError, user_name: str | None = None) -> RecordResult:
    return RecordResult(uid, halt.status, user_name, account_id, halt.code, halt.message)
