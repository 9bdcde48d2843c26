"""Planning a run: which records it looks at, which of them are due, which rotations it must finish first, and
what vouches for unbound records. A plan changes nothing; a failure that affects every record (the journal of a
recovery run, STS, the KSM config, Keeper) ends the run here, before any record is touched.

What the trigger decides (request.py):
- RECOVER: only the records whose rotation a dead run left open in the journal (an idle run makes one Scan, no
  other call);
- SCHEDULE: every pamUser record in scope that is due (due.py), plus every open rotation, in one journal Scan;
  (`rotate_all`, the CLI's `rotate --all`: every record in scope, due or not);
- API, INVOKE, QUEUE: the records the request names.

Fail closed: a scheduled or recovery run that cannot read the journal rotates and queues nothing. An unreadable journal
says nothing about what is due, nor which rotations are unfinished; treating it as "never rotated" would rotate the
whole fleet every day while the fault lasts. Every record fails `journal_unavailable`, which the failure metric alarms.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import due
from .binding import Vouched
from .context import Invocation, RunContext
from .errors import (
    AWS_ERRORS,
    JournalUnavailableError,
    KeeperCallError,
    KsmConfigUnavailableError,
    RunFailedError,
    describe_aws_error,
)
from .journal import Entry, Journal
from .keeper import PamUser, RecordType, vault_for
from .request import RotationRequest, Trigger
from .results import WHOLE_RUN, Code, Outcome, RecordResult, Status

Work = PamUser | RecordResult  # a record to rotate, or the result it already has
NOT_SHARED = "no such record is shared with the KSM application"
RECORD_GONE = "the journal holds an unfinished rotation for {arn}, but its record is no longer shared with the KSM app"


@dataclass(frozen=True)
class Plan:
    """What a run will do: `work` in order, the records whose unfinished rotations come `first` (never handed off),
    what vouches for unbound records, whether records beyond InlineRotationLimit go to the queue, and how many
    records in scope were left alone because they are not due."""

    context: RunContext
    work: list[Work]
    first: frozenset[str]
    vouched: Vouched
    hand_off: bool
    not_due: int = 0


def plan(request: RotationRequest, invocation: Invocation) -> Plan | Outcome:
    """The run's plan, or its whole outcome when there is nothing to do or nothing can be done."""
    journal = invocation.journal()
    try:
        unfinished = _expired_entries(journal) if request.trigger is Trigger.RECOVER else []
        if request.trigger is Trigger.RECOVER and not unfinished:
            return Outcome()
        context = _connect(request, invocation, journal)
        return _select(context, unfinished)
    except RunFailedError as failure:
        return _whole_run_failed(request, invocation, failure)


def _expired_entries(journal: Journal) -> list[Entry]:
    """Open entries whose lease ran out: a live lease is a rotation in progress, not one to finish."""
    now = time.time()
    try:
        return [entry for entry in journal.open_entries() if entry.lease_until <= now]
    except JournalUnavailableError as error:
        raise RunFailedError(Code.JOURNAL_UNAVAILABLE, str(error)) from None


def _connect(request: RotationRequest, invocation: Invocation, journal: Journal) -> RunContext:
    """The hub account's identity and the Keeper connection: the two things every record needs."""
    hub = invocation.hub()
    try:
        account_id = hub.account_id
    except AWS_ERRORS as error:
        raise RunFailedError(Code.IAM_ERROR, f"STS GetCallerIdentity failed: {describe_aws_error(error)}") from None
    try:  # KeeperVault only parses the config: no Keeper call yet
        vault = vault_for(invocation.load_ksm_config(), invocation.settings.keeper_timeout)
    except (KsmConfigUnavailableError, KeeperCallError) as error:
        raise RunFailedError(Code.KSM_CONFIG_UNREADABLE, str(error), account_id) from None
    return RunContext(invocation, request, hub, vault, journal)


def _select(context: RunContext, unfinished: list[Entry]) -> Plan:
    request, settings = context.request, context.settings
    try:
        if request.trigger is Trigger.RECOVER:
            work, not_due = _records_of(unfinished, context), 0
        elif request.trigger is Trigger.SCHEDULE:
            work, unfinished, not_due = _scheduled(context)
        else:
            work, not_due = _named(request.record_uids, context), 0
    except KeeperCallError as error:
        message = f"{error}; nothing was changed"
        raise RunFailedError(Code.KEEPER_UNAVAILABLE, message, context.hub.account_id) from None
    first = frozenset(entry.record_uid for entry in unfinished)
    vouched = Vouched(
        explicit=request.trigger.operator_named,
        folder_uids=settings.folder_uids,
        unfinished_record_uids=first,
        planned_record_uids=request.vouched_uids,
    )
    hand_off = request.trigger is Trigger.SCHEDULE and bool(settings.rotation_queue_url) and not context.dry_run
    return Plan(context, work, first, vouched, hand_off, not_due)


def _named(uids: Sequence[str], context: RunContext) -> list[Work]:
    """The requested records in request order, and a result for each one Keeper does not return."""
    found = context.vault.fetch(uids)
    hub = context.account_for(None)
    return [
        found.get(uid)
        or RecordResult(uid, Status.SKIPPED, account_id=hub, code=Code.RECORD_NOT_FOUND, message=NOT_SHARED)
        for uid in uids
    ]


def _scheduled(context: RunContext) -> tuple[list[Work], list[Entry], int]:
    """Every pamUser record in scope that is due, and every unfinished rotation (in scope or not; none in a dry
    run), from one journal Scan and one Keeper read."""
    entries = _journal_entries(context)
    in_scope: list[Work] = [
        user for user in context.vault.fetch_all(context.settings.folder_uids) if user.type == RecordType.PAM_USER
    ]
    unfinished = [] if context.dry_run else [entry for entry in entries if entry.open]
    always = {entry.record_uid for entry in unfinished}
    period = context.settings.rotation_period_days
    if context.request.rotate_all:
        work, not_due = in_scope, 0
    else:
        work, not_due = due.select(in_scope, due.last_rotations(entries), period, time.time(), always=always)
    in_run = {item.uid if isinstance(item, PamUser) else item.record_uid for item in work}
    work += _records_of([entry for entry in unfinished if entry.record_uid not in in_run], context)
    return work, unfinished, not_due


def _journal_entries(context: RunContext) -> list[Entry]:
    """The journal's every item, or the end of the run: without it nothing is known to be due or unfinished."""
    try:
        return list(context.journal.entries())
    except JournalUnavailableError as error:
        message = f"{error}; without the journal nothing is known to be due or unfinished: nothing was changed"
        raise RunFailedError(Code.JOURNAL_UNAVAILABLE, message, context.hub.account_id) from None


def _records_of(entries: list[Entry], context: RunContext) -> list[Work]:
    """The records that own these open journal entries, in one Keeper read. An entry whose record is gone is
    reported, never dropped: IAM may hold its password."""
    found = context.vault.fetch(sorted({entry.record_uid for entry in entries})) if entries else {}
    return [
        found.get(entry.record_uid)
        or RecordResult(
            entry.record_uid,
            Status.FAILED,
            account_id=context.account_for(entry),
            code=Code.PASSWORD_IN_JOURNAL,
            message=RECORD_GONE.format(arn=entry.user_arn),
        )
        for entry in entries
    ]


def _whole_run_failed(request: RotationRequest, invocation: Invocation, failure: RunFailedError) -> Outcome:
    uids = request.record_uids or (WHOLE_RUN,)
    results = [
        RecordResult(uid, Status.FAILED, account_id=failure.account_id, code=failure.code, message=failure.message)
        for uid in uids
    ]
    for result in results:
        invocation.observe(result, 0.0)
    return Outcome(results)
