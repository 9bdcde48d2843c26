"""IAM's credential report as the drift reconcile reads it, shaped at botocore's client boundary.

moto 5.2.5 implements GenerateCredentialReport (STARTED, then COMPLETE) and GetCredentialReport, but its rows give
each user's creation time as `password_last_changed` (moto does not record password changes) and every report says
it was generated on 2015-02-02. So GetCredentialReport's answer is rewritten after moto produced it: moto's rows stay
(its users, and `password_enabled` from whether a login profile exists), with the change times a test sets and the
time the report was generated. `in_progress` answers GetCredentialReport with IAM's ReportInProgress instead.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from typing import Any

import boto3

from faults import _Http


class CredentialReports:
    def __init__(self, generated_at: float | None = None) -> None:
        boto3.setup_default_session()  # the function's next clients are built on the session with these hooks
        events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
        events.register("before-call.iam.GetCredentialReport", self._refuse, unique_id="reports-in-progress")
        events.register("after-call.iam.GetCredentialReport", self._shape, unique_id="reports-shape")
        self.generated_at = generated_at  # None: now, at each read
        self.changed: dict[str, float] = {}  # user name -> password_last_changed
        self.in_progress = False
        self.reads = 0

    def password_changed(self, user: str, at: float) -> None:
        self.changed[user] = at

    def _refuse(self, **_: Any) -> Any:
        if not self.in_progress:
            return None
        error = {"Error": {"Code": "ReportInProgress", "Message": "Report generation in progress"}}
        return _Http(404, {}), {**error, "ResponseMetadata": {"HTTPStatusCode": 404}}

    def _shape(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Content" not in parsed:
            return
        self.reads += 1
        rows = list(csv.DictReader(io.StringIO(parsed["Content"].decode())))
        for row in rows:
            if row["user"] in self.changed:
                row["password_last_changed"] = _iso(self.changed[row["user"]])
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["user", "arn"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        parsed["Content"] = out.getvalue().encode()
        parsed["GeneratedTime"] = datetime.fromtimestamp(self.generated_at or time.time(), UTC)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
