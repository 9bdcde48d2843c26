"""One invocation: fetch the records, rotate each independently, finish dead runs' rotations, report.

Shared by the Lambda entry point and the CLI; the AWS clients and the Keeper connection live as long as the
process (a warm Lambda container), the IAM facts (account id, password policy) as long as one invocation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config

from . import due, fanout
from .accounts import account_of, for_settings
from .binding import Vouched, duplicate_message, resolve_target, settle_duplicates
from .iam import IamGateway, IamUser, describe
from .journal import Entry, Journal, JournalError
from .keeper import KeeperFailure, KeeperVault, PamUser
from .requests_model import RotationRequest
from .results import Code, RecordResult, RotationStop, Status
from .rotation import Rotation, rotate
from .settings import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

log = logging.getLogger(__name__)

_POOL = {"connect_timeout": 5, "read_timeout": 20, "max_pool_connections": 20}  # >= ROTATION_CONCURRENCY's max
READS = Config(retries={"mode": "standard", "max_attempts": 5}, **_POOL)
WRITES = Config(retries={"total_max_attempts": 1}, **_POOL)  # see iam.py: UpdateLoginProfile retries itself


@lru_cache(maxsize=8)
def client(service: str, config: Config = READS) -> Any:
    """AWS clients are reused across warm invocations (connection pools, credentials)."""
    return boto3.client(service, config=config)


@lru_cache(maxsize=2)
def vault_for(ksm_config: str, timeout: float) -> KeeperVault:
    """One Keeper connection per distinct config: a rotated KSM config gets a new client, an unchanged one keeps
    its keep-alive session."""
    return KeeperVault(ksm_config, timeout=timeout)


class ConfigUnavailable(Exception):
    """The KSM config secret could not be read; the message names the secret, never its value."""


Work = PamUser | RecordResult  # a record to rotate, or the result it already has
R = TypeVar("R")
LIST_USERS_ABOVE = 10  # records per run above which one ListUsers beats a GetUser per record


@dataclass
class Invocation:
    settings: Settings
    owner: str  # journal lease owner: the Lambda request id, or a CLI run id
    lease_seconds: float
    load_ksm_config: Callable[[], str]
    observe: Callable[[RecordResult, float], None] = lambda result, seconds: None
    not_due: int = 0  # set by a scheduled run: records in scope left alone because they are not due


def run(request: RotationRequest, inv: Invocation) -> list[RecordResult]:
    """One result per requested record (or per pamUser in scope, plus unfinished rotations, for the schedule).
    A failure that affects every record (STS, the config, Keeper unreachable) fails them all before any change."""
    settings = inv.settings
    dry_run = request.dry_run or settings.dry_run
    iam = IamGateway(client("iam"), client("iam", WRITES), client("sts"), retry_delay=settings.retry_delay)
    journal = Journal(client("dynamodb"), client("kms"), settings.journal_table, settings.journal_key_id)
    unfinished: list[Entry] = []
    if request.recover_only:  # the journal first: an idle recovery run makes no IAM, STS or Keeper call
        try:
            now = time.time()  # a live lease is a rotation in progress, not one to finish
            unfinished = [entry for entry in journal.open_entries() if entry.lease_until <= now]
        except JournalError as error:
            return _all_failed(request, Code.JOURNAL_UNAVAILABLE, str(error), inv)
        if not unfinished:
            return []
    try:
        account_id = iam.account_id
    except Exception as error:
        return _all_failed(request, Code.IAM_ERROR, f"STS GetCallerIdentity failed: {describe(error)}", inv)
    try:
        vault = vault_for(inv.load_ksm_config(), settings.keeper_timeout)
    except (ConfigUnavailable, KeeperFailure) as error:  # KeeperVault only parses the config: no Keeper call yet
        return _all_failed(request, Code.KSM_CONFIG_UNREADABLE, str(error), inv, account_id)
    try:
        if request.recover_only:
            work = _records_of(unfinished, vault, account_id)
        else:
            work = _fetch(request, vault, settings, account_id)
            if not request.record_uids:  # the schedule: one journal Scan gives unfinished rotations and history
                work, unfinished = _due(work, _journal_entries(journal), settings, inv, dry_run)
                work += _unfinished_elsewhere(unfinished, work, vault, account_id)
    except KeeperFailure as error:
        return _all_failed(request, Code.KEEPER_UNAVAILABLE, f"{error}; nothing was changed", inv, account_id)

    vouched = Vouched(
        explicit=bool(request.record_uids) and not request.queued,
        folder_uids=settings.folder_uids,
        unfinished_record_uids={entry.record_uid for entry in unfinished},
        planned_record_uids=request.vouched_uids,
    )
    rot = Rotation(
        iam, vault, journal, inv.owner, inv.lease_seconds, settings.password_length, settings.commit_attempts
    )
    _read_policy_once(iam)
    large = sum(isinstance(item, PamUser) for item in work) > LIST_USERS_ABOVE
    if large:
        iam.list_users()
    accounts = for_settings(iam, client("sts"), settings, READS, WRITES)
    accounts.list_users = large

    def bind(user: PamUser) -> Claim:
        target = resolve_target(user, iam, vouched, lambda account: accounts.gateway(account, user.uid))
        return Claim(user, target, accounts.gateway(account_of(target.arn), user.uid))

    def claim(item: Work) -> Claim | RecordResult:  # step 1
        if isinstance(item, RecordResult):
            return item
        return _guarded(item.uid, account_id, lambda: bind(item))

    def one(item: Claim | RecordResult) -> tuple[RecordResult, float]:  # steps 2-8
        started = time.monotonic()
        result = item
        if isinstance(item, Claim):
            result = _guarded(
                item.user.uid, account_id, lambda: rotate(item.user, item.target, replace(rot, iam=item.iam), dry_run)
            )
        return result, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:  # records are independent; IAM users locked
        claims = _one_record_per_user(list(pool.map(claim, work)), journal, account_id)
        if request.record_uids is None and settings.rotation_queue_url and not dry_run:
            claims = _hand_off(claims, settings, unfinished, vouched)
        futures = [pool.submit(one, item) for item in claims]
        for done in as_completed(futures):  # reported here, on one thread, as each record finishes
            inv.observe(*done.result())
    return [future.result()[0] for future in futures]


def _due(
    work: list[Work], entries: list[Entry], settings: Settings, inv: Invocation, dry_run: bool
) -> tuple[list[Work], list[Entry]]:
    """The scheduled run rotates only due records (due.py) and finishes unfinished rotations (not in a dry run)."""
    unfinished = [] if dry_run else [entry for entry in entries if entry.open]
    work, inv.not_due = due.select(
        work,
        due.last_rotations(entries),
        settings.rotation_period_days,
        time.time(),
        always={entry.record_uid for entry in unfinished},
    )
    return work, unfinished


def _hand_off(
    claims: list[Claim | RecordResult], settings: Settings, unfinished: list[Entry], vouched: Vouched
) -> list[Claim | RecordResult]:
    """Beyond InlineRotationLimit, bound records go to the rotation queue (fanout.py); unfinished ones stay here."""
    queue = fanout.RotationQueue(client("sqs"), settings.rotation_queue_url)
    first = {entry.record_uid for entry in unfinished}
    return fanout.hand_off(claims, queue, settings.inline_rotation_limit, first, vouched)


@dataclass(frozen=True)
class Claim:
    """A record bound to the IAM user it will rotate (step 1 done)."""

    user: PamUser
    target: IamUser
    iam: IamGateway  # the target's account: the function's own, or an assumed member-account role


def _one_record_per_user(
    claims: list[Claim | RecordResult], journal: Journal, account_id: str
) -> list[Claim | RecordResult]:
    """Settle duplicate claims before anything runs in parallel: each loser becomes a `duplicate_user` result."""
    bound = [(item.user, item.target) for item in claims if isinstance(item, Claim)]
    losers = settle_duplicates(bound, lambda arn: _owner_of(journal, arn))
    return [
        RecordResult(
            item.user.uid,
            Status.SKIPPED,
            user_name=item.target.name,
            account_id=account_id,
            code=Code.DUPLICATE_USER,
            message=duplicate_message(losers[item.user.uid], item.target),
        )
        if isinstance(item, Claim) and item.user.uid in losers
        else item
        for item in claims
    ]


def _owner_of(journal: Journal, user_arn: str) -> str | None:
    try:
        return journal.owner_of(user_arn)
    except JournalError as error:  # fall back to Keeper's order; the journal's own check still guards step 4
        log.warning("could not read the journal's owner of a contested user", extra={"error": str(error)})
        return None


def _read_policy_once(iam: IamGateway) -> None:
    """Read the password policy before records run in parallel, so it is read once per invocation; a failure is
    left for each record to report (and retry) on its own."""
    with suppress(Exception):
        iam.password_policy  # noqa: B018 - a cached property: reading it caches it


def _fetch(request: RotationRequest, vault: KeeperVault, settings: Settings, account_id: str) -> list[Work]:
    """Requested records in request order (a result for the ones Keeper does not return), or every pamUser in
    scope for the schedule."""
    if request.record_uids:
        found = vault.fetch(request.record_uids)
        missing = "no such record is shared with the KSM application"
        return [
            found.get(uid)
            or RecordResult(uid, Status.SKIPPED, account_id=account_id, code=Code.RECORD_NOT_FOUND, message=missing)
            for uid in request.record_uids
        ]
    return [user for user in vault.fetch_all(settings.folder_uids) if user.type == "pamUser"]


def _journal_entries(journal: Journal) -> list[Entry]:
    try:
        return list(journal.entries())
    except JournalError as error:
        log.warning("could not scan the journal for unfinished rotations", extra={"error": str(error)})
        return []


def _unfinished_elsewhere(entries: list[Entry], work: list[Work], vault: KeeperVault, account_id: str) -> list[Work]:
    """The scheduled run also finishes rotations that died on records outside its scope. An entry whose record is
    gone is reported, never dropped: IAM may hold its password."""
    in_run = {item.record_uid if isinstance(item, RecordResult) else item.uid for item in work}
    return _records_of([entry for entry in entries if entry.record_uid not in in_run], vault, account_id)


def _records_of(entries: list[Entry], vault: KeeperVault, account_id: str) -> list[Work]:
    """The records that own these open journal entries, in one Keeper read."""
    found = vault.fetch(sorted({entry.record_uid for entry in entries})) if entries else {}
    gone = "the journal holds an unfinished rotation for {arn}, but its record is no longer shared with the KSM app"
    return [
        found.get(entry.record_uid)
        or RecordResult(
            entry.record_uid,
            Status.FAILED,
            account_id=account_id,
            code=Code.PASSWORD_IN_JOURNAL,
            message=gone.format(arn=entry.user_arn),
        )
        for entry in entries
    ]


def _guarded(uid: str, account_id: str, step: Callable[[], R]) -> R | RecordResult:
    """Run one record's step: its refusal becomes the record's result, and one record's bug must not stop the
    others (the journal keeps whatever it had reached)."""
    try:
        return step()
    except RotationStop as stop:
        return RecordResult(uid, stop.status, account_id=account_id, code=stop.code, message=stop.message)
    except Exception as error:
        log.exception("unexpected error rotating a record", extra={"record_uid": uid})
        return RecordResult(
            uid,
            Status.FAILED,
            account_id=account_id,
            code=Code.INTERNAL_ERROR,
            message=f"unexpected {type(error).__name__}; see the function log",
        )


def _all_failed(
    request: RotationRequest, code: Code, message: str, inv: Invocation, account_id: str | None = None
) -> list[RecordResult]:
    uids = request.record_uids or ("*",)
    results = [RecordResult(uid, Status.FAILED, account_id=account_id, code=code, message=message) for uid in uids]
    for result in results:
        inv.observe(result, 0.0)
    return results


@lru_cache(maxsize=1)
def secrets_provider() -> SecretsProvider:
    """Powertools' Secrets Manager provider on our shared client (same timeouts and retries); it caches values.
    Imported here, not with the handler: a recovery run that finds nothing to do never reads the config."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

    return SecretsProvider(boto3_client=client("secretsmanager"))


def load_ksm_config(secret_id: str, max_age: int) -> str:
    """The KSM config (base64 or JSON) from Secrets Manager, cached for `max_age` seconds per process."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError  # noqa: PLC0415

    try:
        value = secrets_provider().get(secret_id, max_age=max_age)
    except GetParameterError as error:
        raise ConfigUnavailable(f"cannot read the KSM config secret {secret_id}: {str(error)[:300]}") from None
    return value.decode() if isinstance(value, bytes) else str(value)
