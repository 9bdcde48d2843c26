"""Fleet rules that need no peer: session names, due arithmetic, message parsing, interleaving, settings."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from keeper_iam_rotator.accounts import session_name
from keeper_iam_rotator.due import is_due, select
from keeper_iam_rotator.errors import BadQueueMessageError
from keeper_iam_rotator.fanout import Handoff, interleave
from keeper_iam_rotator.keeper import PamUser
from keeper_iam_rotator.results import MAX_LISTED_RESULTS, Code, Outcome, RecordResult, Status
from keeper_iam_rotator.settings import ConfigurationError, Settings

DAY = 86400


class _Record:
    def __init__(self, uid: str, custom: list | None = None) -> None:
        self.uid, self.dict = uid, {"custom": custom or []}


def user(uid: str = "AbCdEfGhIjKlMnOpQrStUv", period: str | None = None) -> PamUser:
    custom = [{"type": "text", "label": "rotation_period_days", "value": [period]}] if period else []
    return PamUser(_Record(uid, custom))  # type: ignore[arg-type]


@pytest.mark.parametrize("uid", ["AbCdEfGhIjKlMnOpQrStUv", "a b/c:d" * 20, "x"])
def test_session_names_fit_sts_rules(uid):
    name = session_name(uid)
    assert 2 <= len(name) <= 64
    assert re.fullmatch(r"[\w+=,.@-]+", name, re.ASCII)


def test_due_boundaries_hold_for_every_record():
    """The documented rule in plain figures (not due.py's constants): a 30-day record is never due before 26 days
    22 hours (at most 2 h plus 10% of its period early), always due at 29 days 22 hours, and due when never rotated.
    In between, each record's own share of the spread decides, and records really are spread over that window."""
    now = 1_000 * DAY
    hour = 3600
    due_at_28_days = 0
    for i in range(200):
        record = user(f"record-{i:04d}-xxxxxxxxxxxx")
        assert not is_due(record, {record.uid: now - (26 * DAY + 21 * hour)}, 30, now)
        assert is_due(record, {record.uid: now - (29 * DAY + 22 * hour)}, 30, now)
        assert is_due(record, {record.uid: now - 30 * DAY}, 30, now)
        assert is_due(record, {}, 30, now)
        due_at_28_days += is_due(record, {record.uid: now - 28 * DAY}, 30, now)
    assert 40 < due_at_28_days < 110  # due at 28 days: a share of at least 46 h / 72 h, about 36% of records


def test_the_record_period_wins_and_garbage_falls_back():
    now = 1_000 * DAY
    last = now - 8 * DAY
    assert is_due(user(period="7"), {user().uid: last}, 30, now)
    for garbage in ("0", "-3", "seven", "366", "7.5"):
        assert not is_due(user(period=garbage), {user().uid: last}, 30, now)


def test_a_record_period_is_a_whole_number_of_days_from_1_to_365():
    now = 1_000 * DAY
    assert is_due(user(period="1"), {user().uid: now - 2 * DAY}, 30, now)
    assert not is_due(user(period="365"), {user().uid: now - 40 * DAY}, 30, now)
    assert is_due(user(period="366"), {user().uid: now - 40 * DAY}, 30, now)  # ignored: the default 30 applies


def test_the_early_margin_is_two_hours():
    """At 29 days 21 hours a few 30-day records (those with the smallest share of the spread) are not due yet."""
    now = 1_000 * DAY
    records = [user(f"margin-{i:05d}-xxxxxxxxxxx") for i in range(1000)]
    waiting = [r for r in records if not is_due(r, {r.uid: now - (29 * DAY + 21 * 3600)}, 30, now)]
    assert 0 < len(waiting) < 50  # a share under 1 h / 72 h: about 1.4% of records


def test_select_counts_what_it_leaves_and_keeps_unfinished_work():
    fresh, stale = user("fresh-xxxxxxxxxxxxxxxx"), user("stale-xxxxxxxxxxxxxxxx")
    last = {fresh.uid: 99 * DAY, stale.uid: 1.0}
    assert select([fresh, stale], last, 30, 100 * DAY) == ([stale], 1)
    assert select([fresh, stale], last, 30, 100 * DAY, always={fresh.uid}) == ([fresh, stale], 0)


@pytest.mark.parametrize(
    "body",
    ["", "nope", "[]", "{}", '{"recordUid": 7}', '{"recordUid": ""}', '{"recordUid": "u", "plannedAt": "soon"}'],
)
def test_a_message_that_is_not_a_handoff_is_refused(body):
    with pytest.raises(BadQueueMessageError):
        Handoff.parse(body)


def test_handoffs_round_trip_and_interleave_in_runs_of_a_batch():
    handoff = Handoff("AbCdEfGhIjKlMnOpQrStUv", "222222222222", planned_at=1_796_000_000.5)
    assert Handoff.parse(handoff.body()) == handoff
    earlier_version = '{"recordUid": "AbCdEfGhIjKlMnOpQrStUv", "accountId": "1", "vouched": true}'
    assert Handoff.parse(earlier_version) == Handoff("AbCdEfGhIjKlMnOpQrStUv", "1")  # `vouched` is not trusted
    mixed = [Handoff(f"a{i}", "A") for i in range(30)] + [Handoff(f"b{i}", "B") for i in range(30)]
    mixed += [Handoff(f"c{i}", "A", device=1) for i in range(20)] + [Handoff(f"d{i}", "B", device=1) for i in range(20)]
    ordered = interleave(mixed)
    assert sorted(h.record_uid for h in ordered) == sorted(h.record_uid for h in mixed)
    # runs of one queue batch (25) per application (here each device its own), round-robin: a worker's batch is one
    # Keeper read, the next worker's another application; within one by account, each starting at another account
    batches = [ordered[i : i + 25] for i in range(0, len(ordered), 25)]
    assert [{h.device for h in batch} for batch in batches[:3]] == [{0}, {1}, {0}]  # then the rest of each
    assert [[h.account_id for h in batch] for batch in batches[:2]] == [["A"] * 25, ["B"] * 20 + ["A"] * 5]
    one_application = interleave(mixed, peers_of=lambda device: (0, 2))  # devices 0 and 2 see the same records
    batches = [one_application[i : i + 25] for i in range(0, len(one_application), 25)]
    assert [sorted(Counter(h.device for h in batch).values()) for batch in batches] == [[12, 13]] * 4  # dealt evenly
    assert [h.account_id for h in one_application] == ["A"] * 50 + ["B"] * 50
    assert Handoff.parse(Handoff("u", "A", 1.0, device=3, requested=True).body()).requested is True
    assert Handoff.parse('{"recordUid": "u", "device": "0; drop", "requested": "yes"}') == Handoff("u", "")


def test_target_account_ids_must_be_account_ids():
    env = {"KSM_CONFIG_SECRET_ID": "s", "TARGET_ACCOUNT_IDS": " 111111111111, 222222222222 "}
    assert Settings.from_env(env).target_account_ids == ("111111111111", "222222222222")
    with pytest.raises(ConfigurationError, match="TARGET_ACCOUNT_IDS"):
        Settings.from_env(env | {"TARGET_ACCOUNT_IDS": "111111111111,prod"})


def test_a_fleet_sized_answer_lists_failures_first_and_counts_what_it_omits():
    results = [RecordResult(f"q{i}", Status.QUEUED) for i in range(MAX_LISTED_RESULTS + 5)]
    results.append(RecordResult("f", Status.FAILED, code=Code.ASSUME_ROLE_FAILED, message="refused"))
    answer = Outcome(results, not_due=7).document()
    assert len(answer["results"]) == MAX_LISTED_RESULTS
    assert answer["results"][0]["recordUid"] == "f"
    assert answer["resultsOmitted"] == 6
    assert answer["summary"] == {
        "rotated": 0,
        "planned": 0,
        "skipped": 0,
        "failed": 1,
        "queued": MAX_LISTED_RESULTS + 5,
        "notDue": 7,
        "deferred": 0,
    }
    assert "resultsOmitted" not in Outcome(results[:3]).document()


def test_a_hostile_message_body_is_refused_not_raised():
    with pytest.raises(BadQueueMessageError):
        Handoff.parse("[" * 100_000 + "]" * 100_000)


def test_the_recovery_period_comes_from_the_schedules_rate_expression():
    env = {"KSM_CONFIG_SECRET_ID": "s"}
    assert Settings.from_env(env).recovery_period == 900
    assert Settings.from_env(env | {"RECOVERY_SCHEDULE_EXPRESSION": "rate(1 hour)"}).recovery_period == 3600
    assert Settings.from_env(env | {"RECOVERY_SCHEDULE_EXPRESSION": "rate(5 minutes)"}).recovery_period == 300
    with pytest.raises(ConfigurationError, match="RECOVERY_SCHEDULE_EXPRESSION"):
        Settings.from_env(env | {"RECOVERY_SCHEDULE_EXPRESSION": "cron(0 * * * ? *)"})
