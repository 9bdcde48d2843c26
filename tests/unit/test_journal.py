"""The journal's guarantees that the protocol builds on, against moto's DynamoDB and KMS."""

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from keeper_iam_rotator.errors import (
    JournalTamperedError,
    JournalUnavailableError,
    LeaseHeldError,
    NotDueError,
    OwnedElsewhereError,
)
from keeper_iam_rotator.integrity import Verdict
from keeper_iam_rotator.journal import Entry, Journal
from keeper_iam_rotator.sealing import Sealer
from keeper_iam_rotator.sensitive import Secret

ARN = "arn:aws:iam::123456789012:user/alice"


def mac_key(kms) -> str:
    spec = {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}
    return kms.create_key(Description="journal MAC", **spec)["KeyMetadata"]["KeyId"]


@pytest.fixture
def journal(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        ddb, kms = boto3.client("dynamodb"), boto3.client("kms")
        ddb.create_table(
            TableName="journal",
            KeySchema=[{"AttributeName": "userArn", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "userArn", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        clock: dict = {"now": 1000.0}
        key, mac = kms.create_key()["KeyMetadata"]["KeyId"], mac_key(kms)
        clock["keys"] = (key, mac)  # for a second Journal on the same table (another invocation's view)
        yield Journal(ddb, kms, "journal", key, mac, clock=lambda: clock["now"]), clock


def test_password_is_stored_only_encrypted_and_comes_back(journal):
    j, _ = journal
    entry = j.open(ARN, "rec", Secret("S3cret-Value!"), owner="run-1", lease_seconds=60)
    item = boto3.client("dynamodb").get_item(TableName="journal", Key={"userArn": {"S": ARN}})["Item"]
    assert all(b"S3cret-Value!" not in value["B"] for name, value in item.items() if "B" in value)
    assert [p.reveal() for p in j.passwords(entry)] == ["S3cret-Value!"]


def test_ciphertext_is_bound_to_its_user_and_record(journal):
    j, _ = journal
    entry = j.open(ARN, "rec", Secret("S3cret-Value!"), owner="run-1", lease_seconds=60)
    entry.record_uid = "another-record"
    with pytest.raises(JournalUnavailableError, match="do not decrypt for this user and record"):
        j.passwords(entry)


def test_one_lease_per_user_until_it_expires(journal):
    j, clock = journal
    entry = j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60)
    with pytest.raises(LeaseHeldError):
        j.open(ARN, "rec", Secret("b"), owner="run-2", lease_seconds=60)
    with pytest.raises(LeaseHeldError):
        j.take_over(j.find(ARN), owner="run-2", lease_seconds=60)
    clock["now"] += 61
    claimed = j.take_over(j.find(ARN), owner="run-2", lease_seconds=60)
    with pytest.raises(LeaseHeldError):  # the dead run, if it wakes up, may no longer write
        j.replace_passwords(entry, [Secret("a"), Secret("d")])
    j.close(claimed)
    assert j.find(ARN) is None
    assert list(j.open_entries()) == []
    j.open(ARN, "rec", Secret("c"), owner="run-3", lease_seconds=60)  # closed entries do not block


def test_closed_entry_keeps_no_secret_and_expires(journal):
    j, _ = journal
    j.close(j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60))
    item = boto3.client("dynamodb").get_item(TableName="journal", Key={"userArn": {"S": ARN}})["Item"]
    assert "secret" not in item and int(item["expiresAt"]["N"]) > 1000


def kms_calls(kms) -> dict[str, int]:
    """Counts of the KMS operations this client really sends (moto answers them)."""
    counts: dict[str, int] = {}

    def count(model, **_):
        counts[model.name] = counts.get(model.name, 0) + 1

    kms.meta.events.register("after-call.kms", count)
    return counts


def test_one_data_key_and_one_mac_key_per_invocation_and_one_decrypt_per_data_key_on_recovery(journal):
    ddb, kms = boto3.client("dynamodb"), boto3.client("kms")
    key, mac = kms.create_key()["KeyMetadata"]["KeyId"], mac_key(kms)
    writing = Journal(ddb, kms, "journal", key, mac)
    writes = kms_calls(kms)
    for name in ("alice", "bob", "carol"):
        writing.open(f"{ARN[:-5]}{name}", "rec-" + name, Secret(f"{name}-Pw1!"), owner="run-1", lease_seconds=60)
    assert writes == {"GenerateDataKey": 1, "GenerateMac": 1}

    later_kms = boto3.client("kms")
    recovering = Journal(ddb, later_kms, "journal", key, mac)  # a later invocation
    reads = kms_calls(later_kms)
    found = sorted((e.user_arn, [p.reveal() for p in recovering.passwords(e)]) for e in recovering.open_entries())
    assert [pw for _, pw in found] == [["alice-Pw1!"], ["bob-Pw1!"], ["carol-Pw1!"]]
    assert reads == {"Decrypt": 1, "GenerateMac": 1}  # every item of the Scan verified with one derived key


def test_an_entry_in_the_earlier_format_is_unreadable_and_stays_open(journal):
    j, _ = journal
    boto3.client("dynamodb").put_item(
        TableName="journal",
        Item={
            "userArn": {"S": ARN},
            "recordUid": {"S": "rec"},
            "state": {"S": "pending"},
            "owner": {"S": "old-run"},
            "leaseUntil": {"N": "0"},
            "secret": {"B": b"a KMS ciphertext"},
        },
    )
    entry = j.find(ARN)
    with pytest.raises(JournalUnavailableError, match="no sealed passwords"):
        j.passwords(entry)
    assert j.find(ARN) is not None


class Failing:
    """The journal's DynamoDB client, except that `operation` fails the way DynamoDB fails."""

    def __init__(self, client, operation: str) -> None:
        self._client, self._operation = client, operation

    def __getattr__(self, name):
        if name == self._operation:

            def fail(*_, **__):
                raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, name)

            return fail
        return getattr(self._client, name)


# --- integrity: whoever can write the table cannot steer the rotator with it -----------------------------------------


def item() -> dict:
    return boto3.client("dynamodb").get_item(TableName="journal", Key={"userArn": {"S": ARN}})["Item"]


def put(changed: dict) -> None:
    boto3.client("dynamodb").put_item(TableName="journal", Item=changed)


@pytest.mark.parametrize(
    "change",
    [
        {"recordUid": {"S": "attacker"}},
        {"rotatedAt": {"N": "99999999999"}},
        {"state": {"S": "pending"}},
        {"leaseUntil": {"N": "99999999999"}},
        {"mac": {"B": b"\0" * 32}},
    ],
)
def test_a_changed_item_is_tampered_and_never_used(journal, change):
    j, _ = journal
    j.close(j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60), rotated=True)
    assert [e.integrity for e in j.entries()] == [Verdict.VERIFIED]
    put(item() | change)
    assert [e.integrity for e in j.entries()] == [Verdict.TAMPERED]
    uses = [
        lambda: j.owner_of(ARN),  # the duplicate rule
        lambda: j.find(ARN),  # recovery
        lambda: j.open(ARN, "attacker", Secret("b"), "run-2", 60),  # taking the user over
        lambda: j.open(ARN, "rec", Secret("b"), "run-2", 60, rotated_before=500.0),  # the schedule's "not due"
    ]
    for use in uses:
        with pytest.raises(JournalTamperedError):
            use()


def test_the_owner_the_mac_names_still_rotates_on_request_and_its_write_replaces_the_forged_item(journal):
    j, _ = journal
    j.close(j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60), rotated=True)
    put(item() | {"recordUid": {"S": "attacker"}, "rotatedAt": {"N": "99999999999"}})
    assert j.open(ARN, "rec", Secret("b"), "run-2", 60).previous_owner == "rec"
    assert [e.integrity for e in j.entries()] == [Verdict.VERIFIED]


def test_an_unsigned_closed_item_counts_as_absent_and_is_re_signed(journal):
    j, _ = journal
    j.close(j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60), rotated=True)
    stripped = {name: value for name, value in item().items() if name not in ("mac", "ownerMac")}
    put(stripped | {"recordUid": {"S": "attacker"}, "rotatedAt": {"N": "99999999999"}})
    assert [e.integrity for e in j.entries()] == [Verdict.UNSIGNED]
    assert j.owner_of(ARN) is None  # neither its owner ...
    entry = j.open(ARN, "rec", Secret("b"), owner="run-2", lease_seconds=60, rotated_before=2000.0)  # ... nor its due
    assert entry.previous_owner is None  # a first binding (BindingChanged)
    assert [e.integrity for e in j.entries()] == [Verdict.VERIFIED]


def test_ownership_and_due_are_decided_inside_the_conditional_write(journal):
    j, _ = journal
    j.close(j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60), rotated=True)  # rotatedAt = 1000
    with pytest.raises(OwnedElsewhereError):
        j.open(ARN, "other", Secret("b"), owner="run-2", lease_seconds=60)
    with pytest.raises(NotDueError):
        j.open(ARN, "rec", Secret("b"), owner="run-2", lease_seconds=60, rotated_before=999.0)
    assert j.open(ARN, "rec", Secret("b"), "run-2", 60, rotated_before=1000.0).previous_owner == "rec"
    j.close(j.find(ARN) or pytest.fail("open"), rotated=True)
    with pytest.raises(OwnedElsewhereError):  # adopting needs the owner the journal really names
        j.open(ARN, "other", Secret("c"), owner="run-3", lease_seconds=60, adopt="someone-else")
    adopted = j.open(ARN, "other", Secret("c"), owner="run-3", lease_seconds=60, adopt="rec")
    assert adopted.previous_owner == "rec"


def test_sealed_passwords_open_only_under_the_journal_key(journal):
    j, _ = journal
    kms = boto3.client("kms")
    foreign = Sealer(kms, kms.create_key(Description="an attacker's key")["KeyMetadata"]["KeyId"])
    entry = j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60)
    entry.sealed = foreign.seal(ARN, "rec", [Secret("attacker-knows-this")])  # a forged entry under another key
    with pytest.raises(JournalUnavailableError, match="KMS Decrypt failed"):
        j.passwords(entry)


def test_a_closed_entry_expires_400_days_after_closing_and_an_open_one_never(journal):
    j, clock = journal
    entry = j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60)
    assert "expiresAt" not in item()
    clock["now"] = 5000.0
    j.close(entry)
    assert item()["expiresAt"] == {"N": str(5000 + 400 * 86400)}


def test_only_a_successful_rotation_records_its_time(journal):
    """`rotatedAt` is what due.py reads: an entry closed after a failed attempt leaves the record due."""
    j, clock = journal
    j.close(j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60))
    assert "rotatedAt" not in item()
    entry = j.open(ARN, "rec", Secret("b"), owner="run-2", lease_seconds=60)
    assert "rotatedAt" not in item()
    clock["now"] = 7000.0
    j.close(entry, rotated=True)
    assert item()["rotatedAt"] == {"N": "7000.000"}


def test_taking_over_a_dead_runs_entry_gives_a_fresh_lease(journal):
    j, clock = journal
    j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60)
    clock["now"] = 1061.0
    claimed = j.take_over(j.find(ARN), owner="run-2", lease_seconds=300)
    assert claimed.lease_until == 1361.0 and item()["leaseUntil"] == {"N": "1361.000"}
    clock["now"] = 1300.0
    with pytest.raises(LeaseHeldError):  # run-2 is alive: nobody may take it from it
        j.take_over(j.find(ARN), owner="run-3", lease_seconds=300)


@pytest.mark.parametrize(
    ("operation", "call"), [("get_item", "find"), ("put_item", "close"), ("get_paginator", "entries")]
)
def test_a_failing_table_is_journal_unavailable(journal, operation, call):
    j, clock = journal
    entry = j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60)
    failing = Journal(Failing(boto3.client("dynamodb"), operation), boto3.client("kms"), "journal", *clock["keys"])
    with pytest.raises(JournalUnavailableError, match="InternalServerError"):
        if call == "find":
            failing.find(ARN)
        elif call == "close":
            failing.close(entry)
        else:
            list(failing.entries())


def test_reads_are_consistent_and_an_entry_never_shows_its_ciphertext(journal):
    """moto is always consistent; DynamoDB is only when asked: a lease or history read eventually could be stale."""
    j, clock = journal
    entry = j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60)
    sent: list[tuple[str, bool]] = []
    ddb = boto3.client("dynamodb")
    for operation in ("GetItem", "Scan"):
        ddb.meta.events.register(
            f"before-parameter-build.dynamodb.{operation}",
            lambda params, model, **_: sent.append((model.name, params.get("ConsistentRead"))),
        )
    reader = Journal(ddb, boto3.client("kms"), "journal", *clock["keys"])
    reader.find(ARN)
    list(reader.entries())
    assert sent == [("GetItem", True), ("Scan", True)]
    assert "sealed" not in repr(entry) and "secret" not in repr(entry).lower()


def test_a_stale_copy_of_a_live_entry_cannot_take_it_over(journal):
    """The lease check that counts is DynamoDB's condition, not the caller's copy of the entry: a copy read before
    the lease was taken (or forged) says it expired; the table says it is live."""
    j, _ = journal
    live = j.open(ARN, "rec", Secret("a"), owner="run-1", lease_seconds=60)
    stale = Entry(live.user_arn, live.record_uid, live.state, live.owner, lease_until=0.0, sealed=live.sealed)
    with pytest.raises(LeaseHeldError):
        j.take_over(stale, owner="run-2", lease_seconds=60)
    assert j.find(ARN).owner == "run-1"


def test_a_user_last_rotated_from_another_record_is_opened_only_on_adoption(journal):
    """The journal remembers the record that last rotated a user; another record gets the user only when the caller
    decided (binding.rightful_owner) that it may adopt it."""
    j, _ = journal
    j.close(j.open(ARN, "first", Secret("a"), owner="run-1", lease_seconds=60), rotated=True)
    with pytest.raises(OwnedElsewhereError) as owned:
        j.open(ARN, "second", Secret("b"), owner="run-2", lease_seconds=60)
    assert owned.value.record_uid == "first"
    assert j.open(ARN, "second", Secret("b"), owner="run-2", lease_seconds=60, adopt="first").record_uid == "second"
