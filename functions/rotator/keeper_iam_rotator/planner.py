"""Planning a run: which records it looks at, which of them are due, which rotations it must finish first, and
what vouches for unbound records. A plan changes nothing; a failure that affects every record (the journal of a
recovery run, STS, the KSM config, Keeper) ends the run here, before any record is touched.

What the trigger decides (request.py):
- RECOVER: only the records whose rotation a dead run left open in the journal (an idle run makes one Scan, no
  other call);
- SCHEDULE: every pamUser record in scope that is due (due.py), plus every open rotation, in one journal Scan, plus
  the records whose password changed outside the rotator (reconcile.py);
- DRIFT: the record the journal says rotates the user CloudTrail saw change (drift.py);
  (`rotate_all`, the CLI's `rotate --all`: every record in scope, due or not);
- API, INVOKE, QUEUE: the records the request names.

Fail closed: a scheduled or recovery run that cannot read the journal rotates and queues nothing. An unreadable journal
says nothing about what is due, nor which rotations are unfinished; treating it as "never rotated" would rotate the
whole fleet every day while the fault lasts. Every record fails `journal_unavailable`, which the failure metric alarms.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import drift, due
from .binding import Vouched
from .context import Invocation, RunContext
from .errors import (
    AWS_ERRORS,
    JournalTamperedError,
    JournalUnavailableError,
    KeeperCallError,
    KsmConfigUnavailableError,
    KsmConfigUntrustedError,
    RunFailedError,
    describe_aws_error,
)
from .integrity import Verdict
from .journal import Entry, Journal
from .keeper import PamUser, RecordType, vault_for
from .reconcile import reconcile
from .request import RECORD_UID, RotationRequest, Trigger
from .results import WHOLE_RUN, Code, Outcome, RecordResult, Status
from .trust import require_trusted

log = logging.getLogger(__name__)

Work = PamUser | RecordResult  # a record to rotate, or the result it already has
NOT_SHARED = "no such record is shared with the KSM application"
RECORD_GONE = "the journal holds an unfinished rotation for {arn}, but its record is no longer shared with the KSM app"


@dataclass(frozen=True)
class Plan:
    """What a run will do: `work` in order; the records whose unfinished rotations come first (never handed off),
    each with the user its open journal entry names (the user recovery binds it to); what vouches for unbound
    records; whether records beyond InlineRotationLimit go to the queue; how many records in scope were left alone
    because they are not due; when the plan was made (what a hand-off carries); and what drifted (drift.py) for the
    records it rotates because of it (rotated here, never handed off)."""

    context: RunContext
    work: list[Work]
    unfinished: Mapping[str, str]  # record uid -> the user ARN of its open journal entry
    vouched: Vouched
    hand_off: bool
    not_due: int = 0
    planned_at: float = 0.0
    findings: Mapping[str, drift.Finding] = field(default_factory=dict)

    @property
    def first(self) -> frozenset[str]:
        return frozenset(self.unfinished) | self.findings.keys()


def plan(request: RotationRequest, invocation: Invocation) -> Plan | Outcome:
    """The run's plan, or its whole outcome when there is nothing to do or nothing can be done."""
    journal = invocation.journal()
    try:
        unfinished, tampered = _expired_entries(journal, invocation) if request.trigger is Trigger.RECOVER else ([], [])
        if request.trigger is Trigger.RECOVER and not unfinished:
            return _reported(tampered, invocation)
        context = _connect(request, invocation, journal)
        return _select(context, unfinished, tampered)
    except RunFailedError as failure:
        return _whole_run_failed(request, invocation, failure)


def _expired_entries(journal: Journal, invocation: Invocation) -> tuple[list[Entry], list[RecordResult]]:
    """Open entries whose lease ran out (a live lease is a rotation in progress, not one to finish), and a result
    for each open entry whose item fails its integrity check (never recovered). Signals StaleOpenEntries for open
    entries older than two recovery periods plus the lease (the function's timeout and margin): recovery should
    have finished them by then."""
    now = time.time()
    try:
        entries, tampered = _untampered(list(journal.open_entries()))
    except JournalUnavailableError as error:
        raise RunFailedError(Code.JOURNAL_UNAVAILABLE, str(error)) from None
    stale_after = 2 * invocation.settings.recovery_period + invocation.lease_seconds
    stale = [entry for entry in entries if now - entry.opened_at > stale_after]
    if stale:
        oldest = min(stale, key=lambda entry: entry.opened_at)
        log.warning(
            "open journal entries older than two recovery periods plus the lease",
            extra={
                "count": len(stale),
                "oldest_user_arn": oldest.user_arn[:200],
                "seconds": round(now - oldest.opened_at),
            },
        )
        invocation.signal("StaleOpenEntries", len(stale))
    return [entry for entry in entries if entry.lease_until <= now], tampered


def _untampered(entries: list[Entry]) -> tuple[list[Entry], list[RecordResult]]:
    """The entries that may be used, and a `journal_tampered` result for each of the others."""
    usable, tampered = [], []
    for entry in entries:
        if entry.integrity is Verdict.TAMPERED:
            tampered.append(_tampered(entry))
        else:
            usable.append(entry)
    return usable, tampered


def _tampered(entry: Entry) -> RecordResult:
    """A tampered item names a record and a user no one vouches for: quoted bounded, never acted on."""
    uid = entry.record_uid if RECORD_UID.fullmatch(entry.record_uid) else WHOLE_RUN
    message = str(JournalTamperedError(entry.user_arn))
    return RecordResult(uid, Status.FAILED, code=Code.JOURNAL_TAMPERED, message=message)


def _reported(results: list[RecordResult], invocation: Invocation) -> Outcome:
    for result in results:
        invocation.observe(result, 0.0)
    return Outcome(results)


def _connect(request: RotationRequest, invocation: Invocation, journal: Journal) -> RunContext:
    """The hub account's identity and the Keeper connection: the two things every record needs. The config must
    point at the deployment's Keeper (trust.py) before a vault is built from it."""
    hub = invocation.hub()
    try:
        account_id = hub.account_id
    except AWS_ERRORS as error:
        raise RunFailedError(Code.IAM_ERROR, f"STS GetCallerIdentity failed: {describe_aws_error(error)}") from None
    settings = invocation.settings
    try:  # KeeperVault only parses the config: no Keeper call yet
        config = invocation.load_ksm_config()
        require_trusted(config, settings.keeper_region)
        vault = vault_for(config, settings.keeper_timeout)
    except KsmConfigUntrustedError as error:
        message = f"{error}; nothing was sent to it and nothing was changed"
        raise RunFailedError(Code.KSM_CONFIG_UNTRUSTED, message, account_id) from None
    except (KsmConfigUnavailableError, KeeperCallError) as error:
        raise RunFailedError(Code.KSM_CONFIG_UNREADABLE, str(error), account_id) from None
    return RunContext(invocation, request, hub, vault, journal)


def _select(context: RunContext, unfinished: list[Entry], tampered: list[RecordResult]) -> Plan:
    request, settings = context.request, context.settings
    try:
        work, unfinished, not_due, findings = _work(context, unfinished, tampered)
    except KeeperCallError as error:
        message = f"{error}; nothing was changed"
        raise RunFailedError(Code.KEEPER_UNAVAILABLE, message, context.hub.account_id) from None
    owed = {entry.record_uid: entry.user_arn for entry in reversed(unfinished)}  # one per record: the first listed
    vouched = Vouched(explicit=request.bind, folder_uids=settings.folder_uids)
    hand_off = request.trigger is Trigger.SCHEDULE and bool(settings.rotation_queue_url) and not context.dry_run
    return Plan(context, work, owed, vouched, hand_off, not_due, planned_at=time.time(), findings=findings)


def _work(
    context: RunContext, unfinished: list[Entry], tampered: list[RecordResult]
) -> tuple[list[Work], list[Entry], int, drift.Findings]:
    """The run's work by trigger, with its unfinished rotations, records not due, and drift findings."""
    trigger = context.request.trigger
    if trigger is Trigger.RECOVER:
        return [*tampered, *_records_of(unfinished, context)], unfinished, 0, {}
    if trigger is Trigger.SCHEDULE:
        return _scheduled(context)
    if trigger is Trigger.DRIFT:
        work, findings = drift.plan_change(context)
        return work, [], 0, findings
    return _named(context.request.record_uids, context), [], 0, {}


def _named(uids: Sequence[str], context: RunContext) -> list[Work]:
    """The requested records in request order, and a result for each one Keeper does not return."""
    found = context.vault.fetch(uids, links=True)
    hub = context.account_for(None)
    return [
        found.get(uid)
        or RecordResult(uid, Status.SKIPPED, account_id=hub, code=Code.RECORD_NOT_FOUND, message=NOT_SHARED)
        for uid in uids
    ]


def _scheduled(context: RunContext) -> tuple[list[Work], list[Entry], int, drift.Findings]:
    """Every pamUser record in scope that is due or drifted, and every unfinished rotation (in scope or not; none in
    a dry run), from one Keeper read, one journal Scan and a credential report per account."""
    entries, tampered = _untampered(_journal_entries(context))  # read first: without it, nothing
    refused = {result.record_uid for result in tampered}  # the tampered items' records: reported, not rotated
    in_scope: list[PamUser] = [
        user
        for user in context.vault.fetch_all(context.settings.folder_uids, links=True)
        if user.type == RecordType.PAM_USER and user.uid not in refused
    ]
    unfinished = [] if context.dry_run else [entry for entry in entries if entry.open]
    drifted = reconcile(context, in_scope, entries)
    always = {entry.record_uid for entry in unfinished} | drifted.forced(context.settings.drift_action)
    period = context.settings.rotation_period_days
    if context.request.rotate_all:
        selected, not_due = list(in_scope), 0
    else:
        selected, not_due = due.select(in_scope, due.last_rotations(entries), period, time.time(), always=always)
    work, not_due = drifted.complete(list[Work](selected), not_due)
    in_run = {item.uid if isinstance(item, PamUser) else item.record_uid for item in work}
    work += _records_of([entry for entry in unfinished if entry.record_uid not in in_run], context)
    return [*tampered, *work], unfinished, not_due, drifted.findings


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
    return _reported(results, invocation)
