"""`check` per bound record: last rotation, IAM's last change (credential report, shaped at the client boundary:
moto records no change times), drift yes/no, KeeperPAM rotating it too; and it changes nothing."""

from __future__ import annotations

import time

from iam_reports import CredentialReports
from test_drift import OUT_OF_BAND, rotated_earlier, set_out_of_band
from test_keeperpam import managed_pair, opt_in

from .conftest import TARGET
from .test_check import checks_of, simulate
from conftest import INITIAL_PASSWORD


def test_check_shows_drift_and_keeperpam_for_each_bound_record(stack, run):
    calm, drifted = rotated_earlier(stack, "alice"), rotated_earlier(stack, "bob")
    managed, both = managed_pair(stack, "carol"), managed_pair(stack, "dave")
    opt_in(stack, both)
    set_out_of_band(stack, "bob")
    reports = CredentialReports()
    reports.password_changed("alice", time.time() - 3600 - 5)  # its rotation's own change, an hour ago
    reports.password_changed("bob", time.time() - 60)
    simulate({})
    before = {uid: stack.keeper_password(uid) for uid in (calm, drifted, managed, both)}

    result = run("check", "--json", *TARGET)
    checks = checks_of(result)

    calm_line = checks[f"record {calm}"]
    assert calm_line["result"] == "PASS", calm_line
    for part in ("not due (last rotated", "IAM: password last changed", "drift: no", "KeeperPAM rotates it: no"):
        assert part in calm_line["detail"], calm_line
    assert checks[f"record {drifted}"]["result"] == "WARN"
    assert "drift: YES (IAM's credential report" in checks[f"record {drifted}"]["detail"]
    assert checks[f"record {managed}"]["result"] == "SKIP"
    assert checks[f"record {managed}"]["detail"].startswith("managed_by_keeperpam: KeeperPAM rotates this record")
    assert checks[f"record {both}"]["result"] == "WARN"
    assert "two rotators" in checks[f"record {both}"]["detail"]
    assert reports.reads == 1  # one report for the account, whatever the number of records
    assert {uid: stack.keeper_password(uid) for uid in before} == before
    assert stack.iam_password("bob") == OUT_OF_BAND and stack.iam_password("carol") == INITIAL_PASSWORD
    assert checks["iam:GetCredentialReport"]["result"] == "PASS"  # the role's permission is simulated too
