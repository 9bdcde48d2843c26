"""The scheduled run's drift reconcile: CloudTrail's events reach EventBridge best-effort (and only with a trail, in
us-east-1), so once per scheduled run each account's credential report is compared with the journal.

A bound record is checked when this rotator rotated its user (the journal's closed item names the record and keeps
`rotatedAt`), its account is allowed, and KeeperPAM does not rotate it. Drift is a `password_last_changed` the
rotation did not settle (drift.settled: later than IAM taking the rotator's password), or no console password any
more (`password_enabled` false) in a report generated after the rotation. DRIFT_ACTION decides: `rotate` puts the
record into this run whether due or not (and before any hand-off to the queue), `alert` reports it; a record
without console access is only reported.

Cost: per account one GenerateCredentialReport and one GetCredentialReport (a few more while IAM generates it), and
one AssumeRole per member account; nothing per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .binding import IAM_USER_ARN
from .credential_report import Report, read_reports
from .drift import Finding, Findings, settled, unrotated, when
from .errors import RotationHaltedError
from .iam import IamGateway, IamUser
from .journal import Entry
from .keeper import PamUser
from .keeperpam import opted_in, rotates
from .results import WHOLE_RUN, Code, RecordResult, Status
from .settings import DriftAction

if TYPE_CHECKING:
    from .context import RunContext
    from .planner import Work

WAIT_SECONDS: Final = 20.0  # the most a scheduled run waits for IAM to generate credential reports
SESSION: Final = "drift-reconcile"  # the AssumeRole session name member accounts' CloudTrail shows


@dataclass(frozen=True)
class Candidate:
    user: PamUser
    target: IamUser
    last: Entry  # the journal's closed item of the user's last rotation

    @property
    def rotated_at(self) -> float:
        return self.last.rotated_at


@dataclass(frozen=True)
class Reconciled:
    """What the reconcile found: a finding per drifted record, and a result per account it could not check."""

    findings: Findings = field(default_factory=dict)
    checked: dict[str, Candidate] = field(default_factory=dict)
    unchecked: list[RecordResult] = field(default_factory=list)

    def forced(self, action: DriftAction) -> set[str]:
        """The records to rotate whether due or not."""
        if action is not DriftAction.ROTATE:
            return set()
        return {uid for uid, finding in self.findings.items() if not finding.console_removed}

    def complete(self, work: list[Work], not_due: int) -> tuple[list[Work], int]:
        """The run's work plus a result for each drifted record it does not rotate, and for each unchecked account."""
        in_run = {item.uid for item in work if isinstance(item, PamUser)}
        reported: list[Work] = [
            unrotated(self.checked[uid].user, self.checked[uid].target, finding)
            for uid, finding in self.findings.items()
            if uid not in in_run
        ]
        return [*work, *reported, *self.unchecked], not_due - len(reported)


def reconcile(context: RunContext, in_scope: Sequence[PamUser], entries: Iterable[Entry]) -> Reconciled:
    """Compare every checkable record in scope with its account's credential report."""
    candidates = _candidates(context, in_scope, entries)
    by_account: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_account.setdefault(candidate.target.arn.split(":")[4], []).append(candidate)
    if not by_account:
        return Reconciled()
    gateways, unchecked = _gateways(context, sorted(by_account))
    findings: Findings = {}
    for account, answer in read_reports(gateways, WAIT_SECONDS).items():
        if isinstance(answer, str):
            unchecked.append(_unchecked(account, answer))
            continue
        for candidate in by_account[account]:
            if finding := compare(candidate, answer):
                findings[candidate.user.uid] = finding
    return Reconciled(findings, {candidate.user.uid: candidate for candidate in candidates}, unchecked)


def _candidates(context: RunContext, in_scope: Sequence[PamUser], entries: Iterable[Entry]) -> list[Candidate]:
    last = {entry.user_arn: entry for entry in entries}
    allowed = {context.hub.account_id, *context.settings.target_account_ids}
    found = []
    for user in in_scope:
        arn = IAM_USER_ARN.fullmatch(user.distinguished_name)
        entry = last.get(user.distinguished_name)
        if arn is None or entry is None or arn["account"] not in allowed:
            continue
        if (
            entry.record_uid == user.uid
            and entry.rotated_at
            and not entry.open
            and (opted_in(user) or not rotates(user))
        ):
            found.append(Candidate(user, IamUser(arn["name"], user.distinguished_name), entry))
    return found


def _gateways(context: RunContext, accounts: list[str]) -> tuple[dict[str, IamGateway], list[RecordResult]]:
    """Each account's gateway (one AssumeRole per member account), and a result for each that refused."""
    directory = context.accounts()
    gateways, refused = {}, []
    for account in accounts:
        try:
            gateways[account] = directory.gateway(account, SESSION)
        except RotationHaltedError as halt:
            refused.append(_unchecked(account, f"{halt.code}: {halt.message}"))
    return gateways, refused


def _unchecked(account: str, why: str) -> RecordResult:
    message = f"the drift reconcile could not check account {account}: {why}"
    return RecordResult(WHOLE_RUN, Status.SKIPPED, None, account, Code.CREDENTIAL_REPORT_UNAVAILABLE, message)


def compare(candidate: Candidate, report: Report) -> Finding | None:
    """Drift of one record's user according to a report; None when the report shows nothing after the rotation."""
    password = report.passwords.get(candidate.target.arn)
    if password is None or report.generated_at <= candidate.rotated_at:
        return None  # the user is gone (binding reports that), or the report predates the rotation
    source = f"IAM's credential report of {when(report.generated_at)}"
    if not password.enabled:
        return Finding(f"{source} shows no console password for {candidate.target.arn}", console_removed=True)
    if password.last_changed is None or settled(password.last_changed, candidate.last):
        return None
    return Finding(
        f"{source}: the password of {candidate.target.arn} was changed at {when(password.last_changed)}, after "
        f"this rotator's last rotation at {when(candidate.rotated_at)}"
    )
