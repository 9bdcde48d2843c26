"""What a run is given (an Invocation: by the Lambda handler or the CLI) and what it shares once it has reached the
hub account and Keeper (a RunContext)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import due
from .accounts import Accounts, account_of
from .binding import target_account
from .devices import Devices
from .iam import IamGateway
from .journal import Entry, Journal
from .keeper import PamUser
from .pacing import Pacer
from .request import RotationRequest
from .results import RecordResult
from .rotation import Rotation
from .settings import Settings


class ClientFactory(Protocol):
    """Makes (or reuses) a boto3 client. `writes`: the one for UpdateLoginProfile, which must not retry on its own;
    `credentials`: another account's role (aws_access_key_id, aws_secret_access_key, aws_session_token)."""

    def __call__(self, service: str, *, writes: bool = False, credentials: Mapping[str, str] | None = None) -> Any: ...


def _ignore(result: RecordResult, seconds: float) -> None:
    """The default observer: a run reports through its results only."""


def _ignore_signal(metric: str, count: int) -> None:
    """The default for run-level signals: none are published."""


@dataclass(frozen=True)
class Invocation:
    """Who runs the rotator and with what: settings, AWS clients, the journal lease owner and duration, where the
    KSM configs come from (`load_ksm_config(secret_id)`, one per client device in settings.ksm_config_secret_ids),
    who is told about each record as it finishes, and where run-level signals go (a count metric such as
    StaleOpenEntries)."""

    settings: Settings
    clients: ClientFactory
    owner: str  # journal lease owner: the Lambda request id, or a CLI run id
    lease_seconds: float
    load_ksm_config: Callable[[str], str]
    observe: Callable[[RecordResult, float], None] = _ignore
    signal: Callable[[str, int], None] = _ignore_signal

    def journal(self) -> Journal:
        settings = self.settings
        return Journal(
            self.clients("dynamodb"),
            self.clients("kms"),
            settings.journal_table,
            settings.journal_key_id,
            settings.journal_mac_key_id,
        )

    def pacer(self) -> Pacer | None:
        """The pacing shared by every invocation on the same client devices (None: KEEPER_PACING is false)."""
        settings = self.settings
        if not settings.keeper_pacing:
            return None
        limits, wait = settings.keeper_limits, settings.keeper_pacing_max_wait
        return Pacer(self.clients("dynamodb"), settings.pacing_table, limits, wait)

    def hub(self) -> IamGateway:
        """The function's own account, as its execution role (or the CLI's caller) sees it."""
        iam = self.clients
        return IamGateway(iam("iam"), iam("iam", writes=True), iam("sts"), retry_delay=self.settings.retry_delay)


@dataclass(frozen=True)
class RunContext:
    """One run's shared state once the hub account and Keeper are reachable: its request, adapters, and dry run."""

    invocation: Invocation
    request: RotationRequest
    hub: IamGateway
    vault: Devices
    journal: Journal

    @property
    def settings(self) -> Settings:
        return self.invocation.settings

    @property
    def dry_run(self) -> bool:
        return self.request.dry_run or self.settings.dry_run

    def account_for(self, subject: PamUser | Entry | None) -> str:
        """The account a record's results report: the one its IAM user lives in (binding.target_account, or the
        journal entry's user), the hub's when the record names none."""
        if isinstance(subject, Entry):
            return account_of(subject.user_arn)
        return self.hub.account_id if subject is None else target_account(subject, self.hub.account_id)

    def accounts(self) -> Accounts:
        """The hub and the member accounts records may name (one AssumeRole each, on first use)."""
        return Accounts.for_settings(self.hub, self.invocation.clients, self.settings)

    def rotation(self, forced: Collection[str] = ()) -> Rotation:
        """The protocol's shared parts; `forced`: records this run rotates whether due or not (drift)."""
        inv, settings = self.invocation, self.settings
        return Rotation(
            self.vault,
            self.journal,
            inv.owner,
            inv.lease_seconds,
            settings.password_length,
            settings.commit_attempts,
            rotated_before=self._due_rule(frozenset(forced)),
        )

    def _due_rule(self, forced: frozenset[str]) -> Callable[[PamUser], float | None]:
        """For the schedule and the queue: the latest last rotation at which a record may be rotated now (due now,
        and not rotated since its hand-off was planned). The journal's open enforces it, so neither a queue message
        nor a stale plan can rotate a record early. A caller's request, `rotate --all`, and a record the plan
        forces, always rotate (None); a caller's record handed to the queue, unless rotated after it was planned."""
        request = self.request
        if not request.trigger.checks_due or request.rotate_all:
            return lambda user: None
        now, period, planned = time.time(), self.settings.rotation_period_days, request.planned_at

        def rotated_before(user: PamUser) -> float | None:
            if user.uid in forced:
                return None
            since_planned = planned.get(user.uid, math.inf)
            if user.uid in request.requested:  # a caller asked: due or not, but not again if rotated since
                return since_planned
            return min(due.rotated_before(user, period, now), since_planned)

        return rotated_before
