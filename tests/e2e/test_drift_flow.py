"""Drift end to end: the handler in its own process, as template.yaml's function role (moto enforcing its policies),
answering CloudTrail's events. It must tell its own UpdateLoginProfile (made under that role) from anyone else's
with nothing but its own STS identity, and rotate away an administrator's change."""

from __future__ import annotations

import pytest

from test_drift import OUT_OF_BAND, change_event

from .conftest import assert_converged, assert_no_leak, record_outcome, sandbox_template, statuses
from template_tools import FUNCTION_ROLE

pytestmark = pytest.mark.e2e


def test_the_handlers_own_change_is_ignored_and_an_administrators_is_rotated_away(sb):
    user = sb.add_user("e2e-alice")
    first = sb.invoke({"records": [user.uid]})
    assert [r["status"] for r in first.results] == ["rotated"], first.stdout[-2000:]
    sb.age_rotations(1 / 24, user.uid)  # the event comes an hour later: only the role tells it apart
    own_role = sandbox_template(sb).get_att(FUNCTION_ROLE, "Arn")
    rotated = sb.iam_password(user.name)

    own = sb.invoke(change_event(user=user.name, issuer=own_role))

    assert [(r["status"], r["error"]["code"]) for r in own.results] == [("skipped", "no_drift")], own.stdout[-2000:]
    assert sb.iam_password(user.name) == rotated == sb.keeper_password(user.uid)

    sb.aws("iam").update_login_profile(UserName=user.name, Password=OUT_OF_BAND)
    admin = sb.invoke(change_event(user=user.name))

    assert [(r["status"], r["error"]["code"]) for r in admin.results] == [("rotated", "drift")], admin.stdout[-2000:]
    assert_converged(sb, user)
    assert sb.iam_password(user.name) not in {OUT_OF_BAND, rotated}
    assert_no_leak({OUT_OF_BAND, rotated, sb.iam_password(user.name)}, own, admin)
    record_outcome("drift: own change, then an administrator's", "-", f"{statuses(own)} then {statuses(admin)}")
