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
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

from . import budget, drift, due
from .binding import Vouched
from .context import Invocation, RunContext
from .devices import Device, Devices
from .errors import (
    AWS_ERRORS,
    JournalTamperedError,
    JournalUnavailableError,
    KeeperCallError,
    KeeperThrottledError,
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
CLI_CONFIG = "the KSM config"  # the one device of a CLI run (its config comes from a file or the environment)
RECORD_GONE = "the journal holds an unfinished rotation for {arn}, but its record is no longer shared with the KSM app"


@dataclass(frozen=True)
class Plan:
    """What a run will do: `work` in order; the records whose unfinished rotations come first (never handed off),
    each with the user its open journal entry names (the user recovery binds it to); what vouches for unbound
    records; how many bound records it rotates itself before handing the rest to the queue (None: all); how many
    records in scope were left alone because they are not due, or deferred to a later run by Keeper's budget; when
    the plan was made (what a hand-off carries); and what drifted (drift.py) for the records it rotates because of
    it (rotated here, never handed off)."""

    context: RunContext
    work: list[Work]
    unfinished: Mapping[str, str]  # record uid -> the user ARN of its open journal entry
    vouched: Vouched
    inline_limit: int | None
    not_due: int = 0
    deferred: int = 0
    planned_at: float = 0.0
    findings: Mapping[str, drift.Finding] = field(default_factory=dict)

    @property
    def first(self) -> frozenset[str]:
        return frozenset(self.unfinished) | self.findings.keys()


class Selection(NamedTuple):
    """The records a trigger selects (planner._work): the work, its unfinished rotations, and what was left out."""

    work: list[Work]
    unfinished: list[Entry]
    not_due: int = 0
    findings: Mapping[str, drift.Finding] = MappingProxyType({})
    deferred: int = 0


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
    """The hub account's identity and the Keeper client devices: the two things every record needs. A device's
    config must point at the deployment's Keeper (trust.py) before a vault is built from it; a device that cannot be
    used serves nothing (devices.py), and the run fails only when none can."""
    hub = invocation.hub()
    try:
        account_id = hub.account_id
    except AWS_ERRORS as error:
        raise RunFailedError(Code.IAM_ERROR, f"STS GetCallerIdentity failed: {describe_aws_error(error)}") from None
    sources = tuple(dict.fromkeys(invocation.settings.ksm_config_secret_ids or (CLI_CONFIG,)))
    devices = Devices([_device(source, invocation, len(sources) > 1) for source in sources], request.devices)
    if not devices.usable:
        first = devices.all[0]
        raise RunFailedError(first.code or Code.KSM_CONFIG_UNREADABLE, first.problem, account_id)
    pacer = invocation.pacer()
    for vault in devices.vaults():
        vault.pace(pacer)
    return RunContext(invocation, request, hub, devices, journal)


def _device(secret_id: str, invocation: Invocation, named: bool) -> Device:
    """One client device's vault (KeeperVault only parses the config: no Keeper call yet), or why there is none
    (`named`: the problem names its secret, one of several)."""
    settings, prefix = invocation.settings, f"{secret_id}: " if named else ""
    try:
        config = invocation.load_ksm_config(secret_id)
        require_trusted(config, settings.keeper_region)
        return Device(secret_id, vault_for(config, settings.keeper_timeout))
    except KsmConfigUntrustedError as error:
        message = f"{prefix}{error}; nothing was sent to it and nothing was changed"
        return Device(secret_id, code=Code.KSM_CONFIG_UNTRUSTED, problem=message)
    except (KsmConfigUnavailableError, KeeperCallError) as error:
        return Device(secret_id, code=Code.KSM_CONFIG_UNREADABLE, problem=f"{prefix}{error}")


def _select(context: RunContext, unfinished: list[Entry], tampered: list[RecordResult]) -> Plan:
    request, settings = context.request, context.settings
    try:
        selection = _work(context, unfinished, tampered)
    except KeeperThrottledError as error:
        message = f"{error}; nothing was changed, the next run tries again"
        raise RunFailedError(Code.KEEPER_THROTTLED, message, context.hub.account_id) from None
    except KeeperCallError as error:
        message = f"{error}; nothing was changed"
        raise RunFailedError(Code.KEEPER_UNAVAILABLE, message, context.hub.account_id) from None
    owed = {entry.record_uid: entry.user_arn for entry in reversed(selection.unfinished)}  # one per record
    return Plan(
        context,
        selection.work,
        owed,
        Vouched(explicit=request.bind, folder_uids=settings.folder_uids),
        _inline_limit(context),
        selection.not_due,
        selection.deferred,
        planned_at=time.time(),
        findings=selection.findings,
    )


def _inline_limit(context: RunContext) -> int | None:
    """How many bound records the run rotates itself before handing the rest to the queue (None: all). The
    schedule keeps InlineRotationLimit; a caller's request what its devices can rotate within API Gateway's 29 s at
    their pace (budget.py), unless it binds (binding needs the caller: never queued)."""
    request, settings = context.request, context.settings
    if not settings.rotation_queue_url or context.dry_run:
        return None
    if request.trigger is Trigger.SCHEDULE:
        return settings.inline_rotation_limit
    if request.trigger in {Trigger.API, Trigger.INVOKE} and not request.bind:
        return budget.within_a_request(settings.keeper_limits, len(context.vault.usable))
    return None


def _within_budget(
    selected: list[Work], always: set[str], last: dict[str, float], context: RunContext
) -> tuple[list[Work], int]:
    """The scheduled run's records cut to what its devices can rotate before the next run (budget.py), most
    overdue first; unfinished and drifted records (`always`) always stay. Returns the work and how many due records
    were deferred to a later run."""
    settings = context.settings
    allowed = budget.per_scheduled_run(settings.keeper_limits, len(context.vault.usable), settings.schedule_period)
    records = [item for item in selected if isinstance(item, PamUser)]
    if len(records) <= allowed:
        return selected, 0
    period, now = settings.rotation_period_days, time.time()
    ranked = sorted(
        (user for user in records if user.uid not in always), key=lambda user: -due.overdue(user, last, period, now)
    )
    room = max(allowed - sum(user.uid in always for user in records), 0)
    keep = always | {user.uid for user in ranked[:room]}
    kept = [item for item in selected if not isinstance(item, PamUser) or item.uid in keep]
    deferred = len(selected) - len(kept)
    log.warning("Keeper budget of this run reached: due records deferred", extra={"deferred": deferred})
    return kept, deferred


def _unusable_devices(context: RunContext) -> list[Work]:
    """A failure per client device whose secret could not be used: only the records it alone sees wait for it."""
    return [
        RecordResult(WHOLE_RUN, Status.FAILED, account_id=context.account_for(None), code=d.code, message=d.problem)
        for d in context.vault.unusable
    ]


def _work(context: RunContext, unfinished: list[Entry], tampered: list[RecordResult]) -> Selection:
    """The run's work by trigger, with its unfinished rotations, records not due or deferred, drift findings."""
    trigger = context.request.trigger
    if trigger is Trigger.RECOVER:
        return Selection([*tampered, *_records_of(unfinished, context), *_unusable_devices(context)], unfinished)
    if trigger is Trigger.SCHEDULE:
        return _scheduled(context)
    if trigger is Trigger.DRIFT:
        work, findings = drift.plan_change(context)
        return Selection(work, [], findings=findings)
    return Selection(_named(context.request.record_uids, context), [])


def _named(uids: Sequence[str], context: RunContext) -> list[Work]:
    """The requested records in request order, and a result for each one Keeper does not return (a failure when
    a device that could not be used may be the one that sees it)."""
    found = context.vault.fetch(uids, links=True)
    hub, unusable, note = context.account_for(None), context.vault.unusable, context.vault.unreadable_note()
    missing = (
        RecordResult(WHOLE_RUN, Status.FAILED, account_id=hub, code=unusable[0].code, message=NOT_SHARED + note)
        if unusable
        else RecordResult(WHOLE_RUN, Status.SKIPPED, account_id=hub, code=Code.RECORD_NOT_FOUND, message=NOT_SHARED)
    )
    return [found.get(uid) or replace(missing, record_uid=uid) for uid in uids]


def _scheduled(context: RunContext) -> Selection:
    """Every pamUser record in scope that is due or drifted, within the run's Keeper budget, and every unfinished
    rotation (in scope or not; none in a dry run), from one Keeper read per device, one journal Scan and a credential
    report per account."""
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
    period, last = context.settings.rotation_period_days, due.last_rotations(entries)
    if context.request.rotate_all:
        selected, not_due = list(in_scope), 0
    else:
        selected, not_due = due.select(in_scope, last, period, time.time(), always=always)
    kept, deferred = _within_budget(list[Work](selected), always, last, context)
    work, not_due = drifted.complete(kept, not_due)
    in_run = {item.uid if isinstance(item, PamUser) else item.record_uid for item in work}
    work += _records_of([entry for entry in unfinished if entry.record_uid not in in_run], context)
    return Selection([*tampered, *work, *_unusable_devices(context)], unfinished, not_due, drifted.findings, deferred)


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
            message=RECORD_GONE.format(arn=entry.user_arn) + context.vault.unreadable_note(),
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
