"""`check`'s view of drift for one bound record: when this rotator last rotated it (the journal), when IAM last saw
its password change (the account's credential report), whether that is drift, and whether KeeperPAM rotates it too.

The credential report is the one the scheduled run's reconcile reads (one per account, IAM makes at most one per
4 hours): `check` asks IAM for it and waits at most WAIT_SECONDS, so an account whose report IAM is still
generating shows "unknown" rather than holding the preflight up. Nothing else is called, nothing is changed.
"""

from __future__ import annotations

from typing import Final

from keeper_iam_rotator.accounts import account_of
from keeper_iam_rotator.binding import Claim
from keeper_iam_rotator.credential_report import Report, read_reports
from keeper_iam_rotator.drift import when
from keeper_iam_rotator.journal import Entry
from keeper_iam_rotator.keeperpam import OPT_IN_FIELD, opted_in, rotates
from keeper_iam_rotator.reconcile import Candidate, compare

from .verdicts import Verdict

WAIT_SECONDS: Final = 10.0


class DriftView:
    def __init__(self, journal_items: dict[str, Entry]) -> None:
        self._items = journal_items  # user ARN -> the journal's item (which record rotated it last, and when)
        self._reports: dict[str, Report | str] = {}

    def describe(self, claim: Claim) -> tuple[Verdict, str]:
        """PASS, or WARN for drift or two rotators; and the record's line: IAM's last change, drift, KeeperPAM."""
        iam, drift, drifted = self._drift(claim)
        both = rotates(claim.user) and opted_in(claim.user)
        keeperpam = (
            f"KeeperPAM rotates it too ({OPT_IN_FIELD}=rotate): two rotators overwrite each other, turn one off"
            if both
            else "KeeperPAM rotates it: no"
        )
        return (Verdict.WARN if drifted or both else Verdict.PASS), f"{iam}; {drift}; {keeperpam}"

    def _drift(self, claim: Claim) -> tuple[str, str, bool]:
        report = self._report(claim)
        if isinstance(report, str):
            return f"last change in IAM unknown ({report})", "drift: unknown", False
        password = report.passwords.get(claim.target.arn)
        changed = when(password.last_changed) if password and password.last_changed else "never"
        iam = f"IAM: password last changed {changed}" if password and password.enabled else "IAM: no console password"
        last = self._items.get(claim.target.arn)
        rotated = last is not None and last.record_uid == claim.user.uid and bool(last.rotated_at)
        finding = compare(Candidate(claim.user, claim.target, last), report) if last and rotated else None
        if finding is None:
            return iam, "drift: no", False
        return iam, f"drift: YES ({finding.seen})", True

    def _report(self, claim: Claim) -> Report | str:
        account = account_of(claim.target.arn)
        if account not in self._reports:
            self._reports |= read_reports({account: claim.iam}, WAIT_SECONDS)
        return self._reports[account]
