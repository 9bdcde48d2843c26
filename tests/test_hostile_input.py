"""Hostile input: every event shape gets an answer, never an exception, and a refused request changes nothing.

Property-based (hypothesis) over direct events, API Gateway envelopes and API bodies. Per example: the handler
returns (no exception escapes), the answer is a 200/4xx response or a result/error object, what it quotes back is
bounded, and when the request is refused, moto's stored password, Keeper's committed record and Keeper's write
calls are exactly what they were before it. `--hypothesis-show-statistics` prints how many examples ran.
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator_sandbox.stack import load_event

from conftest import Stack

EXAMPLES = 200  # per property
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_ERROR_CHARS = 1024  # an error never echoes more than a few truncated names
KEEPER_WRITES = ("update_secret", "finalize_secret_update", "rollback_secret_update")
METRIC_WARNINGS = re.compile(r"No application metrics to publish|has already been added")
UID = st.from_regex(r"\A[A-Za-z0-9_-]{22}\Z")
ENVELOPE_KEYS = [
    "httpMethod",
    "path",
    "resource",
    "body",
    "isBase64Encoded",
    "headers",
    "multiValueHeaders",
    "queryStringParameters",
    "multiValueQueryStringParameters",
    "pathParameters",
    "stageVariables",
    "requestContext",
]
REQUEST_KEYS = ["records", "dryRun", "idempotencyKey", "action", "source", "detail-type", "id", "httpMethod"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
request_like = st.dictionaries(
    st.sampled_from(REQUEST_KEYS) | st.text(max_size=12),
    json_values | st.lists(UID, max_size=3) | st.sampled_from(["recover", "aws.events", "Scheduled Event"]),
    max_size=4,
)
bodies = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    request_like.map(json.dumps),
    request_like.map(lambda body: base64.b64encode(json.dumps(body).encode()).decode()),
)


@pytest.fixture
def world(stack: Stack) -> World:
    return World(stack, stack.add_pair("alice"))


class World:
    """alice's IAM user and PAM User record, and what a refused request must leave exactly as it was."""

    def __init__(self, stack: Stack, uid: str) -> None:
        self.stack, self.uid = stack, uid

    def state(self) -> tuple[Any, ...]:
        calls = self.stack.keeper.vault.calls
        return (
            self.stack.iam_password("alice"),
            self.stack.keeper_record(self.uid),
            self.stack.keeper.vault.staged(self.uid),
            tuple(calls[path] for path in KEEPER_WRITES),
        )

    def send(self, event: Any) -> dict[str, Any]:
        """Invoke; on a refusal, check nothing changed. Returns the answer (an API response or a direct result)."""
        before = self.state()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            answer = self.stack.invoke(event)
        assert [str(w.message) for w in caught if METRIC_WARNINGS.search(str(w.message))] == []
        error = refusal(answer)
        if error is not None:
            assert error["code"] in {"bad_request", "payload_too_large", "idempotency_key_reused", "in_progress"}
            assert 0 < len(error["message"]) <= MAX_ERROR_CHARS
            assert self.state() == before
        return answer


def refusal(answer: Any) -> dict[str, Any] | None:
    """The error an answer carries (API response or direct result), None for results; fails on anything else."""
    assert isinstance(answer, dict)
    if "statusCode" in answer:
        status = answer["statusCode"]
        assert status == 200 or 400 <= status < 500, answer
        body = json.loads(answer["body"])
        if status == 404:
            return None  # the router's answer for another route: nothing runs
        return body["error"] if status != 200 else None
    assert set(answer) in ({"results", "summary"}, {"results", "summary", "resultsOmitted"}, {"error"}), answer
    return answer.get("error")


def api_event(**fields: Any) -> dict[str, Any]:
    event = load_event("api-post-rotations.json")
    event.update({"isBase64Encoded": False, **fields})
    return event


@FUZZ
@given(event=json_values | request_like)
def test_any_direct_event_gets_an_answer(world, event):
    answer = world.send(event)
    if not isinstance(event, dict):
        assert answer["error"]["code"] == "bad_request"


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(ENVELOPE_KEYS), json_values, max_size=3),
    dropped=st.sets(st.sampled_from(ENVELOPE_KEYS), max_size=2),
    context=st.dictionaries(st.sampled_from(["identity", "stage", "path", "httpMethod"]), json_values, max_size=2),
)
def test_any_api_envelope_gets_an_answer(world, changes, dropped, context):
    event = api_event(body=json.dumps({"records": ["AbCdEfGhIjKlMnOpQrStUv"]}))
    event.update(changes)
    for name in dropped:
        event.pop(name, None)
    if isinstance(event.get("requestContext"), dict):
        event["requestContext"].update(context)
    world.send(event)


@FUZZ
@given(body=bodies, base64_encoded=st.booleans())
def test_any_api_body_gets_an_answer(world, body, base64_encoded):
    world.send(api_event(body=body, isBase64Encoded=base64_encoded))


@pytest.mark.parametrize("event", [None, 0, 1.5, True, "records", [], [{"records": []}], {"action": "other"}])
def test_non_request_direct_events_are_bad_requests(world, event):
    assert world.send(event)["error"]["code"] == "bad_request"


def test_recover_action_still_runs_a_recovery_run(world):
    assert world.send({"action": "recover"})["results"] == []  # nothing unfinished: an idle run
    assert world.send({"action": "recover", "records": [world.uid]})["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"path": None}, '"path"'),
        ({"httpMethod": ["POST"]}, '"httpMethod"'),
        ({"requestContext": {"identity": "me"}}, "identity"),
        ({"headers": {"Idempotency-Key": 7}}, '"headers"'),
        ({"headers": False}, '"headers"'),  # found by hypothesis: falsy, so once taken for "no headers"
        ({"queryStringParameters": 0}, '"queryStringParameters"'),
        ({"body": {"records": []}}, '"body"'),
    ],
)
def test_malformed_envelope_is_400(world, changes, fragment):
    response = world.send(api_event(**{"body": json.dumps({"records": [world.uid]}), **changes}))
    assert response["statusCode"] == 400
    assert fragment in json.loads(response["body"])["error"]["message"]


def test_deeply_nested_body_is_400_with_a_short_message(world):
    response = world.send(api_event(body="[" * 10_000))
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["message"] == "the body nests deeper than 32 levels"


def test_brackets_inside_strings_do_not_count_as_nesting(world):
    response = world.send(api_event(body=json.dumps({"records": ["[" * 100]})))
    assert response["statusCode"] == 400
    assert "record uids" in json.loads(response["body"])["error"]["message"]


def test_four_megabyte_body_is_413(world):
    body = json.dumps({f"odd-key-{i:07d}": i for i in range(200_000)})
    assert len(body) > 4_000_000
    response = world.send(api_event(body=body))
    assert response["statusCode"] == 413
    assert json.loads(response["body"])["error"]["code"] == "payload_too_large"
    assert len(response["body"]) < 200


def test_unknown_names_are_echoed_bounded(world):
    event = {"records": [world.uid], **{f"{'x' * 1000}{i}": i for i in range(1000)}}
    message = world.send(event)["error"]["message"]
    assert message.startswith("unknown field(s) 'xxxx")
    assert "and 997 more" in message and len(message) < 300


def test_refusals_and_replays_leave_no_metric_state_behind(world):
    """Each of these flushes no metric: Powertools would warn, and keep the `trigger` dimension for the next call."""
    keyed = {"records": [world.uid], "dryRun": True, "idempotencyKey": "plan-alice"}
    first = world.send(keyed)
    assert world.send(keyed) == first  # an idempotent replay: no work, no metric
    world.send({"records": "alice"})
    world.send(api_event(body="{}"))
    world.send(["not", "an", "object"])
    assert world.send({"records": [world.uid], "dryRun": True})["results"][0]["status"] == "planned"
