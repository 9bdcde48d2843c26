"""Hostile CloudTrail events: whatever an event claims (fields dropped, replaced or malformed, another user, another
account, a forged issuer), it gets an answer, and against a user this rotator never rotated it changes nothing at
all, whether it parses or not (hypothesis, over the shipped event with random parts replaced or removed)."""

from __future__ import annotations

from typing import Any

import hypothesis
from hypothesis import given
from hypothesis import strategies as st

from rotator_sandbox.stack import load_event
from test_hostile_input import FUZZ, World, json_values, refusal, world  # noqa: F401 - world is a fixture

PATHS = [
    ("account",),
    ("source",),
    ("detail-type",),
    ("detail",),
    ("detail", "eventName"),
    ("detail", "eventSource"),
    ("detail", "eventID"),
    ("detail", "eventTime"),
    ("detail", "errorCode"),
    ("detail", "recipientAccountId"),
    ("detail", "requestParameters"),
    ("detail", "requestParameters", "userName"),
    ("detail", "userIdentity"),
    ("detail", "userIdentity", "type"),
    ("detail", "userIdentity", "userName"),
    ("detail", "userIdentity", "arn"),
    ("detail", "userIdentity", "sessionContext", "sessionIssuer", "arn"),
]
NAMES = st.sampled_from(["alice", "bob", "", "a" * 65, "alice/x", "*"])
CALLS = st.sampled_from(["ChangePassword", "UpdateLoginProfile", "CreateLoginProfile", "DeleteLoginProfile", "X"])


def edited(event: dict[str, Any], path: tuple[str, ...], value: Any, drop: bool) -> dict[str, Any]:
    node = event
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            return event
        node = node[key]
    if drop:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return event


@FUZZ
@given(
    base=st.sampled_from(["cloudtrail-update-login-profile.json", "cloudtrail-change-password.json"]),
    event_id=st.uuids(),
    edits=st.lists(
        st.tuples(st.sampled_from(PATHS), json_values | NAMES | CALLS, st.booleans()), min_size=1, max_size=3
    ),
)
def test_any_cloudtrail_event_gets_an_answer_and_changes_nothing_for_a_user_never_rotated(world, base, event_id, edits):  # noqa: F811
    event = load_event(base)
    event["detail"]["eventID"] = str(event_id)  # a new event each time, not an idempotent replay of the first
    for path, value, drop in edits:
        event = edited(event, path, value, drop)
    before = world.state()

    answer = world.send(event)

    if refusal(answer) is None:
        hypothesis.event("answered with results")  # --hypothesis-show-statistics counts them
        assert all(r["status"] == "skipped" for r in answer["results"]), answer
    else:
        hypothesis.event("refused")
    assert world.state() == before
