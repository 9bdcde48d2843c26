"""Binding: only records that provably name an IAM user of this account are rotated (issue 8).

pamUser records also hold Active Directory, Linux and database accounts; a login that equals an IAM user name
proves nothing. Every case asserts the real state on both sides: moto's stored password and Keeper's record.
"""

from __future__ import annotations

from collections import Counter

import boto3
import pytest

from rotator_sandbox.stack import SCOPE_TAG, field_value, load_event

from conftest import ACCOUNT, INITIAL_PASSWORD
from faults import SimulatedCrash, _Http, after_aws_call
from test_recovery import assert_converged, open_entries
from test_rotation import assert_rotated, assert_unchanged, only

AD_DN = "CN=jsmith,OU=Users,DC=corp,DC=example"


def by_uid(results: list[dict]) -> dict[str, dict]:
    return {r["recordUid"]: r for r in results}


def code(result: dict) -> tuple[str, str]:
    return result["status"], result.get("error", {}).get("code", "")


def scheduled(stack) -> dict[str, dict]:
    return by_uid(stack.invoke(load_event("scheduled.json"))["results"])


@pytest.fixture
def other_systems(stack):
    """The issue's scenario: an AD and a Linux record in a shared folder, and IAM users with the same names."""
    folder = stack.keeper.vault.add_folder(name="datacenter")
    stack.add_user("jsmith")
    stack.add_user("admin")
    ad = stack.add_record("jsmith", dn=AD_DN, folder=folder, title="AD jsmith")
    linux = stack.add_record("admin", folder=folder, title="Linux admin")
    return ad, linux


def test_schedule_touches_neither_ad_nor_linux_records_nor_their_namesakes_in_iam(stack, other_systems):
    ad, linux = other_systems
    results = scheduled(stack)
    assert code(results[ad]) == ("skipped", "not_iam_record")
    assert code(results[linux]) == ("skipped", "not_bound")
    assert "distinguishedName" in results[linux]["error"]["message"]
    assert_unchanged(stack, ad, "jsmith")
    assert_unchanged(stack, linux, "admin")
    assert field_value(stack.keeper_record(ad), "text", "distinguishedName") == AD_DN
    assert field_value(stack.keeper_record(linux), "text", "distinguishedName") is None
    assert stack.journal_items() == []


def test_explicit_request_rotates_and_binds_the_linux_record_but_never_the_ad_one(stack, other_systems):
    ad, linux = other_systems
    assert code(only(stack.rotate(linux))) == ("skipped", "not_bound")  # naming it is not enough: ask to bind
    assert_unchanged(stack, linux, "admin")
    results = by_uid(stack.rotate(ad, linux, bind=True))
    assert code(results[ad]) == ("skipped", "not_iam_record")
    assert code(results[linux]) == ("rotated", "")
    assert_unchanged(stack, ad, "jsmith")
    assert_rotated(stack, linux, "admin")
    arn = f"arn:aws:iam::{ACCOUNT}:user/admin"
    assert field_value(stack.keeper_record(linux), "text", "distinguishedName") == arn
    after = stack.invoke(load_event("scheduled.json"))  # bound now, and rotated just now: not due for the schedule
    assert linux not in by_uid(after["results"])
    assert after["summary"]["notDue"] == 1


def test_schedule_rotates_and_binds_unbound_records_in_declared_folders_only(stack, monkeypatch):
    aws_only = stack.keeper.vault.add_folder(name="aws")
    inside = stack.add_pair("alice", bound=False, folder=aws_only)
    monkeypatch.setenv("ROTATION_FOLDER_UIDS", aws_only)
    assert code(scheduled(stack)[inside]) == ("rotated", "")
    assert_rotated(stack, inside, "alice")
    assert field_value(stack.keeper_record(inside), "text", "distinguishedName").endswith(":user/alice")


def test_an_arn_without_the_users_path_is_refused_and_one_user_has_one_journal_key(stack):
    real_arn = stack.add_user("alice", path="/humans/")
    by_login = stack.add_record("alice", title="A: login only")
    by_wrong_arn = stack.add_record("alice", dn=f"arn:aws:iam::{ACCOUNT}:user/alice", title="B: path missing")
    results = by_uid(stack.rotate(by_login, by_wrong_arn, bind=True))
    assert code(results[by_wrong_arn]) == ("skipped", "arn_mismatch")
    assert real_arn in results[by_wrong_arn]["error"]["message"]
    assert code(results[by_login]) == ("rotated", "")
    assert field_value(stack.keeper_record(by_login), "text", "distinguishedName") == real_arn
    for _ in range(2):  # and on every later scheduled run (alice's record was just rotated: it is not due)
        results = scheduled(stack)
        assert code(results[by_wrong_arn]) == ("skipped", "arn_mismatch")
        assert by_login not in results
    assert_rotated(stack, by_login, "alice", previous=stack.keeper_password(by_wrong_arn))
    assert [item["userArn"]["S"] for item in stack.journal_items()] == [real_arn]


def test_a_deleted_user_named_by_its_arn_is_not_found(stack):
    uid = stack.add_pair("alice")
    stack.iam.delete_login_profile(UserName="alice")
    stack.iam.delete_user(UserName="alice")
    result = only(stack.rotate(uid))
    assert code(result) == ("skipped", "iam_user_not_found")
    assert stack.keeper_password(uid) == INITIAL_PASSWORD


def test_a_record_of_another_system_is_not_a_duplicate_of_the_iam_user(stack):
    uid = stack.add_pair("jsmith")
    stack.add_record("jsmith", dn=AD_DN, title="AD jsmith")
    assert code(only(stack.rotate(uid))) == ("rotated", "")
    assert code(only(stack.rotate(uid))) == ("rotated", "")


# --- duplicates are settled before records run in parallel ----------------------------------------------------------


def test_duplicates_in_one_run_the_first_listed_wins(stack, monkeypatch):
    monkeypatch.setenv("ROTATION_CONCURRENCY", "8")
    first = stack.add_pair("alice")
    twins = [stack.add_record("alice", title=f"twin {i}") for i in range(3)]
    results = by_uid(stack.rotate(first, *twins, bind=True))
    assert code(results[first]) == ("rotated", "")
    for twin in twins:
        assert code(results[twin]) == ("skipped", "duplicate_user")
        assert first in results[twin]["error"]["message"]
    assert_rotated(stack, first, "alice")


def test_duplicates_in_one_run_the_journals_owner_wins_even_when_listed_last(stack):
    owner = stack.add_pair("alice")
    assert code(only(stack.rotate(owner))) == ("rotated", "")
    twin = stack.add_record("alice", title="a second record for alice")
    results = by_uid(stack.rotate(twin, owner, bind=True))
    assert code(results[owner]) == ("rotated", "")
    assert code(results[twin]) == ("skipped", "duplicate_user")
    assert_rotated(stack, owner, "alice", previous=stack.keeper_password(twin))


# --- the recovery schedule and journal-vouched records ---------------------------------------------------------------


class CallCounter:
    """Counts every AWS call the function's boto3 clients make (botocore's before-call event)."""

    def __init__(self) -> None:
        boto3.setup_default_session()
        self.calls: Counter[str] = Counter()
        events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
        events.register("before-call", self._count, unique_id="call-counter")

    def _count(self, model, **_: object) -> None:
        self.calls[f"{model.service_model.service_name}:{model.name}"] += 1


def crash_after_update_login_profile(stack, uid: str, bind: bool = False) -> None:
    after_aws_call("iam", "UpdateLoginProfile", SimulatedCrash())
    with pytest.raises(SimulatedCrash):
        stack.rotate(uid, bind=bind)
    boto3.setup_default_session()  # the process died; the next run starts clean


def test_an_idle_recovery_run_calls_neither_iam_nor_keeper(stack):
    stack.add_pair("alice")
    counter = CallCounter()
    stack.keeper.vault.reset_calls()
    assert stack.invoke({"action": "recover"})["results"] == []
    assert stack.keeper.vault.calls == Counter()
    assert set(counter.calls) == {"dynamodb:Scan"}


def test_the_recovery_schedule_finishes_a_crashed_rotation(stack, monkeypatch):
    monkeypatch.setenv("JOURNAL_LEASE_MARGIN_SECONDS", "0")
    stack.remaining_ms = 0
    uid = stack.add_pair("alice", bound=False)  # unbound, outside any declared folder: vouched by its journal entry
    crash_after_update_login_profile(stack, uid, bind=True)
    assert stack.iam_password("alice") != stack.keeper_password(uid)
    result = only(stack.invoke({"action": "recover"})["results"])
    assert (result["status"], result.get("recovered")) == ("rotated", True)
    assert_converged(stack, uid, "alice")
    assert stack.invoke({"action": "recover"})["results"] == []


def test_the_recovery_schedule_leaves_a_live_rotation_alone(stack):
    uid = stack.add_pair("alice")
    crash_after_update_login_profile(stack, uid)  # the lease is still live: as if that run were still going
    stack.keeper.vault.reset_calls()
    assert stack.invoke({"action": "recover"})["results"] == []
    assert stack.keeper.vault.calls == Counter()
    assert len(open_entries()) == 1


def test_the_main_schedule_recovers_an_unbound_record_it_would_not_rotate(stack, monkeypatch):
    monkeypatch.setenv("JOURNAL_LEASE_MARGIN_SECONDS", "0")
    stack.remaining_ms = 0
    uid = stack.add_pair("alice", bound=False)
    crash_after_update_login_profile(stack, uid, bind=True)
    result = scheduled(stack)[uid]
    assert (result["status"], result.get("recovered")) == ("rotated", True)
    assert_converged(stack, uid, "alice")


# --- verification at scale: one ListUsers instead of a GetUser per record --------------------------------------------


def test_a_large_run_verifies_bindings_with_one_list_users(stack):
    uids = {f"user{i:02d}": stack.add_pair(f"user{i:02d}") for i in range(12)}
    moved = stack.add_record("ghost", dn=f"arn:aws:iam::{ACCOUNT}:user/old-path/user00", title="stale path")
    counter = CallCounter()
    results = scheduled(stack)
    assert counter.calls["iam:ListUsers"] == 1
    assert counter.calls["iam:GetUser"] == 0
    assert code(results[moved]) == ("skipped", "arn_mismatch")
    for name, uid in uids.items():
        assert_rotated(stack, uid, name)


class ScopeTagEnforced(CallCounter):
    """IAM's RequiredUserTagValue condition, which moto does not evaluate: GetUser, GetLoginProfile and
    UpdateLoginProfile on a user without the tag keeper-iam-rotator=managed are answered AccessDenied, as the
    function role's RotateConsolePasswordsInScope makes IAM answer them (ListUsers is granted on "*" and names users
    without their tags). Counts the calls that pass as CallCounter does, and the refused ones in `denied`."""

    def __init__(self, iam) -> None:
        super().__init__()
        self._iam = iam  # the test's own client (another session): its calls are neither counted nor checked
        self.denied: Counter[str] = Counter()
        events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
        for operation in ("GetUser", "GetLoginProfile", "UpdateLoginProfile"):
            events.register(f"before-call.iam.{operation}", self._deny_untagged, unique_id=f"scope-tag-{operation}")

    def _deny_untagged(self, model, params, **_: object) -> object:
        tags = self._iam.list_user_tags(UserName=params["body"]["UserName"])["Tags"]
        if SCOPE_TAG in tags:
            return None
        self.denied[f"iam:{model.name}"] += 1
        error = {"Code": "AccessDenied", "Message": "not authorized: no identity-based policy allows the action"}
        return _Http(403, {}), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}


@pytest.mark.parametrize("listed", [True, False], ids=["bound-with-list-users", "bound-with-get-user"])
def test_a_user_without_the_scope_tag_is_refused_before_anything_changes_however_it_was_looked_up(stack, listed):
    """Issue 18 moved the queue's and small runs' lookups to ListUsers, which carries no tags: the tag is still
    checked by IAM, on step 2's GetLoginProfile, before the journal, IAM or Keeper is written."""
    untagged = stack.iam.create_user(UserName="carol")["User"]["Arn"]
    stack.iam.create_login_profile(UserName="carol", Password=INITIAL_PASSWORD)
    carol = stack.add_record("carol", dn=untagged)
    tagged = {name: stack.add_pair(name) for name in ("alice", "bob")} if listed else {}
    counter = ScopeTagEnforced(stack.iam)
    results = by_uid(stack.rotate(carol, *tagged.values()))
    assert (counter.calls["iam:ListUsers"], counter.calls["iam:GetUser"]) == ((1, 0) if listed else (0, 0))
    assert counter.denied == {"iam:GetLoginProfile" if listed else "iam:GetUser": 1}
    assert code(results[carol]) == ("skipped", "iam_access_denied")
    assert counter.calls["iam:UpdateLoginProfile"] == len(tagged)
    assert_unchanged(stack, carol, "carol")
    assert [item["userArn"]["S"] for item in stack.journal_items() if item["userArn"]["S"] == untagged] == []
    for name, uid in tagged.items():
        assert_rotated(stack, uid, name)


# --- the duplicate rule when the journal's owner is not part of the run (found by mutation testing) ---------------


def repoint(keeper, uid: str, login: str, dn: str) -> None:
    """An admin edits a record in Keeper."""
    from keeper_secrets_manager_core import SecretsManager
    from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

    sdk = SecretsManager(config=InMemoryKeyValueStorage(keeper.client_config()))
    record = sdk.get_secrets([uid])[0]
    record.set_standard_field_value("login", login)
    record.set_standard_field_value("distinguishedName", dn)
    sdk.save(record)


@pytest.mark.parametrize("owner_still_names", [True, False])
def test_two_new_claims_in_one_run_against_an_owner_outside_it(stack, keeper, owner_still_names):
    """The journal's owner keeps the user while it names it, even when the run does not list it; once it names
    another user, the first claimant of the run takes the user and the second is refused."""
    owner = stack.add_pair("alice")
    assert only(stack.rotate(owner))["status"] == "rotated"
    twins = [stack.add_record("alice", title=f"twin {i}") for i in (1, 2)]
    if not owner_still_names:
        stack.add_user("bob")
        repoint(keeper, owner, "bob", "")
    results = by_uid(stack.rotate(*twins, bind=True))
    if owner_still_names:
        assert [code(results[t]) for t in twins] == [("skipped", "duplicate_user")] * 2
        assert all(owner in results[t]["error"]["message"] for t in twins)
    else:
        assert [code(results[t]) for t in twins] == [("rotated", ""), ("skipped", "duplicate_user")]
        assert twins[0] in results[twins[1]]["error"]["message"]


def test_an_owner_naming_the_user_by_arn_keeps_it_whatever_its_login(stack, keeper):
    """distinguishedName is what names the user; the login of a bound record is not compared."""
    owner = stack.add_pair("alice")
    assert only(stack.rotate(owner))["status"] == "rotated"
    repoint(keeper, owner, "alice-admin", stack.iam.get_user(UserName="alice")["User"]["Arn"])
    twin = stack.add_record("alice", title="a second record for alice")
    before = stack.iam_password("alice")
    assert code(only(stack.rotate(twin, bind=True))) == ("skipped", "duplicate_user")
    assert stack.iam_password("alice") == before == stack.keeper_password(owner)


def test_a_record_the_application_may_not_edit_is_skipped_before_any_call():
    from types import SimpleNamespace

    from keeper_iam_rotator.binding import Vouched, bind
    from keeper_iam_rotator.errors import RotationHaltedError
    from keeper_iam_rotator.keeper import PamUser

    record = SimpleNamespace(uid="ReadOnlyReadOnlyRead00", type="pamUser", is_editable=False)
    record.get_standard_field = lambda field_type: {"value": ["alice"]} if field_type == "login" else None
    with pytest.raises(RotationHaltedError) as halted:
        bind(PamUser(record), accounts=None, vouched=Vouched(explicit=True))  # no account is consulted
    assert (halted.value.status, halted.value.code) == ("skipped", "record_not_editable")


def test_a_record_of_another_type_names_no_iam_user_and_says_its_type():
    from types import SimpleNamespace

    from keeper_iam_rotator.binding import Vouched, bind, names_user
    from keeper_iam_rotator.errors import RotationHaltedError
    from keeper_iam_rotator.iam import IamUser
    from keeper_iam_rotator.keeper import PamUser

    def record(record_type: str) -> PamUser:
        fields = {"login": ["alice"], "distinguishedName": [f"arn:aws:iam::{ACCOUNT}:user/alice"]}
        found = SimpleNamespace(uid="OtherTypeOtherTypeOt00", type=record_type, is_editable=True)
        found.get_standard_field = lambda field_type: {"value": fields[field_type]} if field_type in fields else None
        return PamUser(found)

    alice = IamUser(name="alice", arn=f"arn:aws:iam::{ACCOUNT}:user/alice")
    assert names_user(record("pamUser"), alice)
    assert not names_user(record("login"), alice)  # a login record with the same fields claims nobody
    with pytest.raises(RotationHaltedError, match="record type is 'unknown', not 'pamUser'"):
        bind(record(""), accounts=None, vouched=Vouched(explicit=True))
